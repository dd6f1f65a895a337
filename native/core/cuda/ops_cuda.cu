// The ops of native/core/ops on CUDA tensors (issue 15, item 2): one function
// per op, beside the kernels it calls, registered as that op's `cuda`
// implementation (registry.h picks it when the tensor inputs are on a device).
// Each runs the launchers of cuda_mghfc.h / dfe_kernels.h with
// the same finiteness checks as the op's CPU function, on its own stream,
// synchronised before it returns: a later op, a download or a free never races
// this op's kernels. Outputs are new device tensors; inputs are never written
// (dS and dF are copied first, as the CPU ops work on the binding's copies).
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../entropy.h"  // select_channels
#include "../numeric_checks.h"
#include "../ops/dfe_args.h"
#include "../ops/loss_ops.h"
#include "../ops/registry.h"
#include "../ops/term_args.h"
#include "../ops/trainer_ops.h"
#include "cuda_backend.h"
#include "cuda_check.h"
#include "cuda_mghfc.h"
#include "cuda_op_support.h"
#include "device_buffer.h"
#include "dfe_kernels.h"

namespace mghf {
namespace ops {
namespace {

using cuda::DeviceScope;

void copy_device(float* to, const float* from, int64_t n, cudaStream_t stream) {
  if (n) MGHF_CUDA_CHECK(cudaMemcpyAsync(to, from, size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice, stream));
}

// The new dS: a copy of the optional accumulator at input i (dims of S), or zeros.
std::shared_ptr<DeviceTensor> gradient_accumulator(std::vector<Value>& in, size_t i, DeviceTensor& S,
                                                   const std::string& op, cudaStream_t stream) {
  auto dS = new_tensor(S.device(), S.dims());
  if (present(in, i)) {
    DeviceTensor& acc = device_input(in, i, op, "dS", S.dims().size());
    same_dims(S, acc, op, "S", "dS");
    copy_device(dS->data(), acc.data(), S.count(), stream);
  } else if (S.count()) {
    MGHF_CUDA_CHECK(cudaMemsetAsync(dS->data(), 0, size_t(S.count()) * sizeof(float), stream));
  }
  return dS;
}

// numeric_checks.h's check_finite, with x on the device (a scan, then the index and value downloaded).
template <class Ctx>
void check_device(const float* x, int64_t n, NumericStage stage, const char* what, Ctx&& ctx,
                  cudaStream_t stream) {
  float value = 0;
  const int64_t i = cuda::first_nonfinite(x, n, &value, stream);
  if (i >= 0) numeric_error(stage, std::string(what) + " at index " + std::to_string(i), value, ctx());
}

NumericContext weights_context(const DfeWeights<float>& w) {
  NumericContext c;
  c.weights_hint = largest_weight_hint(w);
  return c;
}

// ---------------------------------------------------------------- transfers

// toDevice: inputs x (host or device) ; attrs device (N of cuda:N). outputs y on cuda:N.
// A device input is copied through the host: an explicit t.to(), never a silent one.
Outputs to_device(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "toDevice";
  const int device = attrs.integer("device", 0, 0, 1023);
  require_cuda(device, op);
  Value& x = input(in, 0, op, "x");
  std::vector<float> staged;
  const float* host = nullptr;
  std::vector<int64_t> dims;
  if (x.kind == Kind::F32) {
    Value& t = tensor_input(in, 0, op, "x", x.dims.size());
    host = t.f32.data();
    dims = t.dims;
  } else if (x.kind == Kind::Device && x.device) {
    dims = x.device->dims();
    staged.resize(size_t(x.device->count()));
    DeviceScope from(x.device->device());
    if (!staged.empty())
      MGHF_CUDA_CHECK(cudaMemcpy(staged.data(), x.device->data(), staged.size() * sizeof(float),
                                 cudaMemcpyDeviceToHost));
    host = staged.data();
  } else {
    op_fail(op, "x must be a float32 tensor", "E_DTYPE");
  }
  DeviceScope scope(device);
  auto y = new_tensor(device, dims);
  {
    Stream stream;
    if (y->count())
      MGHF_CUDA_CHECK(cudaMemcpyAsync(y->data(), host, size_t(y->bytes()), cudaMemcpyHostToDevice, stream));
    stream.sync();
  }
  Outputs out;
  out.emplace_back("y", Value::on_device(std::move(y)));
  return out;
}

// toHost: inputs x (device). outputs y, a host float32 tensor.
Outputs to_host(std::vector<Value>& in, const Attrs&) {
  const std::string op = "toHost";
  Value& x = input(in, 0, op, "x");
  if (x.kind != Kind::Device || !x.device) op_fail(op, "x must be a CUDA tensor", "E_DEVICE");
  DeviceScope scope(x.device->device());
  Value y = Value::tensor(x.device->dims());
  {
    Stream stream;
    if (y.count())
      MGHF_CUDA_CHECK(cudaMemcpyAsync(y.f32.mut(), x.device->data(), size_t(y.count()) * sizeof(float),
                                      cudaMemcpyDeviceToHost, stream));
    stream.sync();
  }
  Outputs out;
  out.emplace_back("y", std::move(y));
  return out;
}

// ---------------------------------------------------------------- dfe, dfeBackward

// dfe_ops.cpp's tape, on the device: the weights as uploaded and the device tape.
class CudaDfeTapeState final : public OpState {
 public:
  CudaDfeTapeState(std::shared_ptr<const DfeWeights<float>> host, int device, int B, int H, int W,
                   InputRange range)
      : OpState("dfe tape (cuda)"), host_weights(std::move(host)), device(device), B(B), H(H), W(W),
        range(range) {}
  void count_bytes() {
    int64_t b = 0;
    for (const cuda::DeviceBlockTape& bt : tape.block) {
      b += int64_t(bt.z1.size() + bt.E.size()) * int64_t(sizeof(float));
      for (const cuda::DeviceIrbTape* it : {&bt.phi, &bt.rho, &bt.eta})
        b += int64_t(it->m1.size() + it->m2.size());
    }
    set_bytes(b);
  }
  std::shared_ptr<const DfeWeights<float>> host_weights;  // for the numeric errors' context
  cuda::DeviceDfeWeights weights;
  cuda::DeviceDfeTape tape;
  int device, B, H, W;
  InputRange range;
};

// inputs: x [B, 3, H, W] (device), weights. attrs: inputRange, tape. outputs: F (device), tape.
Outputs dfe_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "dfe";
  DeviceTensor& x = device_input(in, 0, op, "x", 4);
  const std::shared_ptr<const DfeWeights<float>> wp = weights_input(in, 1, op);
  if (x.dims()[1] != 3) op_fail(op, "x must have 3 channels", "E_SHAPE");
  if (x.dims()[2] < 2 || x.dims()[3] < 2) op_fail(op, "x must be at least 2×2", "E_TOO_SMALL");
  const DfeWeights<float>& w = *wp;
  const int B = int(x.dims()[0]), H = int(x.dims()[2]), W = int(x.dims()[3]), N = w.arch.channels;
  const InputRange range = range_attr(attrs);
  require_cuda(x.device(), op);
  DeviceScope scope(x.device());
  auto state = std::make_shared<CudaDfeTapeState>(wp, x.device(), B, H, W, range);
  const bool with_tape = attrs.flag("tape", true);
  auto F = new_tensor(x.device(), {B, N, H, W});
  {
    cuda::DfeScratch scratch(w.arch, B, H, W);
    Stream stream;
    cuda::upload(w, state->weights, stream);
    cuda::dfe_forward(state->weights, x.data(), B, H, W, range, F->data(),
                      with_tape ? &state->tape : nullptr, scratch, stream);
    const char* what = nullptr;
    const NumericStage stage = features_stage(attrs, &what);
    check_device(F->data(), F->count(), stage, what, [&] { return weights_context(w); }, stream);
  }
  Outputs out;
  out.emplace_back("F", Value::on_device(std::move(F)));
  if (with_tape) {
    state->count_bytes();
    Value t;
    t.kind = Kind::State;
    t.state = std::move(state);
    out.emplace_back("tape", std::move(t));
  }
  return out;
}

// inputs: tape (a dfe op's on this device), dF [B, N, H, W] (device). outputs: dx (device).
Outputs dfe_backward_cuda(std::vector<Value>& in, const Attrs&) {
  const std::string op = "dfeBackward";
  Value& tv = input(in, 0, op, "tape");
  auto* tape = tv.kind == Kind::State ? dynamic_cast<CudaDfeTapeState*>(tv.state.get()) : nullptr;
  if (!tape) op_fail(op, "tape must be the tape of a dfe op on CUDA (dF is a CUDA tensor)", "E_DEVICE");
  DeviceTensor& dF = device_input(in, 1, op, "dF", 4);
  if (dF.device() != tape->device)
    op_fail(op, "the tape is on cuda:" + std::to_string(tape->device) + " but dF is on cuda:" +
                    std::to_string(dF.device()), "E_DEVICE");
  const DfeWeights<float>& w = *tape->host_weights;
  const std::vector<int64_t> want = {tape->B, w.arch.channels, tape->H, tape->W};
  if (dF.dims() != want)
    op_fail(op, "dF must have the dims of the features the tape was recorded for", "E_SHAPE");
  DeviceScope scope(dF.device());
  auto dx = new_tensor(dF.device(), {tape->B, 3, tape->H, tape->W});
  {
    cuda::DeviceBuffer<float> work(size_t(dF.count()));  // dfe_backward uses dF as scratch
    cuda::DfeScratch scratch(w.arch, tape->B, tape->H, tape->W);
    Stream stream;
    copy_device(work.data(), dF.data(), dF.count(), stream);
    cuda::dfe_backward(tape->weights, tape->tape, work.data(), tape->B, tape->H, tape->W, tape->range,
                       dx->data(), scratch, stream);
    check_device(dx->data(), dx->count(), NumericStage::DfeBackward, "the gradient",
                 [&] { return weights_context(w); }, stream);
  }
  Outputs out;
  out.emplace_back("dx", Value::on_device(std::move(dx)));
  return out;
}

// ---------------------------------------------------------------- the terms

// entropy_ops.cpp's op: the importance on the device, the choice on the host
// (select_channels, as the CPU op does). Outputs are host vectors.
Outputs entropy_prune_reweight_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "entropyPruneReweight";
  DeviceTensor& G = device_input(in, 0, op, "G", 4);
  DeviceTensor& S = device_input(in, 1, op, "S", 4);
  same_dims(G, S, op, "G", "S");
  const int B = int(G.dims()[0]), N = int(G.dims()[1]);
  const int64_t P = G.dims()[2] * G.dims()[3];
  const PruneArgs args = prune_args(in, attrs, B, N, op);
  DeviceScope scope(G.device());
  std::vector<double> imp;
  {
    Stream stream;
    imp = cuda::importance(G.data(), S.data(), B, N, P, stream);
  }
  return prune_outputs(std::move(imp), args, B, N);
}

// csc_ops.cpp's op with cuda::csc: selected/weights host vectors, dS on the device.
Outputs csc_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "csc";
  DeviceTensor& G = device_input(in, 0, op, "G", 4);
  DeviceTensor& S = device_input(in, 1, op, "S", 4);
  same_dims(G, S, op, "G", "S");
  const int B = int(G.dims()[0]), N = int(G.dims()[1]);
  const int64_t P = G.dims()[2] * G.dims()[3];
  const CscArgs args = csc_args(in, attrs, B, N, op);
  const NumericContext ctx = args.context();
  auto context = [&] { return ctx; };
  DeviceScope scope(G.device());
  std::shared_ptr<DeviceTensor> dS;
  CscParts parts;
  {
    Stream stream;
    if (args.grad) dS = gradient_accumulator(in, 4, S, op, stream);
    parts = cuda::csc(G.data(), S.data(), B, N, P, args.M, args.selected, args.weights, args.w,
                      args.grad ? dS->data() : nullptr, stream);
    if (args.grad) check_device(dS->data(), dS->count(), NumericStage::Csc, "its gradient", context, stream);
  }
  const CscParts reported = csc_reported(parts, args);
  return csc_outputs(reported, args, args.grad ? Value::on_device(std::move(dS)) : Value());
}

