#include <cstring>
#include <memory>

#include "backend.h"
#include "kernels_fast.h"
#include "ops/loss_ops.h"

namespace mghf {
namespace {

ops::Value host_tensor(const float* x, const Shape& s) {
  ops::Value v;
  v.kind = ops::Kind::F32;
  v.dims = {s.B, s.C, s.H, s.W};
  v.f32 = ops::F32Data::view(x, size_t(s.size()));  // read in place: the caller keeps x alive
  return v;
}

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  std::string isa() const override { return fast_kernels().isa; }
  int threads() const override { return num_threads(); }
  // The loss composed from the CPU ops (ops/loss_ops.h's compose_loss), the one composition of
  // the loss for every backend (issue 15 item 3). On host tensors it writes ∂L/∂S over S (the
  // ops' overS), so its peak is the fused loss's it replaced (bench/NOTES.md).
  LossResult<float> loss(const DfeWeights<float>& w, const float* sr, const float* gt,
                         const Shape& s, const LossOptions& opt) override {
    ops::Value weights;
    weights.kind = ops::Kind::Weights;
    // The caller keeps w alive for the call; the ops only read it.
    weights.weights = std::shared_ptr<const DfeWeights<float>>(&w, [](const DfeWeights<float>*) {});
    ops::ComposedLoss c = ops::compose_loss(host_tensor(sr, s), host_tensor(gt, s), weights, opt);
    LossResult<float> r = std::move(c.r);
    if (c.grad.kind == ops::Kind::F32) {
      const std::shared_ptr<Buffer<float>>& owner = c.grad.f32.shared();
      if (owner && owner.use_count() == 1 && owner->size() == size_t(s.size())) {
        r.grad = std::move(*owner);  // the op's output buffer itself: no copy
      } else {
        r.grad.resize(size_t(s.size()));
        if (s.size()) std::memcpy(r.grad.data(), c.grad.f32.data(), size_t(s.size()) * sizeof(float));
      }
    }
    return r;
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
