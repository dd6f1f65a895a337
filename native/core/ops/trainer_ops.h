// The trainer ops of issue 16, one group per file (conv2d_ops.cpp,
// pixel_shuffle_ops.cpp, activation_ops.cpp, loss_terms_ops.cpp,
// resize_ops.cpp, adam_ops.cpp), all registered by register_trainer_ops.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/conv2d.h"
#include "nn/resize.h"
#include "ops/registry.h"
#include "train/adam.h"

namespace mghf {
namespace ops {

void register_conv2d_ops(std::vector<OpInfo>& list);
void register_pixel_shuffle_ops(std::vector<OpInfo>& list);
void register_activation_ops(std::vector<OpInfo>& list);
void register_loss_terms_ops(std::vector<OpInfo>& list);
void register_resize_ops(std::vector<OpInfo>& list);
void register_adam_ops(std::vector<OpInfo>& list);
// Their CUDA functions (cuda/trainer_ops_cuda.cu), called by register_cuda_ops in a CUDA build.
void register_cuda_trainer_ops(std::vector<OpInfo>& list);

// The attrs each group reads, shared by its CPU and CUDA functions so that both
// refuse the same calls with the same messages.
nn::Conv2dShape conv2d_shape(const std::vector<int64_t>& x, const std::vector<int64_t>& w, const Attrs& attrs,
                             const std::string& op);
struct ResizeAxes {
  nn::ResizeAxis h, w;
};
ResizeAxes resize_axes(int inH, int inW, int outH, int outW, const Attrs& attrs, const std::string& op);
AdamConfig adam_config(const Attrs& attrs, const std::string& op, int64_t* step);

}  // namespace ops
}  // namespace mghf
