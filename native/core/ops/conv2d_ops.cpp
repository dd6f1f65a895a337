// `conv2d` (x, w [, b] → y) and `conv2dBackward` (x, w, dy → dx, dw, db) on
// nn/conv2d.h's fast path (im2col + the per-ISA GEMM).
#include "nn/conv2d.h"
#include "ops/trainer_ops.h"

namespace mghf {
namespace ops {

// The shape of a convolution of x [B,Ci,H,W] by w [Co,Ci/groups,k,k] with
// the attrs stride, padding, groups; E_SHAPE / E_OPTION for what cannot run.
nn::Conv2dShape conv2d_shape(const std::vector<int64_t>& x, const std::vector<int64_t>& w, const Attrs& attrs,
                             const std::string& op) {
  nn::Conv2dShape s;
  s.B = int(x[0]);
  s.Ci = int(x[1]);
  s.H = int(x[2]);
  s.W = int(x[3]);
  s.Co = int(w[0]);
  s.k = int(w[2]);
  s.stride = attrs.integer("stride", 1, 1, 2);
  s.groups = attrs.integer("groups", 1, 1, 1 << 24);
  const std::string padding = attrs.text("padding", "zero");
  if (padding != "zero" && padding != "reflect")
    op_fail(op, "padding must be 'zero' or 'reflect'", "E_OPTION");
  s.reflect = padding == "reflect";
  if (w[3] != s.k || s.k % 2 == 0) op_fail(op, "w must be [Co, Ci/groups, k, k] with k odd", "E_SHAPE");
  if (s.Ci % s.groups || s.Co % s.groups || w[1] != s.Ci / s.groups)
    op_fail(op, "groups must divide Ci and Co, and w.dims[1] must be Ci/groups", "E_SHAPE");
  if (s.reflect && (s.pad() >= s.H || s.pad() >= s.W))
    op_fail(op, "reflect padding needs H and W greater than (k−1)/2", "E_TOO_SMALL");
  return s;
}

namespace {

nn::Conv2dShape conv_shape(const Value& x, const Value& w, const Attrs& attrs, const std::string& op) {
  return conv2d_shape(x.dims, w.dims, attrs, op);
}

// inputs: x [B,Ci,H,W], w [Co,Ci/groups,k,k], b [Co] (optional). attrs: stride, padding, groups.
Outputs conv2d(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "conv2d";
  Value& x = tensor_input(in, 0, op, "x", 4);
  Value& w = tensor_input(in, 1, op, "w", 4);
  const nn::Conv2dShape s = conv_shape(x, w, attrs, op);
  const float* b = nullptr;
  if (present(in, 2)) {
    Value& bv = tensor_input(in, 2, op, "b", 1);
    if (bv.dims[0] != s.Co) op_fail(op, "b must be [Co]", "E_SHAPE");
    b = bv.f32.data();
  }
  Value y = Value::tensor({s.B, s.Co, s.Ho(), s.Wo()});
  nn::conv2d_fast(s, x.f32.data(), w.f32.data(), b, y.f32.mut());
  Outputs out;
  out.emplace_back("y", std::move(y));
  return out;
}

// inputs: x, w, dy [B,Co,Ho,Wo]. attrs: stride, padding, groups, bias, inputGrad, weightGrad.
// outputs: dx (inputGrad), dw (weightGrad), db (bias).
Outputs conv2d_backward(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "conv2dBackward";
  Value& x = tensor_input(in, 0, op, "x", 4);
  Value& w = tensor_input(in, 1, op, "w", 4);
  Value& dy = tensor_input(in, 2, op, "dy", 4);
  const nn::Conv2dShape s = conv_shape(x, w, attrs, op);
  if (dy.dims != std::vector<int64_t>{s.B, s.Co, s.Ho(), s.Wo()})
    op_fail(op, "dy must have the dims of conv2d's output", "E_SHAPE");
  const bool bias = attrs.flag("bias", true), input_grad = attrs.flag("inputGrad", true),
             weight_grad = attrs.flag("weightGrad", true);
  Value dx, dw, db;
  if (input_grad) dx = Value::tensor(x.dims);
  if (weight_grad) dw = Value::tensor(w.dims);
  if (bias) db = Value::tensor({s.Co});
  nn::conv2d_backward_fast(s, x.f32.data(), w.f32.data(), dy.f32.data(),
                           input_grad ? dx.f32.mut() : nullptr, weight_grad ? dw.f32.mut() : nullptr,
                           bias ? db.f32.mut() : nullptr);
  Outputs out;
  if (input_grad) out.emplace_back("dx", std::move(dx));
  if (weight_grad) out.emplace_back("dw", std::move(dw));
  if (bias) out.emplace_back("db", std::move(db));
  return out;
}

}  // namespace

void register_conv2d_ops(std::vector<OpInfo>& list) {
  list.push_back({"conv2d", conv2d});
  list.push_back({"conv2dBackward", conv2d_backward});
}

}  // namespace ops
}  // namespace mghf
