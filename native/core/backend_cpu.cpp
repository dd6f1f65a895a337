#include "backend.h"
#include "kernels_fast.h"

namespace mghf {
namespace {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  std::string isa() const override { return fast_kernels().isa; }
  int threads() const override { return num_threads(); }
  LossResult<float> loss(const DfeWeights<float>& w, const float* sr, const float* gt,
                         const Shape& s, const LossOptions& opt) override {
    return mghf_loss<float, FastKernels>(w, sr, gt, s, opt);
  }
  void features(const DfeWeights<float>& w, const float* x, const Shape& s, InputRange range,
                float* F, const CancelFlag* cancel) override {
    dfe_forward<float, FastKernels>(w, x, s.B, s.H, s.W, range, F, nullptr, cancel);
    const int64_t n = int64_t(s.B) * w.arch.channels * s.H * s.W;
    check_finite(F, n, NumericStage::Features, "the features", [&] {
      NumericContext c;
      c.weights_hint = largest_weight_hint(w);
      return c;
    });
  }
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend b;
  return b;
}

}  // namespace mghf
