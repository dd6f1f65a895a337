// SPEC §5 as an op: `csc` (G, S, selected, weights [, dS] → mse, corr, gram,
// csc, dS), the csc_loss the loss runs. dS (optional) is the gradient so far:
// the op adds scale·∂L_csc/∂S into a copy of it (or into zeros, the term's
// gradient alone). Internal attrs of the loss composition (ops/deferred_gradient.h): keptGrad
// returns the term's gradient of the kept maps alone (dKept), overS writes all of ∂L/∂S over S.
#include "csc.h"
#include "kernels_fast.h"
#include "numeric_checks.h"
#include "parallel.h"
#include "ops/deferred_gradient.h"
#include "ops/registry.h"
#include "ops/term_args.h"

namespace mghf {
namespace ops {
namespace {

// inputs: G, S [B, N, H, W], selected (Int32 [B·M]), weights (Float64 [B·M]), dS (optional).
// attrs: beta1, beta2, beta3 (a 0 skips its part, reported 0), scale (∂L/∂L_csc), grad; internal:
// keptGrad (the gradient of the kept maps alone, as dKept [B, M, H, W] in `selected`'s order,
// instead of dS), overS with nScale (the last term: ∂L/∂S written over S, the dS returned).
// outputs: mse, corr, gram, csc = β1·mse + β2·corr + β3·gram, dS or dKept (with grad).
Outputs csc(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "csc";
  auto [G, S] = feature_pair(in, op);
  const int B = int(G.dims[0]), N = int(G.dims[1]);
  const int64_t P = G.dims[2] * G.dims[3];
  const CscArgs args = csc_args(in, attrs, B, N, op);
  const int M = args.M;
  const bool grad = args.grad;
  const bool overS = over_s(attrs, grad), by_kept = grad && !overS && attrs.flag("keptGrad", false);
  const bool onto = grad && !overS && !by_kept && present(in, 4);
  const int* selp = args.selected;
  const CscWeights& cw = args.w;
  CscParts parts;
  Value dS, dKept;
  if (overS || by_kept || onto) {
    // The term's gradient of the kept maps formed alone (zeros, by kept map), then: returned as
    // is (keptGrad), added per element onto the gradient so far (onto; chaining the terms through
    // addTo gives the fused loss's bits), or assembled into ∂L/∂S over S (overS).
    dKept = Value::tensor({B, M, G.dims[2], G.dims[3]});
    dKept.f32.zero();
    parts = csc_loss<float, FastKernels>(G.f32.data(), S.f32.data(), B, N, P, M, selp, args.weights, cw,
                                         dKept.f32.mut(), /*by_kept=*/true);
    if (onto) {
      dS = gradient_accumulator(in, 4, S, op);
      float* d = dS.f32.mut();
      const float* kept = dKept.f32.data();
      parallel_for(int64_t(B) * M, [&](int64_t bi) {
        const int64_t b = bi / M;
        float* dp = d + (b * N + selp[bi]) * P;
        const float* kp = kept + bi * P;
        for (int64_t p = 0; p < P; ++p) dp[p] += kp[p];
      });
      dKept = Value();
    } else if (overS) {
      const Value& Gv = G;
      dS = take_s_for_gradient(in, 4, op);
      DeferredGradient d(attrs, dS.dims);
      d.keep(dKept.f32.data(), selp, B, M);
      float* sp = dS.f32.mut();
      parallel_for(int64_t(B) * N, [&](int64_t bk) { d.write(sp, Gv.f32.data(), bk, nullptr); });
      dKept = Value();
    }
  } else {
    if (grad) dS = gradient_accumulator(in, 4, S, op);
    parts = csc_loss<float, FastKernels>(G.f32.data(), S.f32.data(), B, N, P, M, selp, args.weights, cw,
                                         grad ? dS.f32.mut() : nullptr);
  }
  const CscParts reported = csc_reported(parts, args);
  const NumericContext ctx = args.context();
  auto context = [&] { return ctx; };
  if (by_kept) check_finite(dKept.f32.data(), dKept.count(), NumericStage::Csc, "its gradient", context);
  else if (grad) check_finite(dS.f32.data(), dS.count(), NumericStage::Csc, overS ? "the gradient ∂L/∂S" : "its gradient", context);
  if (by_kept) return csc_outputs(reported, args, std::move(dKept), "dKept");
  return csc_outputs(reported, args, std::move(dS));
}

}  // namespace

void register_csc_ops(std::vector<OpInfo>& list) { list.push_back({"csc", csc}); }

}  // namespace ops
}  // namespace mghf
