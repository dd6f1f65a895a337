// Pretraining of the DFE (SPEC §10, the paper's Algorithm 1): DFE + classifier
// head trained with softmax cross-entropy and Adam, on the fast float kernels.
//
// State: the DFE weights (SPEC §9 names), the head (head.conv.{0,1,2}.weight
// [N,N,3,3], head.conv.{0,1,2}.bias [N], head.fc.weight [classes,N],
// head.fc.bias [classes]), Adam's moments of each (adam.m.<name>,
// adam.v.<name>) and `steps`. Saving these and constructing a Trainer from them
// resumes bit-identically: a step depends on nothing else, and every reduction
// has a fixed order.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "adam.h"
#include "buffer.h"
#include "classifier.h"
#include "dfe_weights.h"
#include "head_weights.h"

namespace mghf {

using TrainConfig = AdamConfig;

class Trainer {
 public:
  // Moments start at zero and steps at 0 (set them through tensor() and
  // `steps` to resume). Throws E_WEIGHTS when the head and the DFE disagree.
  Trainer(DfeWeights<float> dfe, HeadWeights<float> head, const TrainConfig& config);

  // Forward (x [B,3,H,W] in [0,1], normalised as SPEC §2), loss, backward, one
  // Adam step at scheduled_lr(config, steps), then ++steps. Returns the loss
  // and correct count of the forward (before the update). Throws E_NONFINITE,
  // leaving the state untouched, when the loss or a gradient is not finite,
  // and E_ABORTED, likewise, when `cancel` is raised before the update.
  StepStats step(const float* x, const int* labels, int B, int H, int W,
                 const CancelFlag* cancel = nullptr);

  // Forward only, no update.
  StepStats evaluate(const float* x, const int* labels, int B, int H, int W,
                     const CancelFlag* cancel = nullptr) const;

  // The rate the next step will use.
  double current_lr() const { return scheduled_lr(config, steps); }

  // Every parameter (DFE then head), then adam.m.*, then adam.v.*, by name.
  void for_each_tensor(const std::function<void(const std::string&, Buffer<float>&)>& fn);
  // The tensor of that name, or null.
  Buffer<float>* tensor(const std::string& name);

  const DfeWeights<float>& dfe() const { return w_; }
  const HeadWeights<float>& head() const { return head_; }
  int classes() const { return head_.classes; }

  TrainConfig config;
  int64_t steps = 0;
  // Milliseconds per phase of the last step (dfe_forward, head_forward,
  // head_backward, dfe_backward summed over its images; then adam).
  PhaseTimes last_times;

 private:
  void for_each_param(const std::function<void(const std::string&, Buffer<float>& p,
                                               Buffer<float>& m, Buffer<float>& v)>& fn);

  DfeWeights<float> w_, m_dfe_, v_dfe_;
  HeadWeights<float> head_, m_head_, v_head_;
  ClassifierGrads<double> grads_;
};

}  // namespace mghf
