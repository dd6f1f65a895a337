// The trainer ops of issue 16 on CUDA tensors: each op's `cuda` function, on
// the launchers of trainer_ops.h (held to the CPU kernels by the ctest
// cuda_trainer_ops_parity). As ops_cuda.cu's: device inputs → new device
// outputs, never a silent copy, inputs never written, the call's own stream
// synchronised before return (a later op, download or free never races it),
// and what a failing call allocated is freed by its owners' destructors. The
// one exception is `adam`, which updates p, m and v in place on the device:
// the parameters stay the same device tensors, as an optimiser's step should.
// The attrs are read by the same helpers as the CPU functions (ops/trainer_ops.h).
#include <memory>
#include <string>
#include <vector>

#include "../ops/trainer_ops.h"
#include "cuda_op_support.h"
#include "trainer_ops.h"

namespace mghf {
namespace ops {
namespace {

using cuda::DeviceScope;

// device_input, with tensor_input's dim check: every dim in [1, 2²⁴], as on the CPU.
DeviceTensor& trainer_input(std::vector<Value>& in, size_t i, const std::string& op, const char* name,
                            size_t rank) {
  DeviceTensor& t = device_input(in, i, op, name, rank);
  if (t.dims().empty()) op_fail(op, std::string(name) + " must have at least 1 dim", "E_SHAPE");
  for (int64_t d : t.dims())
    if (d < 1 || d > (int64_t(1) << 24)) op_fail(op, std::string(name) + " has a bad dim", "E_SHAPE");
  return t;
}

Outputs one(const char* name, std::shared_ptr<DeviceTensor> t) {
  Outputs out;
  out.emplace_back(name, Value::on_device(std::move(t)));
  return out;
}

// ---------------------------------------------------------------- conv2d

// conv2d_ops.cpp's conv2d: inputs x [B,Ci,H,W], w [Co,Ci/groups,k,k], b [Co] (optional).
Outputs conv2d_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "conv2d";
  DeviceTensor& x = trainer_input(in, 0, op, "x", 4);
  DeviceTensor& w = trainer_input(in, 1, op, "w", 4);
  const nn::Conv2dShape s = conv2d_shape(x.dims(), w.dims(), attrs, op);
  DeviceTensor* b = nullptr;
  if (present(in, 2)) {
    b = &trainer_input(in, 2, op, "b", 1);
    if (b->dims()[0] != s.Co) op_fail(op, "b must be [Co]", "E_SHAPE");
  }
  require_cuda(x.device(), op);
  DeviceScope scope(x.device());
  auto y = new_tensor(x.device(), {s.B, s.Co, s.Ho(), s.Wo()});
  {
    Stream stream;
    cuda::conv2d_forward(s, x.data(), w.data(), b ? b->data() : nullptr, y->data(), stream);
    stream.sync();
  }
  return one("y", std::move(y));
}

// inputs: x, w, dy [B,Co,Ho,Wo]. attrs: stride, padding, groups, bias, inputGrad, weightGrad.
Outputs conv2d_backward_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "conv2dBackward";
  DeviceTensor& x = trainer_input(in, 0, op, "x", 4);
  DeviceTensor& w = trainer_input(in, 1, op, "w", 4);
  DeviceTensor& dy = trainer_input(in, 2, op, "dy", 4);
  const nn::Conv2dShape s = conv2d_shape(x.dims(), w.dims(), attrs, op);
  if (dy.dims() != std::vector<int64_t>{s.B, s.Co, s.Ho(), s.Wo()})
    op_fail(op, "dy must have the dims of conv2d's output", "E_SHAPE");
  const bool bias = attrs.flag("bias", true), input_grad = attrs.flag("inputGrad", true),
             weight_grad = attrs.flag("weightGrad", true);
  require_cuda(x.device(), op);
  DeviceScope scope(x.device());
  std::shared_ptr<DeviceTensor> dx, dw, db;
  if (input_grad) dx = new_tensor(x.device(), x.dims());
  if (weight_grad) dw = new_tensor(x.device(), w.dims());
  if (bias) db = new_tensor(x.device(), {s.Co});
  {
    Stream stream;
    cuda::conv2d_backward(s, x.data(), w.data(), dy.data(), dx ? dx->data() : nullptr,
                          dw ? dw->data() : nullptr, db ? db->data() : nullptr, stream);
    stream.sync();
  }
  Outputs out;
  if (dx) out.emplace_back("dx", Value::on_device(std::move(dx)));
  if (dw) out.emplace_back("dw", Value::on_device(std::move(dw)));
  if (db) out.emplace_back("db", Value::on_device(std::move(db)));
  return out;
}

// ---------------------------------------------------------------- pixel shuffle

// inputs: x [B, C·r², H, W]. attrs: factor r. outputs: y [B, C, H·r, W·r].
Outputs pixel_shuffle_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "pixelShuffle";
  DeviceTensor& x = trainer_input(in, 0, op, "x", 4);
  const int r = attrs.integer("factor", 2, 1, 64);
  if (x.dims()[1] % (r * r)) op_fail(op, "x's channels must be a multiple of factor²", "E_SHAPE");
  const int B = int(x.dims()[0]), C = int(x.dims()[1]) / (r * r), H = int(x.dims()[2]), W = int(x.dims()[3]);
  require_cuda(x.device(), op);
  DeviceScope scope(x.device());
  auto y = new_tensor(x.device(), {B, C, int64_t(H) * r, int64_t(W) * r});
  {
    Stream stream;
    cuda::pixel_shuffle(B, C, H, W, r, x.data(), y->data(), false, stream);
    stream.sync();
  }
  return one("y", std::move(y));
}

