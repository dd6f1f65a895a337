// The op interface every backend implements: the CPU backend and the CUDA one.
#pragma once
#include <string>

#include "dfe_weights.h"
#include "loss.h"

namespace mghf {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Kernel flavour in use, e.g. "avx512".
  virtual std::string isa() const = 0;
  virtual int threads() const = 0;
  virtual LossResult<float> loss(const DfeWeights<float>& w, const float* sr, const float* gt,
                                 const Shape& s, const LossOptions& opt) = 0;
  // F [B, N, H, W] = DFE(x). E_NUMERIC when F is not finite; E_ABORTED when
  // `cancel` is raised meanwhile.
  virtual void features(const DfeWeights<float>& w, const float* x, const Shape& s,
                        InputRange range, float* F, const CancelFlag* cancel = nullptr) = 0;
};

Backend& cpu_backend();

}  // namespace mghf
