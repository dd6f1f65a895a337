// CudaTrainer (cuda_trainer.h): train.cpp's Trainer with the state on the
// device. The model code mirrors dfe_train.h (forward with the tape, backward
// with the weight gradients), head.h and classifier.h line for line, the
// whole batch per launch, over the DFE ops of dfe_kernels.h and the
// pretraining ops of train_kernels.h.
#include "cuda_trainer.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <utility>
#include <vector>

#include "../error.h"
#include "cuda_backend.h"
#include "cuda_check.h"
#include "dfe_kernels.h"
#include "device_buffer.h"
#include "train_kernels.h"

namespace mghf {
namespace {

using cuda::DeviceBuffer;
using cuda::DeviceScope;
constexpr size_t kWeightGradChunkPixels = size_t(cuda::kWeightGradChunk);


// Views of every tensor inside one flat device buffer, in the order of
// DfeWeights::for_each then HeadWeights::for_each.
template <class T>
struct IrbView {
  T* expand;
  T* depthwise;
  T* project;
};
template <class T>
struct BlockView {
  T* mix_w;
  T* mix_b;
  IrbView<T> phi, rho, eta;
};
template <class T>
struct ModelView {
  T* stem_w = nullptr;
  T* stem_b = nullptr;
  std::vector<BlockView<T>> block;
  T* conv_w[kHeadConvs] = {};
  T* conv_b[kHeadConvs] = {};
  T* fc_w = nullptr;
  T* fc_b = nullptr;
};

template <class T>
ModelView<T> make_view(T* base, const std::vector<size_t>& offsets, int blocks) {
  ModelView<T> v;
  size_t i = 0;
  auto next = [&] {
    if (i >= offsets.size()) throw Error("E_INTERNAL", "CUDA trainer: tensor layout mismatch");
    return base + offsets[i++];
  };
  v.stem_w = next();
  v.stem_b = next();
  v.block.resize(size_t(blocks));
  for (auto& b : v.block) {
    b.mix_w = next();
    b.mix_b = next();
    for (IrbView<T>* r : {&b.phi, &b.rho, &b.eta}) {
      r->expand = next();
      r->depthwise = next();
      r->project = next();
    }
  }
  for (int c = 0; c < kHeadConvs; ++c) {
    v.conv_w[c] = next();
    v.conv_b[c] = next();
  }
  v.fc_w = next();
  v.fc_b = next();
  if (i != offsets.size()) throw Error("E_INTERNAL", "CUDA trainer: tensor layout mismatch");
  return v;
}

// dfe_train.h's tape, for the whole batch: [B][channels][P] each.
struct IrbTape {
  DeviceBuffer<float> r1, r2;        // [B,h,P] ReLU6 outputs
  DeviceBuffer<uint8_t> m1, m2;      // [B,h,P] ReLU6 masks
};
struct BlockTape {
  DeviceBuffer<float> in;     // [B,N,P] the block's input (stem output for block 0)
  DeviceBuffer<float> z1, E;  // [B,c,P]
  IrbTape phi, rho, eta;
};

// The buffers of one batch shape (resized when it changes).
struct Work {
  int B = 0, H = 0, W = 0;
  DeviceBuffer<float> x, xh, F, dF, other, R, Eta, g1, g2;
  std::vector<BlockTape> tape;
  int hH[kHeadConvs + 1] = {}, hW[kHeadConvs + 1] = {};
  DeviceBuffer<float> act[kHeadConvs], hd0, hd1, pooled, logits, dlogits;
  DeviceBuffer<int> labels, correct, flag;
  DeviceBuffer<double> loss;
  cuda::WeightGradScratch partial;
  std::vector<double> host_loss;
  std::vector<int> host_correct;
};

class CudaTrainerImpl final : public CudaTrainer {
 public:
  CudaTrainerImpl(int device, DfeWeights<float> dfe, HeadWeights<float> head,
                  const TrainConfig& cfg);
  ~CudaTrainerImpl() override;

