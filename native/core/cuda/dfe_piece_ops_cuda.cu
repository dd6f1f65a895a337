// The DFE's pieces (ops/dfe_piece_ops.cpp: normalize, stem, coupling and their
// backwards) on CUDA tensors (issue 15 item 2). Each is its CPU function's
// mirror: the same inputs, attrs, outputs, checks and error codes, over the
// launchers of dfe_kernels.h in the per-block order of dfe_kernels.cu's
// dfe_forward / dfe_backward, and, for the weight gradients (weightGrad), of
// train_kernels.h in cuda_trainer.cu's order. The tapes live on the device.
// As ops_cuda.cu's: device inputs → new device outputs, never a silent copy,
// inputs never written (dy is copied before the backward works in it), the
// call's own stream synchronised before return. The weight gradients come back
// as host Float64 vectors "grad:<SPEC §9 name>", as on the CPU.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../numeric_checks.h"
#include "../ops/dfe_args.h"
#include "cuda_op_support.h"
#include "dfe_kernels.h"
#include "train_kernels.h"

namespace mghf {
namespace ops {
namespace {

using cuda::DeviceBuffer;
using cuda::DeviceScope;

template <class T>
void copy_device(T* to, const T* from, size_t n, cudaStream_t stream) {
  if (n) MGHF_CUDA_CHECK(cudaMemcpyAsync(to, from, n * sizeof(T), cudaMemcpyDeviceToDevice, stream));
}

void put(const Buffer<float>& h, DeviceBuffer<float>& d, cudaStream_t stream) {
  d.resize(h.size());
  if (h.size())
    MGHF_CUDA_CHECK(cudaMemcpyAsync(d.data(), h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice, stream));
}

// Zeroed double accumulators, one per host gradient buffer.
void zeroed(DeviceBuffer<double>& d, size_t n, cudaStream_t stream) {
  d.resize(n);
  if (n) MGHF_CUDA_CHECK(cudaMemsetAsync(d.data(), 0, n * sizeof(double), stream));
}

void get(const DeviceBuffer<double>& d, Buffer<double>& h, cudaStream_t stream) {
  if (h.size())
    MGHF_CUDA_CHECK(cudaMemcpyAsync(h.data(), d.data(), h.size() * sizeof(double), cudaMemcpyDeviceToHost, stream));
}

// The weight gradients whose SPEC §9 names start with `prefix`, as Float64 vectors "grad:<name>"
// (dfe_piece_ops.cpp's weight_grad_outputs).
void weight_grad_outputs(DfeWeights<double>& g, const std::string& prefix, Outputs& out) {
  g.for_each([&](const std::string& name, Buffer<double>& b) {
    if (name.compare(0, prefix.size(), prefix) != 0) return;
    out.emplace_back("grad:" + name, Value::vector(std::vector<double>(b.data(), b.data() + b.size())));
  });
}

// numeric_checks.h's check_finite with x on the device, naming the largest weight (as dfe does).
void check_device(const float* x, int64_t n, NumericStage stage, const char* what, const DfeWeights<float>& w,
                  cudaStream_t stream) {
  float value = 0;
  const int64_t i = cuda::first_nonfinite(x, n, &value, stream);
  if (i >= 0) {
    NumericContext c;
    c.weights_hint = largest_weight_hint(w);
    numeric_error(stage, std::string(what) + " at index " + std::to_string(i), value, c);
  }
}

// The weight gradients' float partials at their largest for B images of P pixels, sized before
// the first launch (train_kernels.h: growing mid-call could hand back a block still in use).
void size_partials(cuda::WeightGradScratch& s, const DfeArchitecture& a, int B, int64_t P) {
  const size_t N = size_t(a.channels), c = size_t(a.half()), h = size_t(a.hidden());
  const size_t chunks = size_t(B) * size_t((P + cuda::kWeightGradChunk - 1) / cuda::kWeightGradChunk);
  s.get(chunks * std::max({N * (N + 1), h * c, h * 9, N * 28}));
}

Value state_value(std::shared_ptr<OpState> s) {
  Value t;
  t.kind = Kind::State;
  t.state = std::move(s);
  return t;
}

// A piece's tape must be one this op's CUDA function made, on d's device.
template <class Tape>
Tape& device_tape(std::vector<Value>& in, const std::string& op, const char* of, const DeviceTensor& d,
                  const char* dname) {
  Value& tv = input(in, 0, op, "tape");
  auto* tape = tv.kind == Kind::State ? dynamic_cast<Tape*>(tv.state.get()) : nullptr;
  if (!tape)
    op_fail(op, std::string("tape must be the tape of a ") + of + " op on CUDA (" + dname + " is a CUDA tensor)",
            "E_DEVICE");
  if (d.device() != tape->device)
    op_fail(op, "the tape is on cuda:" + std::to_string(tape->device) + " but " + dname + " is on cuda:" +
                    std::to_string(d.device()), "E_DEVICE");
  return *tape;
}

// ------------------------------------------------------------------ normalize

// inputs: x [B, 3, H, W] (device). attrs: inputRange. outputs: xh (device).
Outputs normalize_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "normalize";
  DeviceTensor& x = device_input(in, 0, op, "x", 4);
  if (x.dims()[1] != 3) op_fail(op, "x must have 3 channels", "E_SHAPE");
  const InputRange range = range_attr(attrs);
  require_cuda(x.device(), op);
  DeviceScope scope(x.device());
  auto xh = new_tensor(x.device(), x.dims());
  {
    Stream stream;
    cuda::normalise(int(x.dims()[0]), x.dims()[2] * x.dims()[3], range, x.data(), xh->data(), stream);
    stream.sync();
  }
  Outputs out;
  out.emplace_back("xh", Value::on_device(std::move(xh)));
  return out;
}

// inputs: dxh [B, 3, H, W] (device). attrs: inputRange. outputs: dx (device).
Outputs normalize_backward_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "normalizeBackward";
  DeviceTensor& d = device_input(in, 0, op, "dxh", 4);
  if (d.dims()[1] != 3) op_fail(op, "dxh must have 3 channels", "E_SHAPE");
  const InputRange range = range_attr(attrs);
  require_cuda(d.device(), op);
  DeviceScope scope(d.device());
  auto dx = new_tensor(d.device(), d.dims());
  {
    Stream stream;
    cuda::normalise_backward(int(d.dims()[0]), d.dims()[2] * d.dims()[3], range, d.data(), dx->data(), stream);
    stream.sync();
  }
  Outputs out;
  out.emplace_back("dx", Value::on_device(std::move(dx)));
  return out;
}

// ------------------------------------------------------------------ stem

// dfe_piece_ops.cpp's StemTape on the device: the stem's weights as uploaded and its input.
class CudaStemTape final : public OpState {
 public:
  CudaStemTape(std::shared_ptr<const DfeWeights<float>> w, int device, int B, int H, int W)
      : OpState("stem tape (cuda)"), host_weights(std::move(w)), device(device), B(B), H(H), W(W) {}
  void count_bytes() { set_bytes(int64_t(xh.size() * sizeof(float))); }
  std::shared_ptr<const DfeWeights<float>> host_weights;  // the arch, the numeric errors' context
  int device, B, H, W;
  DeviceBuffer<float> weight, bias;  // [N×27], [N]
  DeviceBuffer<float> xh;            // the input, for the weight gradient
};

// inputs: xh [B, 3, H, W] (device), weights. attrs: tape (default true). outputs: z (device), tape.
Outputs stem_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "stem";
  DeviceTensor& xh = device_input(in, 0, op, "xh", 4);
  auto wp = weights_input(in, 1, op);
  if (xh.dims()[1] != 3) op_fail(op, "xh must have 3 channels", "E_SHAPE");
  if (xh.dims()[2] < 2 || xh.dims()[3] < 2) op_fail(op, "xh must be at least 2×2", "E_TOO_SMALL");
  const DfeWeights<float>& w = *wp;
  const int B = int(xh.dims()[0]), H = int(xh.dims()[2]), W = int(xh.dims()[3]), N = w.arch.channels;
  const int64_t P = int64_t(H) * W;
  const bool with_tape = attrs.flag("tape", true);
  require_cuda(xh.device(), op);
  DeviceScope scope(xh.device());
  auto state = std::make_shared<CudaStemTape>(wp, xh.device(), B, H, W);
  auto z = new_tensor(xh.device(), {B, N, H, W});
  {
    Stream stream;
    put(w.stem_weight, state->weight, stream);
    put(w.stem_bias, state->bias, stream);
    cuda::stem(B, N, H, W, state->weight.data(), state->bias.data(), xh.data(), z->data(), int64_t(N) * P, stream);
    if (with_tape) {
      state->xh.resize(size_t(xh.count()));
      copy_device(state->xh.data(), xh.data(), size_t(xh.count()), stream);
    }
    check_device(z->data(), z->count(), NumericStage::Features, "the stem's output", w, stream);
  }
  Outputs out;
  out.emplace_back("z", Value::on_device(std::move(z)));
  if (with_tape) {
    state->count_bytes();
    out.emplace_back("tape", state_value(std::move(state)));
  }
  return out;
}

