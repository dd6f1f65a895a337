#include "ops/trainer_ops.h"

namespace mghf {
namespace ops {

void register_trainer_ops(std::vector<OpInfo>& list) {
  register_conv2d_ops(list);
  register_pixel_shuffle_ops(list);
  register_activation_ops(list);
  register_loss_terms_ops(list);
  register_resize_ops(list);
  register_adam_ops(list);
}

}  // namespace ops
}  // namespace mghf