  StepStats step(const float* x, const int* labels, int B, int H, int W,
                 const CancelFlag* cancel) override;
  StepStats evaluate(const float* x, const int* labels, int B, int H, int W,
                     const CancelFlag* cancel) const override;
  void for_each_tensor(const std::function<void(const std::string&, Buffer<float>&)>& fn) override;
  Buffer<float>* tensor(const std::string& name) override;
  const DfeWeights<float>& dfe() const override;
  const HeadWeights<float>& head() const override;
  int classes() const override { return head_.classes; }
  int device() const override { return device_; }

 private:
  struct Slot {
    std::string name;
    Buffer<float>* p;
    Buffer<float>* m;
    Buffer<float>* v;
    size_t offset, size;
  };

  void upload_state() const;
  void download_state() const;
  void ensure_host() const;
  void prepare(const float* x, const int* labels, int B, int H, int W) const;
  void forward(bool grads) const;
  void backward();
  void irb_forward(const IrbView<const float>& w, const float* in, int64_t in_bs, float* out,
                   int64_t out_bs, bool accumulate, IrbTape& t) const;
  void irb_backward(const IrbView<const float>& w, const IrbView<double>& g, const IrbTape& t,
                    const float* in, int64_t in_bs, const float* dout, int64_t dout_bs,
                    float* din, int64_t din_bs);
  StepStats collect(int B) const;  // syncs; per-image losses summed in order on the host

  const int device_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ev_[6] = {};
  mutable std::mutex mutex_;

  // Host copies of the state (current when host_current_; authoritative when host_dirty_).
  mutable DfeWeights<float> w_, m_dfe_, v_dfe_;
  mutable HeadWeights<float> head_, m_head_, v_head_;
  std::vector<Slot> slots_;
  size_t total_ = 0;
  mutable bool host_current_ = true, host_dirty_ = false;

