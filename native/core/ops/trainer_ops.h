// The trainer ops of issue 16, one group per file (conv2d_ops.cpp,
// pixel_shuffle_ops.cpp, activation_ops.cpp, loss_terms_ops.cpp,
// resize_ops.cpp, adam_ops.cpp), all registered by register_trainer_ops.
#pragma once
#include <vector>

#include "ops/registry.h"

namespace mghf {
namespace ops {

void register_conv2d_ops(std::vector<OpInfo>& list);
void register_pixel_shuffle_ops(std::vector<OpInfo>& list);
void register_activation_ops(std::vector<OpInfo>& list);
void register_loss_terms_ops(std::vector<OpInfo>& list);
void register_resize_ops(std::vector<OpInfo>& list);
void register_adam_ops(std::vector<OpInfo>& list);

}  // namespace ops
}  // namespace mghf