// inputs: tape (of stem, on dz's device), dz [B, N, H, W] (device). attrs: weightGrad.
// outputs: dxh (device), grad:stem.* (host Float64, weightGrad).
Outputs stem_backward_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "stemBackward";
  input(in, 0, op, "tape");
  DeviceTensor& dz = device_input(in, 1, op, "dz", 4);
  CudaStemTape& tape = device_tape<CudaStemTape>(in, op, "stem", dz, "dz");
  const DfeWeights<float>& w = *tape.host_weights;
  const int B = tape.B, H = tape.H, W = tape.W, N = w.arch.channels;
  if (dz.dims() != std::vector<int64_t>{B, N, H, W}) op_fail(op, "dz must have the dims of the stem's output", "E_SHAPE");
  const int64_t P = int64_t(H) * W;
  const bool weight_grad = attrs.flag("weightGrad", false);
  DeviceScope scope(dz.device());
  auto dxh = new_tensor(dz.device(), {B, 3, H, W});
  DfeWeights<double> g(weight_grad ? w.arch : DfeArchitecture{w.arch.channels, 0, w.arch.expand});
  {
    DeviceBuffer<double> gw, gb;
    cuda::WeightGradScratch partial;
    Stream stream;
    cuda::stem_backward(B, N, H, W, tape.weight.data(), dz.data(), int64_t(N) * P, dxh->data(), stream);
    if (weight_grad) {
      size_partials(partial, w.arch, B, P);
      zeroed(gw, g.stem_weight.size(), stream);
      zeroed(gb, g.stem_bias.size(), stream);
      cuda::stem_weight_grad(B, N, H, W, tape.xh.data(), dz.data(), int64_t(N) * P, gw.data(), gb.data(), partial,
                             stream);
      get(gw, g.stem_weight, stream);
      get(gb, g.stem_bias, stream);
    }
    check_device(dxh->data(), dxh->count(), NumericStage::DfeBackward, "the gradient", w, stream);
    stream.sync();
  }
  Outputs out;
  out.emplace_back("dxh", Value::on_device(std::move(dxh)));
  if (weight_grad) weight_grad_outputs(g, "stem.", out);
  return out;
}

