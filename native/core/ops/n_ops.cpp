// SPEC §3 as an op: `mseTerm` (G, S [, dS] → n, dS), L_n = mean (S − G)² over
// every feature, with the sum_squared_difference the loss runs and its
// gradient scale·2(S − G)/(B·N·H·W) added into dS (or, attr overS, written over S:
// ops/deferred_gradient.h).
#include "loss.h"
#include "ops/deferred_gradient.h"
#include "ops/registry.h"

namespace mghf {
namespace ops {
namespace {

// inputs: G, S [B, N, H, W], dS (optional). attrs: scale (∂L/∂L_n), grad, overS (internal: the
// last term of the loss composition; ∂L/∂S written over S, whose buffer is the dS returned).
// outputs: n, dS (with grad).
Outputs mse_term(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "mseTerm";
  auto [G, S] = feature_pair(in, op);
  const int64_t count = G.count();
  const double scale = attrs.number("scale", 1);
  const bool grad = attrs.flag("grad", true);
  const double n = sum_squared_difference(S.f32.data(), G.f32.data(), count) / double(count);
  NumericContext ctx;
  ctx.gamma1 = scale;
  auto context = [&] { return ctx; };
  check_finite_value(n, NumericStage::N, "L_n", context);
  Outputs out;
  out.emplace_back("n", Value::number(n));
  if (over_s(attrs, grad)) {
    Attrs deferred;
    Attr k;
    k.number = scale;
    deferred.set("nScale", k);
    const Value& Gv = G;
    Value dS = take_s_for_gradient(in, 2, op);
    const DeferredGradient d(deferred, dS.dims);
    float* sp = dS.f32.mut();
    parallel_for(dS.dims[0] * dS.dims[1], [&](int64_t bk) { d.write(sp, Gv.f32.data(), bk, nullptr); });
    check_finite(dS.f32.data(), count, NumericStage::N, "the gradient ∂L/∂S", context);
    out.emplace_back("dS", std::move(dS));
  } else if (grad) {
    Value dS = gradient_accumulator(in, 2, S, op);
    const float k = n_gradient_scale<float>(scale, count);
    float* d = dS.f32.mut();
    const float* Sp = S.f32.data();
    const float* Gp = G.f32.data();
    detail::elementwise(count, [&](int64_t i) { d[i] += (Sp[i] - Gp[i]) * k; });
    check_finite(d, count, NumericStage::N, "its gradient", context);
    out.emplace_back("dS", std::move(dS));
  }
  return out;
}

}  // namespace

void register_n_ops(std::vector<OpInfo>& list) { list.push_back({"mseTerm", mse_term}); }

}  // namespace ops
}  // namespace mghf
