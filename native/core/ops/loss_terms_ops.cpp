// `l1` and `charbonnier` (x, y → loss, dx): the pixel losses of an SR
// trainer, mean over every element (nn/trainer_kernels.h).
#include "nn/trainer_kernels.h"
#include "ops/trainer_ops.h"

namespace mghf {
namespace ops {
namespace {

template <class Loss>
Outputs pixel_loss(std::vector<Value>& in, const Attrs& attrs, const std::string& op, Loss loss) {
  const Value& xv = input(in, 0, op, "x");
  Value& x = tensor_input(in, 0, op, "x", xv.dims.empty() ? 1 : xv.dims.size());
  Value& y = tensor_input(in, 1, op, "y", x.dims.size());
  same_dims(x, y, op, "x", "y");
  const bool grad = attrs.flag("grad", true);
  Value dx;
  if (grad) dx = Value::tensor(x.dims);
  const double value = loss(x.count(), x.f32.data(), y.f32.data(), grad ? dx.f32.mut() : nullptr);
  Outputs out;
  out.emplace_back("loss", Value::number(value));
  if (grad) out.emplace_back("dx", std::move(dx));
  return out;
}

// attrs: grad. outputs: loss = mean |x − y|, dx = sign(x − y)/count.
Outputs l1(std::vector<Value>& in, const Attrs& attrs) {
  return pixel_loss(in, attrs, "l1", nn::l1_loss);
}

// attrs: eps, grad. outputs: loss = mean sqrt((x − y)² + eps²), dx.
Outputs charbonnier(std::vector<Value>& in, const Attrs& attrs) {
  const double eps = attrs.number("eps", 1e-3);
  return pixel_loss(in, attrs, "charbonnier", [eps](int64_t n, const float* x, const float* y, float* dx) {
    return nn::charbonnier_loss(n, eps, x, y, dx);
  });
}

}  // namespace

void register_loss_terms_ops(std::vector<OpInfo>& list) {
  list.push_back({"l1", l1});
  list.push_back({"charbonnier", charbonnier});
}

}  // namespace ops
}  // namespace mghf