// ------------------------------------------------------------------ coupling

// dfe_piece_ops.cpp's CouplingTape on the device: block k's weights as uploaded, z1 and exp ρ and
// the masks as dfe_forward records them, and the block's input z and z2 after φ (the weight
// gradients' inputs).
class CudaCouplingTape final : public OpState {
 public:
  CudaCouplingTape(std::shared_ptr<const DfeWeights<float>> w, int device, int k, int B, int H, int W)
      : OpState("coupling tape (cuda)"), host_weights(std::move(w)), device(device), k(k), B(B), H(H), W(W) {}
  void count_bytes() {
    int64_t b = int64_t(z.size() + z2.size() + tape.z1.size() + tape.E.size()) * int64_t(sizeof(float));
    for (const cuda::DeviceIrbTape* it : {&tape.phi, &tape.rho, &tape.eta}) b += int64_t(it->m1.size() + it->m2.size());
    set_bytes(b);
  }
  std::shared_ptr<const DfeWeights<float>> host_weights;
  int device, k, B, H, W;
  cuda::DeviceBlockWeights weights;
  cuda::DeviceBlockTape tape;
  DeviceBuffer<float> z, z2;
};

void upload_block(const BlockWeights<float>& h, cuda::DeviceBlockWeights& d, cudaStream_t stream) {
  put(h.mix_weight, d.mix_weight, stream);
  put(h.mix_bias, d.mix_bias, stream);
  const IrbWeights<float>* hi[] = {&h.phi, &h.rho, &h.eta};
  cuda::DeviceIrbWeights* di[] = {&d.phi, &d.rho, &d.eta};
  for (int i = 0; i < 3; ++i) {
    put(hi[i]->expand, di[i]->expand, stream);
    put(hi[i]->depthwise, di[i]->depthwise, stream);
    put(hi[i]->project, di[i]->project, stream);
  }
}

// The scratch of one coupling call ([B×c×P] and [B×h×P] each), declared before the call's Stream.
struct CouplingScratch {
  DeviceBuffer<float> R, Eta, r1, r2, g1, g2;
};