// inputs: dy [B, C, H·r, W·r]. attrs: factor r. outputs: dx [B, C·r², H, W].
Outputs pixel_shuffle_backward_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "pixelShuffleBackward";
  DeviceTensor& dy = trainer_input(in, 0, op, "dy", 4);
  const int r = attrs.integer("factor", 2, 1, 64);
  if (dy.dims()[2] % r || dy.dims()[3] % r) op_fail(op, "dy's H and W must be multiples of factor", "E_SHAPE");
  const int B = int(dy.dims()[0]), C = int(dy.dims()[1]), H = int(dy.dims()[2]) / r, W = int(dy.dims()[3]) / r;
  require_cuda(dy.device(), op);
  DeviceScope scope(dy.device());
  auto dx = new_tensor(dy.device(), {B, int64_t(C) * r * r, H, W});
  {
    Stream stream;
    cuda::pixel_shuffle(B, C, H, W, r, dy.data(), dx->data(), true, stream);
    stream.sync();
  }
  return one("dx", std::move(dx));
}

// ---------------------------------------------------------------- activations, add

Outputs activation_cuda(std::vector<Value>& in, const std::string& op, float slope) {
  DeviceTensor& x = trainer_input(in, 0, op, "x", 0);
  require_cuda(x.device(), op);
  DeviceScope scope(x.device());
  auto y = new_tensor(x.device(), x.dims());
  {
    Stream stream;
    cuda::leaky_relu(x.count(), slope, x.data(), y->data(), stream);
    stream.sync();
  }
  return one("y", std::move(y));
}

Outputs activation_backward_cuda(std::vector<Value>& in, const std::string& op, float slope) {
  DeviceTensor& x = trainer_input(in, 0, op, "x", 0);
  DeviceTensor& dy = trainer_input(in, 1, op, "dy", 0);
  same_dims(x, dy, op, "x", "dy");
  require_cuda(x.device(), op);
  DeviceScope scope(x.device());
  auto dx = new_tensor(x.device(), x.dims());
  {
    Stream stream;
    cuda::leaky_relu_backward(x.count(), slope, x.data(), dy.data(), dx->data(), stream);
    stream.sync();
  }
  return one("dx", std::move(dx));
}