// lip_ops.cpp's op with cuda::lip.
Outputs lip_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "lip";
  DeviceTensor& G = device_input(in, 0, op, "G", 4);
  DeviceTensor& S = device_input(in, 1, op, "S", 4);
  same_dims(G, S, op, "G", "S");
  const int B = int(G.dims()[0]), N = int(G.dims()[1]), H = int(G.dims()[2]), W = int(G.dims()[3]);
  const LipArgs args = lip_args(attrs, H, W, op);
  const LipOptions& o = args.o;
  const double scale = args.scale;
  const bool grad = args.grad;
  const NumericContext ctx = args.context();
  auto context = [&] { return ctx; };
  DeviceScope scope(G.device());
  std::shared_ptr<DeviceTensor> dS;
  double value = 0;
  {
    Stream stream;
    if (grad) dS = gradient_accumulator(in, 2, S, op, stream);
    value = cuda::lip(G.data(), S.data(), B, N, H, W, o, scale, grad ? dS->data() : nullptr, stream);
    if (grad) check_device(dS->data(), dS->count(), NumericStage::Lip, "its gradient", context, stream);
  }
  check_finite_value(value, NumericStage::Lip, "L_lip", context);
  Outputs out;
  out.emplace_back("lip", Value::number(value));
  if (grad) out.emplace_back("dS", Value::on_device(std::move(dS)));
  return out;
}

