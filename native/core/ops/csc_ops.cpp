// SPEC §5 as an op: `csc` (G, S, selected, weights [, dS] → mse, corr, gram,
// csc, dS), the csc_loss the loss runs. dS (optional) is the gradient so far:
// the op adds scale·∂L_csc/∂S into a copy of it (or into zeros, the term's
// gradient alone, as mghf_loss computes it before assembling ∂L/∂S).
#include "csc.h"
#include "kernels_fast.h"
#include "numeric_checks.h"
#include "parallel.h"
#include "ops/registry.h"
#include "ops/term_args.h"

namespace mghf {
namespace ops {
namespace {

// inputs: G, S [B, N, H, W], selected (Int32 [B·M]), weights (Float64 [B·M]), dS (optional).
// attrs: beta1, beta2, beta3 (a 0 skips its part, reported 0), scale (∂L/∂L_csc), grad.
// outputs: mse, corr, gram, csc = β1·mse + β2·corr + β3·gram, dS (with grad).
Outputs csc(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "csc";
  auto [G, S] = feature_pair(in, op);
  const int B = int(G.dims[0]), N = int(G.dims[1]);
  const int64_t P = G.dims[2] * G.dims[3];
  const CscArgs args = csc_args(in, attrs, B, N, op);
  const int M = args.M;
  const bool grad = args.grad;
  const bool onto = grad && present(in, 4);
  Value dS;
  if (grad) dS = gradient_accumulator(in, 4, S, op);
  const int* selp = args.selected;
  const CscWeights& cw = args.w;
  CscParts parts;
  if (onto) {
    // Onto a gradient so far: the term's gradient of the kept maps formed alone (zeros, by kept
    // map, as mghf_loss forms it), then added per element, so chaining the terms through addTo
    // gives mghf_loss's bits.
    Buffer<float> kept(size_t(B) * M * size_t(P));
    kept.zero();
    parts = csc_loss<float, FastKernels>(G.f32.data(), S.f32.data(), B, N, P, M, selp, args.weights, cw,
                                         kept.data(), /*by_kept=*/true);
    float* d = dS.f32.mut();
    parallel_for(int64_t(B) * M, [&](int64_t bi) {
      const int64_t b = bi / M;
      float* dp = d + (b * N + selp[bi]) * P;
      const float* kp = kept.data() + bi * P;
      for (int64_t p = 0; p < P; ++p) dp[p] += kp[p];
    });
  } else {
    parts = csc_loss<float, FastKernels>(G.f32.data(), S.f32.data(), B, N, P, M, selp, args.weights, cw,
                                         grad ? dS.f32.mut() : nullptr);
  }
  const CscParts reported = csc_reported(parts, args);
  if (grad) {
    const NumericContext ctx = args.context();
    check_finite(dS.f32.data(), dS.count(), NumericStage::Csc, "its gradient", [&] { return ctx; });
  }
  return csc_outputs(reported, args, std::move(dS));
}

}  // namespace

void register_csc_ops(std::vector<OpInfo>& list) { list.push_back({"csc", csc}); }

}  // namespace ops
}  // namespace mghf
