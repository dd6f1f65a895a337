// `resize` (x → y) and `resizeBackward` (dy → dx): MATLAB-compatible bicubic
// (nn/resize.h) and its exact adjoint. lib/trainer-ops.ts turns { scale } or
// { size } into the output size and the per-axis scales.
#include "nn/resize.h"
#include "ops/trainer_ops.h"

namespace mghf {
namespace ops {

// attrs: scaleH, scaleW (> 0) and the sizes of the two sides.
ResizeAxes resize_axes(int inH, int inW, int outH, int outW, const Attrs& attrs, const std::string& op) {
  const double sh = attrs.number("scaleH", 0), sw = attrs.number("scaleW", 0);
  if (!(sh >= 1.0 / 1024 && sh <= 1024) || !(sw >= 1.0 / 1024 && sw <= 1024))
    op_fail(op, "scaleH and scaleW must be in [1/1024, 1024]", "E_OPTION");
  return {nn::resize_axis(inH, outH, sh), nn::resize_axis(inW, outW, sw)};
}

namespace {

// inputs: x [B,C,H,W]. attrs: outH, outW, scaleH, scaleW. outputs: y [B,C,outH,outW].
Outputs resize(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "resize";
  Value& x = tensor_input(in, 0, op, "x", 4);
  const int outH = attrs.integer("outH", 1, 1, 1 << 20), outW = attrs.integer("outW", 1, 1, 1 << 20);
  const ResizeAxes a = resize_axes(int(x.dims[2]), int(x.dims[3]), outH, outW, attrs, op);
  Value y = Value::tensor({x.dims[0], x.dims[1], outH, outW});
  nn::resize_forward(x.dims[0] * x.dims[1], a.h, a.w, x.f32.data(), y.f32.mut());
  Outputs out;
  out.emplace_back("y", std::move(y));
  return out;
}

// inputs: dy [B,C,outH,outW]. attrs: inH, inW, scaleH, scaleW. outputs: dx [B,C,inH,inW].
Outputs resize_backward(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "resizeBackward";
  Value& dy = tensor_input(in, 0, op, "dy", 4);
  const int inH = attrs.integer("inH", 1, 1, 1 << 20), inW = attrs.integer("inW", 1, 1, 1 << 20);
  const ResizeAxes a = resize_axes(inH, inW, int(dy.dims[2]), int(dy.dims[3]), attrs, op);
  Value dx = Value::tensor({dy.dims[0], dy.dims[1], inH, inW});
  nn::resize_adjoint(dy.dims[0] * dy.dims[1], a.h, a.w, dy.f32.data(), dx.f32.mut());
  Outputs out;
  out.emplace_back("dx", std::move(dx));
  return out;
}

}  // namespace

void register_resize_ops(std::vector<OpInfo>& list) {
  list.push_back({"resize", resize});
  list.push_back({"resizeBackward", resize_backward});
}

}  // namespace ops
}  // namespace mghf
