// One pretraining handle over either backend: the CPU Trainer (train.h) or a
// CudaTrainer (cuda/cuda_trainer.h). Both keep the same named state (the DFE,
// the head, adam.m.*, adam.v.*) and `steps`, so a checkpoint written from one
// restores into the other; only the bits of later steps may differ (different
// reduction orders), each backend being deterministic on its own.
//
// The binding holds one of these so that `device` is a choice made once, at
// creation, and nothing after it needs to know which backend runs.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "../cuda/cuda_trainer.h"
#include "train.h"

namespace mghf {

class AnyTrainer {
 public:
  // device < 0: the CPU Trainer; otherwise a CudaTrainer on that CUDA device
  // (E_UNSUPPORTED with the reason when CUDA is not usable there).
  AnyTrainer(int device, DfeWeights<float> dfe, HeadWeights<float> head, const TrainConfig& config) {
    if (device < 0)
      cpu_ = std::make_unique<Trainer>(std::move(dfe), std::move(head), config);
    else
      cuda_ = make_cuda_trainer(device, std::move(dfe), std::move(head), config);
  }

  // E_ABORTED, with the state untouched, when `cancel` is raised before the update.
  StepStats step(const float* x, const int* labels, int B, int H, int W,
                 const CancelFlag* cancel = nullptr) {
    return cpu_ ? cpu_->step(x, labels, B, H, W, cancel) : cuda_->step(x, labels, B, H, W, cancel);
  }
  StepStats evaluate(const float* x, const int* labels, int B, int H, int W,
                     const CancelFlag* cancel = nullptr) const {
    return cpu_ ? cpu_->evaluate(x, labels, B, H, W, cancel)
                : cuda_->evaluate(x, labels, B, H, W, cancel);
  }
  // Every parameter, then adam.m.*, then adam.v.*, by name; writes through
  // the buffers are what the next step uses (see cuda_trainer.h).
  void for_each_tensor(const std::function<void(const std::string&, Buffer<float>&)>& fn) {
    if (cpu_) cpu_->for_each_tensor(fn);
    else cuda_->for_each_tensor(fn);
  }

  int classes() const { return cpu_ ? cpu_->classes() : cuda_->classes(); }
  int64_t steps() const { return cpu_ ? cpu_->steps : cuda_->steps; }
  void set_steps(int64_t s) { (cpu_ ? cpu_->steps : cuda_->steps) = s; }
  double current_lr() const { return cpu_ ? cpu_->current_lr() : cuda_->current_lr(); }
  const PhaseTimes& last_times() const { return cpu_ ? cpu_->last_times : cuda_->last_times; }
  // -1 for the CPU, else the CUDA device index.
  int device() const { return cpu_ ? -1 : cuda_->device(); }

 private:
  std::unique_ptr<Trainer> cpu_;
  std::unique_ptr<CudaTrainer> cuda_;
};

}  // namespace mghf