  // Device state: parameters, moments (float) and gradients (double), flat.
  mutable DeviceBuffer<float> p_, m_, v_;
  DeviceBuffer<double> g_;
  ModelView<const float> P_;
  ModelView<double> G_;
  mutable Work wk_;
};

CudaTrainerImpl::CudaTrainerImpl(int device, DfeWeights<float> dfe, HeadWeights<float> head,
                                 const TrainConfig& cfg)
    : CudaTrainer(cfg),
      device_(device),
      w_(std::move(dfe)),
      m_dfe_(w_.arch),
      v_dfe_(w_.arch),
      head_(std::move(head)),
      m_head_(head_.channels, head_.classes),
      v_head_(head_.channels, head_.classes) {
  check_head_fits(w_.arch, head_);
  // The three structures share one layout: visiting them in step pairs the tensors.
  std::vector<Buffer<float>*> m, v;
  m_dfe_.for_each([&](const std::string&, Buffer<float>& b) { m.push_back(&b); });
  m_head_.for_each([&](const std::string&, Buffer<float>& b) { m.push_back(&b); });
  v_dfe_.for_each([&](const std::string&, Buffer<float>& b) { v.push_back(&b); });
  v_head_.for_each([&](const std::string&, Buffer<float>& b) { v.push_back(&b); });
  auto add = [&](const std::string& name, Buffer<float>& p) {
    const size_t i = slots_.size();
    slots_.push_back(Slot{name, &p, m[i], v[i], total_, p.size()});
    total_ += p.size();
  };
  w_.for_each(add);
  head_.for_each(add);
  std::vector<size_t> offsets;
  for (const Slot& s : slots_) offsets.push_back(s.offset);

  DeviceScope scope(device_);
  MGHF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  try {
    for (cudaEvent_t& e : ev_) MGHF_CUDA_CHECK(cudaEventCreate(&e));
    p_.resize(total_);
    m_.resize(total_);
    v_.resize(total_);
    g_.resize(total_);
    P_ = make_view<const float>(p_.data(), offsets, w_.arch.blocks);
    G_ = make_view<double>(g_.data(), offsets, w_.arch.blocks);
    upload_state();
    MGHF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (...) {
    (void)cudaStreamSynchronize(stream_);
    for (cudaEvent_t e : ev_)
      if (e) (void)cudaEventDestroy(e);
    (void)cudaStreamDestroy(stream_);
    (void)cudaGetLastError();
    throw;
  }
}

CudaTrainerImpl::~CudaTrainerImpl() {
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
  if (prev != device_) (void)cudaSetDevice(device_);
  // Drain before the device buffers go back to the cache.
  (void)cudaStreamSynchronize(stream_);
  for (cudaEvent_t e : ev_)
    if (e) (void)cudaEventDestroy(e);
  (void)cudaStreamDestroy(stream_);
  (void)cudaGetLastError();
  if (prev >= 0 && prev != device_) (void)cudaSetDevice(prev);
}

// ---- state transfers ----------------------------------------------------------

void CudaTrainerImpl::upload_state() const {
  for (const Slot& s : slots_) {
    for (const Buffer<float>* b : {s.p, s.m, s.v})
      if (b->size() != s.size)
        throw Error("E_WEIGHTS", "tensor " + s.name + " has " + std::to_string(b->size()) +
                                     " values, expected " + std::to_string(s.size));
    if (!s.size) continue;
    const size_t bytes = s.size * sizeof(float);
    MGHF_CUDA_CHECK(cudaMemcpyAsync(p_.data() + s.offset, s.p->data(), bytes,
                                    cudaMemcpyHostToDevice, stream_));
    MGHF_CUDA_CHECK(cudaMemcpyAsync(m_.data() + s.offset, s.m->data(), bytes,
                                    cudaMemcpyHostToDevice, stream_));
    MGHF_CUDA_CHECK(cudaMemcpyAsync(v_.data() + s.offset, s.v->data(), bytes,
                                    cudaMemcpyHostToDevice, stream_));
  }
}

void CudaTrainerImpl::download_state() const {
  for (const Slot& s : slots_) {
    if (!s.size) continue;
    const size_t bytes = s.size * sizeof(float);
    MGHF_CUDA_CHECK(cudaMemcpyAsync(s.p->data(), p_.data() + s.offset, bytes,
                                    cudaMemcpyDeviceToHost, stream_));
    MGHF_CUDA_CHECK(cudaMemcpyAsync(s.m->data(), m_.data() + s.offset, bytes,
                                    cudaMemcpyDeviceToHost, stream_));
    MGHF_CUDA_CHECK(cudaMemcpyAsync(s.v->data(), v_.data() + s.offset, bytes,
                                    cudaMemcpyDeviceToHost, stream_));
  }
  MGHF_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaTrainerImpl::ensure_host() const {
  if (host_current_) return;
  DeviceScope scope(device_);
  download_state();
  host_current_ = true;
}

void CudaTrainerImpl::for_each_tensor(
    const std::function<void(const std::string&, Buffer<float>&)>& fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  ensure_host();
  host_dirty_ = true;  // fn may write: the next step uploads the host copies
  for (const Slot& s : slots_) fn(s.name, *s.p);
  for (const Slot& s : slots_) fn("adam.m." + s.name, *s.m);
  for (const Slot& s : slots_) fn("adam.v." + s.name, *s.v);
}

Buffer<float>* CudaTrainerImpl::tensor(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  Buffer<float>* found = nullptr;
  for (const Slot& s : slots_) {
    if (name == s.name) found = s.p;
    if (name == "adam.m." + s.name) found = s.m;
    if (name == "adam.v." + s.name) found = s.v;
  }
  if (!found) return nullptr;
  ensure_host();
  host_dirty_ = true;
  return found;
}

const DfeWeights<float>& CudaTrainerImpl::dfe() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ensure_host();
  return w_;
}

const HeadWeights<float>& CudaTrainerImpl::head() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ensure_host();
  return head_;
}

// ---- one batch ----------------------------------------------------------------

void CudaTrainerImpl::prepare(const float* x, const int* labels, int B, int H, int W) const {
  check_classifier_args(w_, head_, labels, B, H, W);
  // Idle unless an earlier call failed half-way: nothing may still read the
  // buffers resized below.
  MGHF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (host_dirty_) {
    upload_state();
    host_dirty_ = false;
  }
  Work& k = wk_;
  const DfeArchitecture& a = w_.arch;
  const size_t N = size_t(a.channels), c = size_t(a.half()), h = size_t(a.hidden());
  const size_t P = size_t(H) * size_t(W), b = size_t(B);
  k.B = B;
  k.H = H;
  k.W = W;
  k.x.resize(b * 3 * P);
  k.xh.resize(b * 3 * P);
  k.F.resize(b * N * P);
  k.dF.resize(b * N * P);
  k.other.resize(b * N * P);
  k.R.resize(b * c * P);
  k.Eta.resize(b * c * P);
  k.g1.resize(b * h * P);
  k.g2.resize(b * h * P);
  k.tape.resize(size_t(a.blocks));
  for (BlockTape& t : k.tape) {
    t.in.resize(b * N * P);
    t.z1.resize(b * c * P);
    t.E.resize(b * c * P);
    for (IrbTape* it : {&t.phi, &t.rho, &t.eta}) {
      it->r1.resize(b * h * P);
      it->r2.resize(b * h * P);
      it->m1.resize(b * h * P);
      it->m2.resize(b * h * P);
    }
  }
  k.hH[0] = H;
  k.hW[0] = W;
  for (int i = 0; i < kHeadConvs; ++i) {
    k.hH[i + 1] = conv_s2_out(k.hH[i]);
    k.hW[i + 1] = conv_s2_out(k.hW[i]);
    k.act[i].resize(b * N * size_t(k.hH[i + 1]) * size_t(k.hW[i + 1]));
  }
  k.hd0.resize(k.act[0].size());
  k.hd1.resize(k.act[0].size());
  const size_t cls = size_t(head_.classes);
  k.pooled.resize(b * N);
  k.logits.resize(b * cls);
  k.dlogits.resize(b * cls);
  k.labels.resize(b);
  k.correct.resize(b);
  k.loss.resize(b);
  k.flag.resize(1);
  k.host_loss.resize(b);
  k.host_correct.resize(b);
  // The weight gradients' partial sums at their largest now, so that no launch
  // of the step reallocates them (a block given back while a kernel still
  // reads it could go to a concurrent call on another stream).
  auto chunks = [&](size_t pixels) {
    return b * ((pixels + kWeightGradChunkPixels - 1) / kWeightGradChunkPixels);
  };
  size_t most = chunks(P) * std::max({N * (N + 1), h * c, h * 9, N * 28});
  for (int i = 0; i < kHeadConvs; ++i)
    most = std::max(most, chunks(size_t(k.hH[i + 1]) * size_t(k.hW[i + 1])) * N * (9 * N + 1));
  k.partial.get(most);
  MGHF_CUDA_CHECK(cudaMemcpyAsync(k.x.data(), x, b * 3 * P * sizeof(float),
                                  cudaMemcpyHostToDevice, stream_));
  MGHF_CUDA_CHECK(
      cudaMemcpyAsync(k.labels.data(), labels, b * sizeof(int), cudaMemcpyHostToDevice, stream_));
}

// detail::irb_train_forward: out (+)= IRB(in), keeping r1, r2 and the masks.
void CudaTrainerImpl::irb_forward(const IrbView<const float>& w, const float* in, int64_t in_bs,
                                  float* out, int64_t out_bs, bool accumulate, IrbTape& t) const {
  const int B = wk_.B, H = wk_.H, W = wk_.W, c = w_.arch.half(), h = w_.arch.hidden();
  const int64_t P = int64_t(H) * W;
  cuda::conv1x1_relu6(B, h, c, P, w.expand, in, in_bs, t.r1.data(), t.m1.data(), stream_);
  cuda::depthwise_relu6(B, h, H, W, w.depthwise, t.r1.data(), t.r2.data(), t.m2.data(), stream_);
  cuda::conv1x1(B, c, h, P, w.project, false, nullptr, t.r2.data(), int64_t(h) * P, out, out_bs,
                accumulate, stream_);
}

// dfe_train_forward, head_forward and the loss of classifier_batch (with
// dlogits when grads).
void CudaTrainerImpl::forward(bool grads) const {
  Work& k = wk_;
  const DfeArchitecture& a = w_.arch;
  const int B = k.B, H = k.H, W = k.W, N = a.channels, c = a.half();
  const int64_t P = int64_t(H) * W, NP = int64_t(N) * P, cP = int64_t(c) * P;
  if (grads) MGHF_CUDA_CHECK(cudaEventRecord(ev_[0], stream_));
  cuda::normalise(B, P, InputRange::Unit, k.x.data(), k.xh.data(), stream_);
  cuda::stem(B, N, H, W, P_.stem_w, P_.stem_b, k.xh.data(), k.tape[0].in.data(), NP, stream_);
  for (int b = 0; b < a.blocks; ++b) {
    const BlockView<const float>& bw = P_.block[size_t(b)];
    BlockTape& bt = k.tape[size_t(b)];
    float* y = b + 1 < a.blocks ? k.tape[size_t(b) + 1].in.data() : k.F.data();
    cuda::conv1x1(B, N, N, P, bw.mix_w, false, bw.mix_b, bt.in.data(), NP, y, NP, false, stream_);
    float* z1 = y;
    float* z2 = y + cP;
    irb_forward(bw.phi, z1, NP, z2, NP, true, bt.phi);
    irb_forward(bw.rho, z2, NP, k.R.data(), cP, false, bt.rho);
    irb_forward(bw.eta, z2, NP, k.Eta.data(), cP, false, bt.eta);
    cuda::coupling_forward(B, c, P, z1, NP, k.R.data(), k.Eta.data(), bt.z1.data(), bt.E.data(),
                           stream_);
  }
  if (grads) MGHF_CUDA_CHECK(cudaEventRecord(ev_[1], stream_));
  const float* in = k.F.data();
  for (int i = 0; i < kHeadConvs; ++i) {
    cuda::conv3x3s2(B, N, N, k.hH[i], k.hW[i], P_.conv_w[i], P_.conv_b[i], in, k.act[i].data(),
                    true, stream_);
    in = k.act[i].data();
  }
  cuda::global_avg_pool(B, N, int64_t(k.hH[kHeadConvs]) * k.hW[kHeadConvs], in, k.pooled.data(),
                        stream_);
  cuda::fc_forward(B, N, head_.classes, P_.fc_w, P_.fc_b, k.pooled.data(), k.logits.data(),
                   stream_);
  cuda::softmax_cross_entropy(B, head_.classes, k.logits.data(), k.labels.data(), k.loss.data(),
                              k.correct.data(), grads ? k.dlogits.data() : nullptr, stream_);
  if (grads) MGHF_CUDA_CHECK(cudaEventRecord(ev_[2], stream_));
}

// detail::irb_train_backward: din += IRBᵀ(dout) and the three weight gradients.
void CudaTrainerImpl::irb_backward(const IrbView<const float>& w, const IrbView<double>& g,
                                   const IrbTape& t, const float* in, int64_t in_bs,
                                   const float* dout, int64_t dout_bs, float* din,
                                   int64_t din_bs) {
  Work& k = wk_;
  const int B = k.B, H = k.H, W = k.W, c = w_.arch.half(), h = w_.arch.hidden();
  const int64_t P = int64_t(H) * W, hP = int64_t(h) * P;
  float* g1 = k.g1.data();
  float* g2 = k.g2.data();
  cuda::conv1x1_weight_grad(B, c, h, P, dout, dout_bs, t.r2.data(), hP, g.project, nullptr,
                            k.partial, stream_);
  cuda::conv1x1_backward(B, c, h, P, w.project, dout, dout_bs, g2, hP, false, stream_);
  // g1 = m1 ⊙ dwᵀ(m2 ⊙ g2); the depthwise gradient reads m2 ⊙ g2 (the CPU
  // masks g2 in place, the CUDA input backward gathers without writing it).
  cuda::depthwise_relu6_backward(B, h, H, W, w.depthwise, t.m2.data(), t.m1.data(), g2, g1,
                                 stream_);
  cuda::depthwise_weight_grad(B, h, H, W, g2, t.m2.data(), t.r1.data(), g.depthwise, k.partial,
                              stream_);
  cuda::conv1x1_weight_grad(B, h, c, P, g1, hP, in, in_bs, g.expand, nullptr, k.partial, stream_);
  cuda::conv1x1_backward(B, h, c, P, w.expand, g1, hP, din, din_bs, true, stream_);
}

// head_backward then dfe_train_backward, whole batch.
void CudaTrainerImpl::backward() {
  Work& k = wk_;
  const DfeArchitecture& a = w_.arch;
  const int B = k.B, H = k.H, W = k.W, N = a.channels, c = a.half(), cls = head_.classes;
  const int64_t P = int64_t(H) * W, NP = int64_t(N) * P, cP = int64_t(c) * P;

  // ---- head ----
  cuda::fc_weight_grad(B, N, cls, k.pooled.data(), k.dlogits.data(), G_.fc_w, G_.fc_b, stream_);
  int64_t Po = int64_t(k.hH[kHeadConvs]) * k.hW[kHeadConvs];
  float* d = k.hd0.data();
  float* dn = k.hd1.data();
  cuda::pool_fc_backward(B, N, cls, Po, P_.fc_w, k.dlogits.data(), d, stream_);
  for (int i = kHeadConvs - 1; i >= 0; --i) {
    cuda::relu_backward(int64_t(B) * N * Po, k.act[i].data(), d, stream_);
    const float* in = i > 0 ? k.act[i - 1].data() : k.F.data();
    cuda::conv3x3s2_weight_grad(B, N, N, k.hH[i], k.hW[i], in, d, G_.conv_w[i], G_.conv_b[i],
                                k.partial, stream_);
    float* target = i > 0 ? dn : k.dF.data();
    cuda::conv3x3s2_backward(B, N, N, k.hH[i], k.hW[i], P_.conv_w[i], d, target, stream_);
    Po = int64_t(k.hH[i]) * k.hW[i];
    std::swap(d, dn);
  }
  MGHF_CUDA_CHECK(cudaEventRecord(ev_[3], stream_));

  // ---- DFE ----
  float* dz = k.dF.data();
  float* dy = k.other.data();
  float* Dr = k.R.data();
  for (int b = a.blocks - 1; b >= 0; --b) {
    const BlockView<const float>& bw = P_.block[size_t(b)];
    const BlockView<double>& gw = G_.block[size_t(b)];
    const BlockTape& bt = k.tape[size_t(b)];
    const float* z2 = (b + 1 < a.blocks ? k.tape[size_t(b) + 1].in.data() : k.F.data()) + cP;
    float* dz1 = dz;
    float* da = dz + cP;
    // z1' = z1 ⊙ E + η(z2), E = exp(ρ(z2)):  ∂ρ = dz1' ⊙ z1 ⊙ E,  ∂η = dz1'
    cuda::coupling_rho_grad(B, c, P, dz1, NP, bt.z1.data(), bt.E.data(), Dr, stream_);
    irb_backward(bw.eta, gw.eta, bt.eta, z2, NP, dz1, NP, da, NP);
    irb_backward(bw.rho, gw.rho, bt.rho, z2, NP, Dr, cP, da, NP);
    cuda::coupling_scale(B, c, P, dz1, NP, bt.E.data(), stream_);
    // z2' = z2 + φ(z1): ∂z2 = ∂z2', ∂z1 += φᵀ ∂z2'
    irb_backward(bw.phi, gw.phi, bt.phi, bt.z1.data(), cP, da, NP, dz1, NP);
    // y = mix(z): ∂W += dy·zᵀ, ∂b += Σ dy, ∂z = Wᵀ dy
    cuda::conv1x1_weight_grad(B, N, N, P, dz, NP, bt.in.data(), NP, gw.mix_w, gw.mix_b, k.partial,
                              stream_);
    cuda::conv1x1_backward(B, N, N, P, bw.mix_w, dz, NP, dy, NP, false, stream_);
    std::swap(dz, dy);
  }
  cuda::stem_weight_grad(B, N, H, W, k.xh.data(), dz, NP, G_.stem_w, G_.stem_b, k.partial,
                         stream_);
  MGHF_CUDA_CHECK(cudaEventRecord(ev_[4], stream_));
}

StepStats CudaTrainerImpl::collect(int B) const {
  Work& k = wk_;
  MGHF_CUDA_CHECK(cudaMemcpyAsync(k.host_loss.data(), k.loss.data(), size_t(B) * sizeof(double),
                                  cudaMemcpyDeviceToHost, stream_));
  MGHF_CUDA_CHECK(cudaMemcpyAsync(k.host_correct.data(), k.correct.data(),
                                  size_t(B) * sizeof(int), cudaMemcpyDeviceToHost, stream_));
  MGHF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  StepStats st;
  double sum = 0;
  for (int b = 0; b < B; ++b) {
    sum += k.host_loss[size_t(b)];
    st.correct += k.host_correct[size_t(b)];
  }
  st.loss = sum / double(B);
  return st;
}

StepStats CudaTrainerImpl::step(const float* x, const int* labels, int B, int H, int W,
                                const CancelFlag* cancel) {
  std::lock_guard<std::mutex> lock(mutex_);
  throw_if_cancelled(cancel);
  DeviceScope scope(device_);
  last_times.clear();
  prepare(x, labels, B, H, W);
  MGHF_CUDA_CHECK(cudaMemsetAsync(g_.data(), 0, total_ * sizeof(double), stream_));
  forward(true);
  backward();
  MGHF_CUDA_CHECK(cudaMemsetAsync(wk_.flag.data(), 0, sizeof(int), stream_));
  cuda::flag_nonfinite(int64_t(total_), g_.data(), wk_.flag.data(), stream_);
  int flag = 0;
  MGHF_CUDA_CHECK(
      cudaMemcpyAsync(&flag, wk_.flag.data(), sizeof(int), cudaMemcpyDeviceToHost, stream_));
  const StepStats st = collect(B);  // synchronises
  throw_if_cancelled(cancel);        // before the update: the state stays untouched
  if (!std::isfinite(st.loss))
    throw Error("E_NONFINITE", "the loss is not finite (" + std::to_string(st.loss) +
                                   "); no update was made");
  if (flag) {
    std::vector<double> g(total_);
    MGHF_CUDA_CHECK(cudaMemcpyAsync(g.data(), g_.data(), total_ * sizeof(double),
                                    cudaMemcpyDeviceToHost, stream_));
    MGHF_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (const Slot& s : slots_)
      for (size_t i = 0; i < s.size; ++i)
        if (!std::isfinite(g[s.offset + i]))
          throw Error("E_NONFINITE", "the gradient of " + s.name + " is not finite at index " +
                                         std::to_string(i) + "; no update was made");
  }
  const double lr = current_lr();
  const double t = double(steps + 1);
  const double bc1 = 1.0 - std::pow(config.beta1, t), bc2 = 1.0 - std::pow(config.beta2, t);
  cuda::adam_update(int64_t(total_), p_.data(), m_.data(), v_.data(), g_.data(), lr, config.beta1,
                    config.beta2, config.eps, bc1, bc2, stream_);
  MGHF_CUDA_CHECK(cudaEventRecord(ev_[5], stream_));
  MGHF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  host_current_ = false;
  ++steps;
  // ev_[4] → ev_[5] includes the check and the loss download before Adam.
  const char* names[] = {"dfe_forward", "head_forward", "head_backward", "dfe_backward", "adam"};
  for (int i = 0; i < 5; ++i) {
    float ms = 0;
    MGHF_CUDA_CHECK(cudaEventElapsedTime(&ms, ev_[i], ev_[i + 1]));
    last_times.emplace_back(names[i], double(ms));
  }
  return st;
}

StepStats CudaTrainerImpl::evaluate(const float* x, const int* labels, int B, int H, int W,
                                    const CancelFlag* cancel) const {
  std::lock_guard<std::mutex> lock(mutex_);
  throw_if_cancelled(cancel);
  DeviceScope scope(device_);
  prepare(x, labels, B, H, W);
  forward(false);
  return collect(B);
}

}  // namespace

std::unique_ptr<CudaTrainer> make_cuda_trainer(int device, DfeWeights<float> dfe,
                                               HeadWeights<float> head, const TrainConfig& config) {
  const CudaStatus st = cuda_status(device);
  if (!st.available) throw Error("E_UNSUPPORTED", "CUDA is not usable: " + st.reason);
  return std::make_unique<CudaTrainerImpl>(device, std::move(dfe), std::move(head), config);
}

}  // namespace mghf