// n_ops.cpp's op with the L_n launchers of dfe_kernels.h.
Outputs mse_term_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "mseTerm";
  DeviceTensor& G = device_input(in, 0, op, "G", 4);
  DeviceTensor& S = device_input(in, 1, op, "S", 4);
  same_dims(G, S, op, "G", "S");
  const int64_t count = G.count();
  const double scale = attrs.number("scale", 1);
  const bool grad = attrs.flag("grad", true);
  NumericContext ctx;
  ctx.gamma1 = scale;
  auto context = [&] { return ctx; };
  DeviceScope scope(G.device());
  std::shared_ptr<DeviceTensor> dS;
  double n = 0;
  {
    Stream stream;
    n = cuda::sum_squared_difference(S.data(), G.data(), count, stream) / double(count);
    check_finite_value(n, NumericStage::N, "L_n", context);
    if (grad) {
      dS = gradient_accumulator(in, 2, S, op, stream);
      cuda::n_gradient(S.data(), G.data(), count, float(scale * 2.0 / double(count)), dS->data(), stream);
      check_device(dS->data(), count, NumericStage::N, "its gradient", context, stream);
    }
  }
  Outputs out;
  out.emplace_back("n", Value::number(n));
  if (grad) out.emplace_back("dS", Value::on_device(std::move(dS)));
  return out;
}