// out (+)= IRB(in) (dfe_kernels.cu's irb_forward): expand 1×1 + ReLU6 into r1, reflect-pad
// depthwise 3×3 + ReLU6 into r2, project 1×1 into out.
void irb_forward(const cuda::DeviceIrbWeights& w, int B, int c, int h, int H, int W, const float* in, int64_t in_bs,
                 float* out, int64_t out_bs, bool accumulate, uint8_t* m1, uint8_t* m2, CouplingScratch& s,
                 cudaStream_t stream) {
  const int64_t P = int64_t(H) * W;
  cuda::conv1x1_relu6(B, h, c, P, w.expand.data(), in, in_bs, s.r1.data(), m1, stream);
  cuda::depthwise_relu6(B, h, H, W, w.depthwise.data(), s.r1.data(), s.r2.data(), m2, stream);
  cuda::conv1x1(B, c, h, P, w.project.data(), false, nullptr, s.r2.data(), int64_t(h) * P, out, out_bs, accumulate,
                stream);
}

// din += IRBᵀ(dout) (dfe_kernels.cu's irb_backward): g = Wpᵀ·dout into g2, dt = m1 ⊙ dwᵀ(m2 ⊙ g)
// into g1, din += Weᵀ·dt. With g (weight gradients), as cuda_trainer.cu's irb_backward: r1, r2
// recomputed from the IRB's input `in` first (the CPU recomputes them too), then dW += ….
void irb_backward(const cuda::DeviceIrbWeights& w, int B, int c, int h, int H, int W, const cuda::DeviceIrbTape& t,
                  const float* in, int64_t in_bs, const float* dout, int64_t dout_bs, float* din, int64_t din_bs,
                  DeviceBuffer<double>* g, cuda::WeightGradScratch& partial, CouplingScratch& s,
                  cudaStream_t stream) {
  const int64_t P = int64_t(H) * W, hP = int64_t(h) * P;
  float* g1 = s.g1.data();
  float* g2 = s.g2.data();
  if (g) {
    cuda::conv1x1_relu6(B, h, c, P, w.expand.data(), in, in_bs, s.r1.data(), nullptr, stream);
    cuda::depthwise_relu6(B, h, H, W, w.depthwise.data(), s.r1.data(), s.r2.data(), nullptr, stream);
    cuda::conv1x1_weight_grad(B, c, h, P, dout, dout_bs, s.r2.data(), hP, g[2].data(), nullptr, partial, stream);
  }
  cuda::conv1x1_backward(B, c, h, P, w.project.data(), dout, dout_bs, g2, hP, false, stream);
  cuda::depthwise_relu6_backward(B, h, H, W, w.depthwise.data(), t.m2.data(), t.m1.data(), g2, g1, stream);
  if (g) {
    cuda::depthwise_weight_grad(B, h, H, W, g2, t.m2.data(), s.r1.data(), g[1].data(), partial, stream);
    cuda::conv1x1_weight_grad(B, h, c, P, g1, hP, in, in_bs, g[0].data(), nullptr, partial, stream);
  }
  cuda::conv1x1_backward(B, h, c, P, w.expand.data(), g1, hP, din, din_bs, true, stream);
}