Outputs relu_cuda(std::vector<Value>& in, const Attrs&) { return activation_cuda(in, "relu", 0.f); }
Outputs relu_backward_cuda(std::vector<Value>& in, const Attrs&) {
  return activation_backward_cuda(in, "reluBackward", 0.f);
}
Outputs leaky_relu_cuda(std::vector<Value>& in, const Attrs& attrs) {
  return activation_cuda(in, "leakyRelu", float(attrs.number("slope", 0.01)));
}
Outputs leaky_relu_backward_cuda(std::vector<Value>& in, const Attrs& attrs) {
  return activation_backward_cuda(in, "leakyReluBackward", float(attrs.number("slope", 0.01)));
}

// inputs: a, b (same dims). attrs: alpha. outputs: y = a + alpha·b.
Outputs add_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "add";
  DeviceTensor& a = trainer_input(in, 0, op, "a", 0);
  DeviceTensor& b = trainer_input(in, 1, op, "b", 0);
  same_dims(a, b, op, "a", "b");
  require_cuda(a.device(), op);
  DeviceScope scope(a.device());
  auto y = new_tensor(a.device(), a.dims());
  {
    Stream stream;
    cuda::add_scaled(a.count(), float(attrs.number("alpha", 1)), a.data(), b.data(), y->data(), stream);
    stream.sync();
  }
  return one("y", std::move(y));
}

// ---------------------------------------------------------------- l1, charbonnier

// loss_terms_ops.cpp's pixel losses: the mean summed on the device in double, then
// downloaded (a number, as on the CPU); dx a new device tensor. attrs: grad (and eps).
template <class Launch>
Outputs pixel_loss_cuda(std::vector<Value>& in, const Attrs& attrs, const std::string& op, Launch launch) {
  DeviceTensor& x = trainer_input(in, 0, op, "x", 0);
  DeviceTensor& y = trainer_input(in, 1, op, "y", x.dims().size());
  same_dims(x, y, op, "x", "y");
  const bool grad = attrs.flag("grad", true);
  require_cuda(x.device(), op);
  DeviceScope scope(x.device());
  std::shared_ptr<DeviceTensor> dx;
  if (grad) dx = new_tensor(x.device(), x.dims());
  double value = 0;
  {
    cuda::DeviceBuffer<double> loss(1);
    Stream stream;
    launch(x.count(), x.data(), y.data(), dx ? dx->data() : nullptr, loss.data(), stream);
    MGHF_CUDA_CHECK(cudaMemcpyAsync(&value, loss.data(), sizeof(double), cudaMemcpyDeviceToHost, stream));
    stream.sync();
  }
  Outputs out;
  out.emplace_back("loss", Value::number(value));
  if (dx) out.emplace_back("dx", Value::on_device(std::move(dx)));
  return out;
}

Outputs l1_cuda(std::vector<Value>& in, const Attrs& attrs) {
  return pixel_loss_cuda(in, attrs, "l1", [](int64_t n, const float* x, const float* y, float* dx, double* loss,
                                             cudaStream_t s) { cuda::l1_loss(n, x, y, dx, loss, s); });
}

Outputs charbonnier_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const double eps = attrs.number("eps", 1e-3);
  return pixel_loss_cuda(in, attrs, "charbonnier",
                         [eps](int64_t n, const float* x, const float* y, float* dx, double* loss, cudaStream_t s) {
                           cuda::charbonnier_loss(n, eps, x, y, dx, loss, s);
                         });
}

// ---------------------------------------------------------------- resize

// inputs: x [B,C,H,W]. attrs: outH, outW, scaleH, scaleW. outputs: y [B,C,outH,outW].
Outputs resize_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "resize";
  DeviceTensor& x = trainer_input(in, 0, op, "x", 4);
  const int outH = attrs.integer("outH", 1, 1, 1 << 20), outW = attrs.integer("outW", 1, 1, 1 << 20);
  const ResizeAxes a = resize_axes(int(x.dims()[2]), int(x.dims()[3]), outH, outW, attrs, op);
  require_cuda(x.device(), op);
  DeviceScope scope(x.device());
  auto y = new_tensor(x.device(), {x.dims()[0], x.dims()[1], outH, outW});
  {
    cuda::ResizeTables tables;  // declared before the stream: it outlives the launches
    Stream stream;
    cuda::resize_forward(x.dims()[0] * x.dims()[1], a.h, a.w, x.data(), y->data(), tables, stream);
    stream.sync();
  }
  return one("y", std::move(y));
}

