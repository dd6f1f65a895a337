// SPEC §6 as an op: `monce` (alias `lip`; G, S [, dS] → lip, dS), the
// Sinkhorn-modulated PatchNCE over every map, the lip_loss the loss runs, its
// gradient added into the gradient so far (a copy, or the handed-over buffer).
#include <functional>

#include "kernels_fast.h"
#include "lip.h"
#include "numeric_checks.h"
#include "ops/registry.h"
#include "ops/term_args.h"

namespace mghf {
namespace ops {
namespace {

// inputs: G, S [B, N, H, W], dS (optional). attrs: patch, stride, pmax, tau, epsOt, Q, iters,
// sinkhornGrad, scale (∂L/∂L_lip), grad. outputs: lip, dS (with grad).
Outputs lip(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "lip";
  auto [G, S] = feature_pair(in, op);
  const int B = int(G.dims[0]), N = int(G.dims[1]), H = int(G.dims[2]), W = int(G.dims[3]);
  const LipArgs args = lip_args(attrs, H, W, op);
  const LipOptions& o = args.o;
  const double scale = args.scale;
  const bool grad = args.grad;
  const bool onto = grad && present(in, 2);
  Value dS;
  if (grad) dS = gradient_accumulator(in, 2, S, op);
  double value;
  if (onto) {
    // Onto a gradient so far: each map's term gradient is formed alone, then added per element
    // (mghf_loss's assemble step), so chaining the terms through addTo gives its bits.
    float* d = dS.f32.mut();
    const int64_t plane = int64_t(H) * W;
    const std::function<void(int64_t, const float*)> add = [d, plane](int64_t bk, const float* g) {
      float* dp = d + bk * plane;
      for (int64_t p = 0; p < plane; ++p) dp[p] += g[p];
    };
    value = lip_loss<float, FastKernels>(G.f32.data(), S.f32.data(), B, N, H, W, o, scale, nullptr, &add);
  } else {
    value = lip_loss<float, FastKernels>(G.f32.data(), S.f32.data(), B, N, H, W, o, scale,
                                         grad ? dS.f32.mut() : nullptr);
  }
  const NumericContext ctx = args.context();
  auto context = [&] { return ctx; };
  check_finite_value(value, NumericStage::Lip, "L_lip", context);
  if (grad) check_finite(dS.f32.data(), dS.count(), NumericStage::Lip, "its gradient", context);
  Outputs out;
  out.emplace_back("lip", Value::number(value));
  if (grad) out.emplace_back("dS", std::move(dS));
  return out;
}

}  // namespace

void register_lip_ops(std::vector<OpInfo>& list) {
  list.push_back({"monce", lip});
  list.push_back({"lip", lip});  // the first slice's name, kept
}

}  // namespace ops
}  // namespace mghf