// inputs: z [B, N, H, W] (device), weights. attrs: block (k), tape (default true).
// outputs: y (device), tape.
Outputs coupling_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "coupling";
  DeviceTensor& z = device_input(in, 0, op, "z", 4);
  auto wp = weights_input(in, 1, op);
  const DfeWeights<float>& w = *wp;
  const DfeArchitecture& a = w.arch;
  const int k = attrs.integer("block", 0, 0, a.blocks - 1);
  const int N = a.channels, c = a.half(), h = a.hidden();
  if (z.dims()[1] != N) op_fail(op, "z must have the weights' N channels", "E_SHAPE");
  const int B = int(z.dims()[0]), H = int(z.dims()[2]), W = int(z.dims()[3]);
  if (H < 2 || W < 2) op_fail(op, "z must be at least 2×2", "E_TOO_SMALL");
  const int64_t P = int64_t(H) * W, NP = int64_t(N) * P, cP = int64_t(c) * P, hP = int64_t(h) * P;
  const size_t b = size_t(B);
  const bool with_tape = attrs.flag("tape", true);
  require_cuda(z.device(), op);
  DeviceScope scope(z.device());
  auto state = std::make_shared<CudaCouplingTape>(wp, z.device(), k, B, H, W);
  cuda::DeviceBlockTape* bt = with_tape ? &state->tape : nullptr;
  auto y = new_tensor(z.device(), z.dims());
  {
    CouplingScratch s;
    s.R.resize(b * size_t(cP));
    s.Eta.resize(b * size_t(cP));
    s.r1.resize(b * size_t(hP));
    s.r2.resize(b * size_t(hP));
    Stream stream;
    upload_block(w.block[size_t(k)], state->weights, stream);
    const cuda::DeviceBlockWeights& bw = state->weights;
    if (bt) {
      bt->z1.resize(b * size_t(cP));
      bt->E.resize(b * size_t(cP));
      for (cuda::DeviceIrbTape* it : {&bt->phi, &bt->rho, &bt->eta}) {
        it->m1.resize(b * size_t(hP));
        it->m2.resize(b * size_t(hP));
      }
      state->z.resize(size_t(z.count()));
      copy_device(state->z.data(), z.data(), size_t(z.count()), stream);
      state->z2.resize(b * size_t(cP));
    }
    auto m1 = [](cuda::DeviceIrbTape* t) { return t ? t->m1.data() : nullptr; };
    auto m2 = [](cuda::DeviceIrbTape* t) { return t ? t->m2.data() : nullptr; };
    cuda::DeviceIrbTape* tphi = bt ? &bt->phi : nullptr;
    cuda::DeviceIrbTape* trho = bt ? &bt->rho : nullptr;
    cuda::DeviceIrbTape* teta = bt ? &bt->eta : nullptr;
    float* yp = y->data();
    cuda::conv1x1(B, N, N, P, bw.mix_weight.data(), false, bw.mix_bias.data(), z.data(), NP, yp, NP, false, stream);
    float* z1 = yp;
    float* z2 = yp + cP;
    // z2 ← z2 + φ(z1)
    irb_forward(bw.phi, B, c, h, H, W, z1, NP, z2, NP, true, m1(tphi), m2(tphi), s, stream);
    // z1 ← z1 ⊙ exp(ρ(z2)) + η(z2)
    irb_forward(bw.rho, B, c, h, H, W, z2, NP, s.R.data(), cP, false, m1(trho), m2(trho), s, stream);
    irb_forward(bw.eta, B, c, h, H, W, z2, NP, s.Eta.data(), cP, false, m1(teta), m2(teta), s, stream);
    if (bt)
      for (int i = 0; i < B; ++i) copy_device(state->z2.data() + i * cP, z2 + i * NP, size_t(cP), stream);
    cuda::coupling_forward(B, c, P, z1, NP, s.R.data(), s.Eta.data(), bt ? bt->z1.data() : nullptr,
                           bt ? bt->E.data() : nullptr, stream);
    check_device(y->data(), y->count(), NumericStage::Features, "the coupling's output", w, stream);
  }
  Outputs out;
  out.emplace_back("y", Value::on_device(std::move(y)));
  if (with_tape) {
    state->count_bytes();
    out.emplace_back("tape", state_value(std::move(state)));
  }
  return out;
}