// inputs: dy [B,C,outH,outW]. attrs: inH, inW, scaleH, scaleW. outputs: dx [B,C,inH,inW].
Outputs resize_backward_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "resizeBackward";
  DeviceTensor& dy = trainer_input(in, 0, op, "dy", 4);
  const int inH = attrs.integer("inH", 1, 1, 1 << 20), inW = attrs.integer("inW", 1, 1, 1 << 20);
  const ResizeAxes a = resize_axes(inH, inW, int(dy.dims()[2]), int(dy.dims()[3]), attrs, op);
  require_cuda(dy.device(), op);
  DeviceScope scope(dy.device());
  auto dx = new_tensor(dy.device(), {dy.dims()[0], dy.dims()[1], inH, inW});
  {
    cuda::ResizeTables tables;
    Stream stream;
    cuda::resize_adjoint(dy.dims()[0] * dy.dims()[1], a.h, a.w, dy.data(), dx->data(), tables, stream);
    stream.sync();
  }
  return one("dx", std::move(dx));
}

// ---------------------------------------------------------------- adam

// inputs: 4 per parameter (p, g, m, v, equal dims, all on one device). attrs: lr, beta1, beta2,
// eps, step. p, m and v are updated in place (the one op that writes its inputs: a device
// parameter keeps its identity, so a network's tensors need no rebinding after a step). No outputs.
Outputs adam_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "adam";
  if (in.empty() || in.size() % 4) op_fail(op, "inputs must be (p, g, m, v) per parameter");
  int64_t step = 0;
  const AdamConfig c = adam_config(attrs, op, &step);
  for (size_t i = 0; i < in.size(); ++i) {
    DeviceTensor& t = trainer_input(in, i, op, "a tensor", 0);
    same_dims(*in[i - i % 4].device, t, op, "p", "g, m and v");
  }
  // p, m, v written while g is read: the four must be different buffers (and no buffer two parameters' p, m or v).
  std::vector<const DeviceTensor*> written;
  for (size_t i = 0; i < in.size(); ++i) {
    const DeviceTensor* t = in[i].device.get();
    for (const DeviceTensor* w : written)
      if (w == t) op_fail(op, "p, g, m and v must be different tensors, and no two parameters may share one", "E_ARGUMENT");
    written.push_back(t);
  }
  const int device = in[0].device->device();
  require_cuda(device, op);
  DeviceScope scope(device);
  {
    Stream stream;
    for (size_t i = 0; i < in.size(); i += 4)
      cuda::adam_step(in[i].device->count(), in[i].device->data(), in[i + 2].device->data(),
                      in[i + 3].device->data(), in[i + 1].device->data(), c.lr, c.beta1, c.beta2, c.eps, step,
                      stream);
    stream.sync();
  }
  return {};
}

}  // namespace

void register_cuda_trainer_ops(std::vector<OpInfo>& list) {
  set_cuda(list, "conv2d", conv2d_cuda);
  set_cuda(list, "conv2dBackward", conv2d_backward_cuda);
  set_cuda(list, "pixelShuffle", pixel_shuffle_cuda);
  set_cuda(list, "pixelShuffleBackward", pixel_shuffle_backward_cuda);
  set_cuda(list, "relu", relu_cuda);
  set_cuda(list, "reluBackward", relu_backward_cuda);
  set_cuda(list, "leakyRelu", leaky_relu_cuda);
  set_cuda(list, "leakyReluBackward", leaky_relu_backward_cuda);
  set_cuda(list, "add", add_cuda);
  set_cuda(list, "l1", l1_cuda);
  set_cuda(list, "charbonnier", charbonnier_cuda);
  set_cuda(list, "resize", resize_cuda);
  set_cuda(list, "resizeBackward", resize_backward_cuda);
  set_cuda(list, "adam", adam_cuda);
}

}  // namespace ops
}  // namespace mghf
