// SPEC §6 as an op: `monce` (alias `lip`; G, S [, dS] → lip, dS), the
// Sinkhorn-modulated PatchNCE over every map, the lip_loss the loss runs, its
// gradient added into the gradient so far (a copy, or the handed-over buffer), or (internal attr
// overS, the loss composition's last term) all of ∂L/∂S written over S (ops/deferred_gradient.h).
#include <functional>

#include "kernels_fast.h"
#include "lip.h"
#include "numeric_checks.h"
#include "ops/deferred_gradient.h"
#include "ops/registry.h"
#include "ops/term_args.h"

namespace mghf {
namespace ops {
namespace {

// inputs: G, S [B, N, H, W], dS (optional); internal, with overS: dKept [B, M, H, W] and
// selected (Int32 [B·M]), the CSC term's gradient of the kept maps (csc's keptGrad), both optional.
// attrs: patch, stride, pmax, tau, epsOt, Q, iters, sinkhornGrad, scale (∂L/∂L_lip), grad;
// internal: overS, nScale. outputs: lip, dS (with grad).
Outputs lip(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "lip";
  auto [G, S] = feature_pair(in, op);
  const int B = int(G.dims[0]), N = int(G.dims[1]), H = int(G.dims[2]), W = int(G.dims[3]);
  const LipArgs args = lip_args(attrs, H, W, op);
  const LipOptions& o = args.o;
  const double scale = args.scale;
  const bool grad = args.grad;
  const bool overS = over_s(attrs, grad), onto = grad && !overS && present(in, 2);
  const int64_t plane = int64_t(H) * W;
  Value dS;
  double value;
  if (overS) {
    // The last read of S: each map's ∂L/∂S is written over it once its LIP task is done, adding
    // the deferred L_n and CSC gradients (the fused loss's assemble step, the same bits).
    const float* Gp = G.f32.data();
    DeferredGradient d(attrs, S.dims);
    if (present(in, 3)) {
      Value& kept = tensor_input(in, 3, op, "dKept", 4);
      Value& sel = input(in, 4, op, "selected");
      const int M = int(kept.dims[1]);
      if (kept.dims[0] != B || M > N || kept.dims[2] != H || kept.dims[3] != W || sel.kind != Kind::I32 ||
          sel.i32.size() != size_t(B) * size_t(M))
        op_fail(op, "dKept must be [B, M, H, W] with selected B·M channel indices", "E_SHAPE");
      for (int32_t v : sel.i32)
        if (v < 0 || v >= N) op_fail(op, "selected holds a channel index out of range", "E_SHAPE");
      d.keep(kept.f32.data(), sel.i32.data(), B, M);
    }
    dS = take_s_for_gradient(in, 2, op);
    float* sp = dS.f32.mut();
    const std::function<void(int64_t, const float*)> assemble = [&](int64_t bk, const float* g) {
      d.write(sp, Gp, bk, g);
    };
    value = lip_loss<float, FastKernels>(Gp, sp, B, N, H, W, o, scale, nullptr, &assemble);
  } else if (onto) {
    dS = gradient_accumulator(in, 2, S, op);
    // Onto a gradient so far: each map's term gradient is formed alone, then added per element
    // (the fused loss's assemble step), so chaining the terms through addTo gives its bits.
    float* d = dS.f32.mut();
    const std::function<void(int64_t, const float*)> add = [d, plane](int64_t bk, const float* g) {
      float* dp = d + bk * plane;
      for (int64_t p = 0; p < plane; ++p) dp[p] += g[p];
    };
    value = lip_loss<float, FastKernels>(G.f32.data(), S.f32.data(), B, N, H, W, o, scale, nullptr, &add);
  } else {
    if (grad) dS = gradient_accumulator(in, 2, S, op);
    value = lip_loss<float, FastKernels>(G.f32.data(), S.f32.data(), B, N, H, W, o, scale,
                                         grad ? dS.f32.mut() : nullptr);
  }
  const NumericContext ctx = args.context();
  auto context = [&] { return ctx; };
  check_finite_value(value, NumericStage::Lip, "L_lip", context);
  if (grad) check_finite(dS.f32.data(), dS.count(), NumericStage::Lip, overS ? "the gradient ∂L/∂S" : "its gradient", context);
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