// inputs: tape (of coupling, on dy's device), dy [B, N, H, W] (device). attrs: weightGrad.
// outputs: dz (device), grad:inn.k.* (host Float64, weightGrad).
Outputs coupling_backward_cuda(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "couplingBackward";
  input(in, 0, op, "tape");
  DeviceTensor& dy = device_input(in, 1, op, "dy", 4);
  CudaCouplingTape& tape = device_tape<CudaCouplingTape>(in, op, "coupling", dy, "dy");
  const DfeWeights<float>& w = *tape.host_weights;
  const DfeArchitecture& a = w.arch;
  const int N = a.channels, c = a.half(), h = a.hidden(), B = tape.B, H = tape.H, W = tape.W;
  if (dy.dims() != std::vector<int64_t>{B, N, H, W}) op_fail(op, "dy must have the dims of the block's output", "E_SHAPE");
  const bool weight_grad = attrs.flag("weightGrad", false);
  const int64_t P = int64_t(H) * W, NP = int64_t(N) * P, cP = int64_t(c) * P, hP = int64_t(h) * P;
  const size_t b = size_t(B);
  const cuda::DeviceBlockWeights& bw = tape.weights;
  const cuda::DeviceBlockTape& bt = tape.tape;
  DeviceScope scope(dy.device());
  auto dz = new_tensor(dy.device(), {B, N, H, W});
  DfeWeights<double> g(weight_grad ? a : DfeArchitecture{a.channels, 0, a.expand});
  {
    // The backward works in a copy of dy (inputs are never written).
    DeviceBuffer<float> work(size_t(dy.count()));
    CouplingScratch s;
    s.R.resize(b * size_t(cP));
    s.g1.resize(b * size_t(hP));
    s.g2.resize(b * size_t(hP));
    // Device gradients: mix weight, mix bias, then expand, depthwise, project of φ, ρ, η.
    DeviceBuffer<double> gmix[2], girb[3][3];
    cuda::WeightGradScratch partial;
    Stream stream;
    BlockWeights<double>* gk = weight_grad ? &g.block[size_t(tape.k)] : nullptr;
    IrbWeights<double>* hirb[3] = {};
    if (gk) {
      s.r1.resize(b * size_t(hP));
      s.r2.resize(b * size_t(hP));
      size_partials(partial, a, B, P);
      zeroed(gmix[0], gk->mix_weight.size(), stream);
      zeroed(gmix[1], gk->mix_bias.size(), stream);
      IrbWeights<double>* irbs[3] = {&gk->phi, &gk->rho, &gk->eta};
      for (int i = 0; i < 3; ++i) {
        hirb[i] = irbs[i];
        zeroed(girb[i][0], irbs[i]->expand.size(), stream);
        zeroed(girb[i][1], irbs[i]->depthwise.size(), stream);
        zeroed(girb[i][2], irbs[i]->project.size(), stream);
      }
    }
    copy_device(work.data(), dy.data(), size_t(dy.count()), stream);
    float* d = work.data();
    float* dz1 = d;       // ∂L/∂z1 after the coupling, becomes ∂L/∂z1 before it
    float* da = d + cP;   // ∂L/∂z2 after φ
    float* Dr = s.R.data();
    const float* z1 = bt.z1.data();
    const float* z2 = tape.z2.data();
    // z1' = z1 ⊙ E + η(a), E = exp(ρ(a)):  ∂ρ = dz1' ⊙ z1 ⊙ E,  ∂η = dz1'
    cuda::coupling_rho_grad(B, c, P, dz1, NP, z1, bt.E.data(), Dr, stream);
    irb_backward(bw.eta, B, c, h, H, W, bt.eta, z2, cP, dz1, NP, da, NP, gk ? girb[2] : nullptr, partial, s, stream);
    irb_backward(bw.rho, B, c, h, H, W, bt.rho, z2, cP, Dr, cP, da, NP, gk ? girb[1] : nullptr, partial, s, stream);
    cuda::coupling_scale(B, c, P, dz1, NP, bt.E.data(), stream);
    // a = z2 + φ(z1): ∂z2 = ∂a, ∂z1 += φᵀ ∂a
    irb_backward(bw.phi, B, c, h, H, W, bt.phi, z1, cP, da, NP, dz1, NP, gk ? girb[0] : nullptr, partial, s, stream);
    // y = mix(z): ∂W += dy·zᵀ, ∂b += Σ dy, ∂z = Wᵀ dy
    if (gk)
      cuda::conv1x1_weight_grad(B, N, N, P, d, NP, tape.z.data(), NP, gmix[0].data(), gmix[1].data(), partial, stream);
    cuda::conv1x1_backward(B, N, N, P, bw.mix_weight.data(), d, NP, dz->data(), NP, false, stream);
    if (gk) {
      get(gmix[0], gk->mix_weight, stream);
      get(gmix[1], gk->mix_bias, stream);
      for (int i = 0; i < 3; ++i) {
        get(girb[i][0], hirb[i]->expand, stream);
        get(girb[i][1], hirb[i]->depthwise, stream);
        get(girb[i][2], hirb[i]->project, stream);
      }
    }
    check_device(dz->data(), dz->count(), NumericStage::DfeBackward, "the gradient", w, stream);
    stream.sync();
  }
  Outputs out;
  out.emplace_back("dz", Value::on_device(std::move(dz)));
  if (weight_grad) weight_grad_outputs(g, "inn." + std::to_string(tape.k) + ".", out);
  return out;
}

}  // namespace

void register_cuda_dfe_piece_ops(std::vector<OpInfo>& list) {
  set_cuda(list, "normalize", normalize_cuda);
  set_cuda(list, "normalizeBackward", normalize_backward_cuda);
  set_cuda(list, "stem", stem_cuda);
  set_cuda(list, "stemBackward", stem_backward_cuda);
  set_cuda(list, "coupling", coupling_cuda);
  set_cuda(list, "couplingBackward", coupling_backward_cuda);
}

}  // namespace ops
}  // namespace mghf
