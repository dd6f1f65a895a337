// `relu`, `leakyRelu` (x → y), their backwards (x, dy → dx) and `add`
// (a, b → a + alpha·b), on nn/trainer_kernels.h.
#include "nn/trainer_kernels.h"
#include "ops/trainer_ops.h"

namespace mghf {
namespace ops {
namespace {

// A tensor of any rank 1…8 (elementwise ops do not care about the layout).
Value& any_tensor(std::vector<Value>& in, size_t i, const std::string& op, const char* name) {
  const Value& v = input(in, i, op, name);
  return tensor_input(in, i, op, name, v.dims.empty() ? 1 : v.dims.size());
}

Outputs one(const char* name, Value v) {
  Outputs out;
  out.emplace_back(name, std::move(v));
  return out;
}

Outputs activation(std::vector<Value>& in, const std::string& op, float slope) {
  Value& x = any_tensor(in, 0, op, "x");
  Value y = Value::tensor(x.dims);
  nn::leaky_relu(x.count(), slope, x.f32.data(), y.f32.mut());
  return one("y", std::move(y));
}

Outputs activation_backward(std::vector<Value>& in, const std::string& op, float slope) {
  Value& x = any_tensor(in, 0, op, "x");
  Value& dy = any_tensor(in, 1, op, "dy");
  same_dims(x, dy, op, "x", "dy");
  Value dx = Value::tensor(x.dims);
  nn::leaky_relu_backward(x.count(), slope, x.f32.data(), dy.f32.data(), dx.f32.mut());
  return one("dx", std::move(dx));
}

// inputs: x. outputs: y.
Outputs relu(std::vector<Value>& in, const Attrs&) { return activation(in, "relu", 0.f); }
// inputs: x, dy. outputs: dx.
Outputs relu_backward(std::vector<Value>& in, const Attrs&) {
  return activation_backward(in, "reluBackward", 0.f);
}
// attrs: slope.
Outputs leaky_relu(std::vector<Value>& in, const Attrs& attrs) {
  return activation(in, "leakyRelu", float(attrs.number("slope", 0.01)));
}
Outputs leaky_relu_backward(std::vector<Value>& in, const Attrs& attrs) {
  return activation_backward(in, "leakyReluBackward", float(attrs.number("slope", 0.01)));
}

// inputs: a, b (same dims). attrs: alpha. outputs: y = a + alpha·b.
Outputs add(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "add";
  Value& a = any_tensor(in, 0, op, "a");
  Value& b = any_tensor(in, 1, op, "b");
  same_dims(a, b, op, "a", "b");
  Value y = Value::tensor(a.dims);
  nn::add_scaled(a.count(), float(attrs.number("alpha", 1)), a.f32.data(), b.f32.data(), y.f32.mut());
  return one("y", std::move(y));
}

}  // namespace

void register_activation_ops(std::vector<OpInfo>& list) {
  list.push_back({"relu", relu});
  list.push_back({"reluBackward", relu_backward});
  list.push_back({"leakyRelu", leaky_relu});
  list.push_back({"leakyReluBackward", leaky_relu_backward});
  list.push_back({"add", add});
}

}  // namespace ops
}  // namespace mghf