// ---------------------------------------------------------------- the loss on device tensors

// mghfLoss with sr, gt on a device (issue 15 item 3): the composition of the ops
// (ops/loss_ops.h, the same one CudaBackend::loss runs), the gradient a new device tensor.
// inputs: sr, gt [B, 3, H, W] (device), weights, selected (Int32 [B·M], optional). attrs: the
// loss options by their mghfLoss names (lib/loss.ts has checked them). outputs: loss, n, mse,
// corr, gram, csc, lip, skipped (Int32 indices into n, mse, corr, gram, csc, lip), grad (device,
// with grad), importance and selected (details).
Outputs loss_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "mghfLoss";
  DeviceTensor& sr = device_input(in, 0, op, "sr", 4);
  DeviceTensor& gt = device_input(in, 1, op, "gt", 4);
  same_dims(sr, gt, op, "sr", "gt");
  Value& wv = input(in, 2, op, "weights");
  if (wv.kind != Kind::Weights || !wv.weights) op_fail(op, "weights must be DFE weights", "E_WEIGHTS");
  if (sr.dims()[1] != 3) op_fail(op, "sr must have 3 channels", "E_SHAPE");
  const int B = int(sr.dims()[0]), H = int(sr.dims()[2]), W = int(sr.dims()[3]);
  if (H < 2 || W < 2) op_fail(op, "sr must be at least 2×2", "E_TOO_SMALL");
  const LossOptions o = loss_options(in, attrs, B, wv.weights->arch.channels);
  // Memory safety only: the LIP patches must lie inside the image.
  if (o.variant == Variant::C && o.gamma3 != 0 && (H < o.lip.patch || W < o.lip.patch))
    op_fail(op, "images must be at least patch×patch pixels for the LIP term", "E_TOO_SMALL");
  require_cuda(sr.device(), op);
  DeviceScope scope(sr.device());
  ComposedLoss c = compose_loss(in[0], in[1], wv, o);
  return loss_outputs(c);
}

}  // namespace

void register_cuda_ops(std::vector<OpInfo>& list) {
  set_cuda(list, "dfe", dfe_cuda);
  set_cuda(list, "dfeBackward", dfe_backward_cuda);
  register_cuda_dfe_piece_ops(list);  // normalize, stem, coupling and their backwards
  set_cuda(list, "entropyPruneReweight", entropy_prune_reweight_cuda);
  set_cuda(list, "csc", csc_cuda);
  set_cuda(list, "lip", lip_cuda);
  set_cuda(list, "monce", lip_cuda);  // lib/ops.ts calls the lip op by this name
  set_cuda(list, "mseTerm", mse_term_cuda);
  list.push_back({"toDevice", to_device, to_device});
  list.push_back({"toHost", nullptr, to_host});
  list.push_back({"mghfLoss", compose_mghf_loss, loss_cuda});  // on host tensors: the same composition
  register_cuda_trainer_ops(list);
}

}  // namespace ops
}  // namespace mghf
