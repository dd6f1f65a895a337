// Pretraining on the GPU (SPEC §10): the CPU Trainer's interface (train/train.h)
// with the parameters, Adam's moments and the gradients held on the device.
// Free of CUDA headers, so the CPU-only build (cuda_stub.cpp) declares the
// same factory.
//
// A step runs the whole batch per launch on the trainer's own non-blocking
// stream: DFE forward keeping what the weight gradients need (dfe_train.h's
// tape, for every image at once), head forward, softmax cross-entropy, head
// backward, DFE backward with the weight gradients of cuda/train_kernels.h,
// then one Adam update over every parameter. Every reduction has a fixed
// order (no atomics): the same state and batch give the same bits.
//
// State access (tensor(), for_each_tensor(), dfe(), head()) downloads the
// state into host copies; after tensor() or for_each_tensor() those copies are
// what the next step() / evaluate() uploads first, so writing through them
// (restoring a checkpoint) works as with the CPU Trainer.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "../buffer.h"
#include "../dfe_weights.h"
#include "../train/classifier.h"
#include "../train/head_weights.h"
#include "../train/train.h"

namespace mghf {

class CudaTrainer {
 public:
  virtual ~CudaTrainer() = default;
  CudaTrainer(const CudaTrainer&) = delete;
  CudaTrainer& operator=(const CudaTrainer&) = delete;

  // As Trainer::step: forward, loss, backward, one Adam step at
  // scheduled_lr(config, steps), then ++steps. Throws E_NONFINITE, leaving the
  // state untouched, when the loss or a gradient is not finite, and E_ABORTED
  // when `cancel` is raised before the update (checked once the batch's
  // gradients are done: a step is one pass of whole-batch launches). x and
  // labels are host memory.
  virtual StepStats step(const float* x, const int* labels, int B, int H, int W,
                         const CancelFlag* cancel = nullptr) = 0;
  // Forward only, no update.
  virtual StepStats evaluate(const float* x, const int* labels, int B, int H, int W,
                             const CancelFlag* cancel = nullptr) const = 0;

  double current_lr() const { return scheduled_lr(config, steps); }

  // Every parameter (DFE then head), then adam.m.*, then adam.v.*, by name,
  // as host copies (see above).
  virtual void for_each_tensor(
      const std::function<void(const std::string&, Buffer<float>&)>& fn) = 0;
  virtual Buffer<float>* tensor(const std::string& name) = 0;

  // Host copies of the current parameters.
  virtual const DfeWeights<float>& dfe() const = 0;
  virtual const HeadWeights<float>& head() const = 0;
  virtual int classes() const = 0;
  virtual int device() const = 0;

  TrainConfig config;
  int64_t steps = 0;
  // Milliseconds per phase of the last step, from events on the stream
  // (dfe_forward, head_forward, head_backward, dfe_backward, adam).
  PhaseTimes last_times;

 protected:
  explicit CudaTrainer(const TrainConfig& c) : config(c) {}
};

// A trainer on `device`. Throws Error("E_UNSUPPORTED", reason) when
// cuda_status(device) says CUDA is unusable (in the CPU-only build: always),
// E_WEIGHTS when the head and the DFE disagree.
std::unique_ptr<CudaTrainer> make_cuda_trainer(int device, DfeWeights<float> dfe,
                                               HeadWeights<float> head, const TrainConfig& config);

}  // namespace mghf
