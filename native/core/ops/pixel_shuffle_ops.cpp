// `pixelShuffle` (x → y) and `pixelShuffleBackward` (dy → dx): PyTorch's
// pixel_shuffle and its inverse permutation (nn/trainer_kernels.h).
#include "nn/trainer_kernels.h"
#include "ops/trainer_ops.h"

namespace mghf {
namespace ops {
namespace {

// inputs: x [B, C·r², H, W]. attrs: factor r. outputs: y [B, C, H·r, W·r].
Outputs pixel_shuffle(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "pixelShuffle";
  Value& x = tensor_input(in, 0, op, "x", 4);
  const int r = attrs.integer("factor", 2, 1, 64);
  if (x.dims[1] % (r * r)) op_fail(op, "x's channels must be a multiple of factor²", "E_SHAPE");
  const int B = int(x.dims[0]), C = int(x.dims[1]) / (r * r), H = int(x.dims[2]), W = int(x.dims[3]);
  Value y = Value::tensor({B, C, int64_t(H) * r, int64_t(W) * r});
  nn::pixel_shuffle_copy(B, C, H, W, r, x.f32.data(), y.f32.mut(), false);
  Outputs out;
  out.emplace_back("y", std::move(y));
  return out;
}

// inputs: dy [B, C, H·r, W·r]. attrs: factor r. outputs: dx [B, C·r², H, W].
Outputs pixel_shuffle_backward(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "pixelShuffleBackward";
  Value& dy = tensor_input(in, 0, op, "dy", 4);
  const int r = attrs.integer("factor", 2, 1, 64);
  if (dy.dims[2] % r || dy.dims[3] % r) op_fail(op, "dy's H and W must be multiples of factor", "E_SHAPE");
  const int B = int(dy.dims[0]), C = int(dy.dims[1]), H = int(dy.dims[2]) / r, W = int(dy.dims[3]) / r;
  Value dx = Value::tensor({B, int64_t(C) * r * r, H, W});
  nn::pixel_shuffle_copy(B, C, H, W, r, dy.f32.data(), dx.f32.mut(), true);
  Outputs out;
  out.emplace_back("dx", std::move(dx));
  return out;
}

}  // namespace

void register_pixel_shuffle_ops(std::vector<OpInfo>& list) {
  list.push_back({"pixelShuffle", pixel_shuffle});
  list.push_back({"pixelShuffleBackward", pixel_shuffle_backward});
}

}  // namespace ops
}  // namespace mghf
