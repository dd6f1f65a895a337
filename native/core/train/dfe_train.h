// The DFE (SPEC §2) for pretraining: a forward over one image that keeps what
// the weight gradients need, and a backward giving ∂L/∂(every DFE weight).
// Written once over a kernel set with weight gradients (ReferenceTrainKernels<T>
// or FastTrainKernels), like dfe.h.
//
// What is kept rather than recomputed: the normalised input x̂ (stem), each
// block's input z (mix), z1 and exp(ρ) of the coupling, and for every IRB its
// ReLU6 outputs r1 (depthwise input), r2 (project input) and both masks. The
// IRB inputs need no copy: φ reads z1 (kept), ρ and η read z2 after φ, which is
// the second half of the block's output (the next block's input, or F). One
// image at a time (the loss is a sum over images), so this tape is about
// 6·h·H·W floats per block: ~100 MB at N = 128, 128×128, reused image after image.
#pragma once
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "buffer.h"
#include "dfe.h"
#include "dfe_weights.h"

namespace mghf {

template <class T>
struct IrbTrainTape {
  Buffer<T> r1, r2;        // [h, P] ReLU6 outputs
  Buffer<uint8_t> m1, m2;  // [h, P] ReLU6 masks
};

template <class T>
struct BlockTrainTape {
  Buffer<T> in;     // [N, P] the block's input (stem output for block 0)
  Buffer<T> z1, E;  // [c, P] z1 before the coupling, exp(ρ(z2))
  IrbTrainTape<T> phi, rho, eta;
};

template <class T>
struct DfeTrainTape {
  Buffer<T> xh;  // [3, P]
  std::vector<BlockTrainTape<T>> block;
  Buffer<T> scratch[3];  // forward: ρ, η outputs; backward: ∂ρ, two [h, P] gradients

  void resize(const DfeArchitecture& a, int64_t P) {
    const size_t N = size_t(a.channels), c = size_t(a.half()), h = size_t(a.hidden());
    xh.resize(3 * size_t(P));
    block.resize(size_t(a.blocks));
    for (auto& b : block) {
      b.in.resize(N * P);
      b.z1.resize(c * P);
      b.E.resize(c * P);
      for (IrbTrainTape<T>* t : {&b.phi, &b.rho, &b.eta}) {
        t->r1.resize(h * P);
        t->r2.resize(h * P);
        t->m1.resize(h * P);
        t->m2.resize(h * P);
      }
    }
    for (auto& s : scratch) s.resize(h * P);
  }
};

namespace detail {

// out (+)= IRB(in), unfused, keeping r1, r2 and the masks (layout [h, P]).
template <class T, class Kn>
void irb_train_forward(const IrbWeights<T>& w, int c, int h, int H, int W, const T* in, T* out,
                       bool accumulate, IrbTrainTape<T>& t) {
  const int64_t P = int64_t(H) * W;
  Kn::conv1x1_relu6(h, c, P, w.expand.data(), in, t.r1.data(), t.m1.data());
  Kn::depthwise_relu6(h, H, W, w.depthwise.data(), t.r1.data(), t.r2.data(), t.m2.data());
  Kn::conv1x1(c, h, P, w.project.data(), nullptr, t.r2.data(), out, accumulate);
}

// din += IRBᵀ(dout) and the weight gradients of the three convolutions.
// g1, g2 are [h, P] scratch.
template <class T, class Kn, class G>
void irb_train_backward(const IrbWeights<T>& w, int c, int h, int H, int W,
                        const IrbTrainTape<T>& t, const T* in, const T* dout, T* din,
                        IrbWeights<G>& grad, T* g1, T* g2) {
  const int64_t P = int64_t(H) * W;
  Kn::conv1x1_weight_grad(c, h, P, dout, t.r2.data(), grad.project.data(), nullptr);
  Kn::conv1x1_backward(c, h, P, w.project.data(), dout, g2, false);
  // g2 ← m2 ⊙ g2 (∂ of the depthwise output), g1 = m1 ⊙ dwᵀ(g2) (∂ of the expand output).
  Kn::depthwise_relu6_backward(h, H, W, w.depthwise.data(), t.m2.data(), t.m1.data(), g2, g1);
  Kn::depthwise_weight_grad(h, H, W, g2, t.r1.data(), grad.depthwise.data());
  Kn::conv1x1_weight_grad(h, c, P, g1, in, grad.expand.data(), nullptr);
  Kn::conv1x1_backward(h, c, P, w.expand.data(), g1, din, true);
}

}  // namespace detail

// F [N, P] = DFE(x [3, P] in [0, 1]) for one image, recording the tape.
template <class T, class Kn>
void dfe_train_forward(const DfeWeights<T>& w, const T* x, int H, int W, DfeTrainTape<T>& tape,
                       T* F) {
  const DfeArchitecture& a = w.arch;
  const int N = a.channels, c = a.half(), h = a.hidden();
  const int64_t P = int64_t(H) * W, cP = int64_t(c) * P;
  tape.resize(a, P);
  for (int ch = 0; ch < 3; ++ch) {
    const T mean = T(kMean[ch]), sd = T(kStd[ch]);
    T* dst = tape.xh.data() + ch * P;
    const T* src = x + ch * P;
    detail::elementwise(P, [&](int64_t i) { dst[i] = (src[i] - mean) / sd; });
  }
  Kn::stem(N, H, W, w.stem_weight.data(), w.stem_bias.data(), tape.xh.data(),
           tape.block[0].in.data());
  T* R = tape.scratch[0].data();
  T* Eta = tape.scratch[1].data();
  for (int k = 0; k < a.blocks; ++k) {
    const BlockWeights<T>& bw = w.block[k];
    BlockTrainTape<T>& bt = tape.block[k];
    T* y = k + 1 < a.blocks ? tape.block[k + 1].in.data() : F;
    Kn::conv1x1(N, N, P, bw.mix_weight.data(), bw.mix_bias.data(), bt.in.data(), y, false);
    T* z1 = y;
    T* z2 = y + cP;
    detail::irb_train_forward<T, Kn>(bw.phi, c, h, H, W, z1, z2, true, bt.phi);
    detail::irb_train_forward<T, Kn>(bw.rho, c, h, H, W, z2, R, false, bt.rho);
    detail::irb_train_forward<T, Kn>(bw.eta, c, h, H, W, z2, Eta, false, bt.eta);
    detail::coupling_forward<T, Kn>(cP, R, Eta, z1, bt.z1.data(), bt.E.data());
  }
}

// grad += ∂L/∂(DFE weights) given dF = ∂L/∂F [N, P] (used as scratch), the
// tape and F of dfe_train_forward on the same image. `other` is [N, P] scratch.
template <class T, class Kn, class G>
void dfe_train_backward(const DfeWeights<T>& w, DfeTrainTape<T>& tape, const T* F, T* dF,
                        T* other, int H, int W, DfeWeights<G>& grad) {
  const DfeArchitecture& a = w.arch;
  const int N = a.channels, c = a.half(), h = a.hidden();
  const int64_t P = int64_t(H) * W, cP = int64_t(c) * P;
  T* dz = dF;
  T* dy = other;
  T* Dr = tape.scratch[0].data();
  T* g1 = tape.scratch[1].data();
  T* g2 = tape.scratch[2].data();
  for (int k = a.blocks - 1; k >= 0; --k) {
    const BlockWeights<T>& bw = w.block[k];
    BlockWeights<G>& gw = grad.block[k];
    const BlockTrainTape<T>& bt = tape.block[k];
    const T* z1 = bt.z1.data();
    const T* E = bt.E.data();
    const T* z2 = (k + 1 < a.blocks ? tape.block[k + 1].in.data() : F) + cP;  // after φ
    T* dz1 = dz;      // ∂L/∂z1 after the coupling, becomes ∂L/∂z1 before it
    T* da = dz + cP;  // ∂L/∂z2 after φ
    // z1' = z1 ⊙ E + η(z2), E = exp(ρ(z2)):  ∂ρ = dz1' ⊙ z1 ⊙ E,  ∂η = dz1'
    detail::elementwise(cP, [&](int64_t i) { Dr[i] = dz1[i] * z1[i] * E[i]; });
    detail::irb_train_backward<T, Kn>(bw.eta, c, h, H, W, bt.eta, z2, dz1, da, gw.eta, g1, g2);
    detail::irb_train_backward<T, Kn>(bw.rho, c, h, H, W, bt.rho, z2, Dr, da, gw.rho, g1, g2);
    detail::elementwise(cP, [&](int64_t i) { dz1[i] *= E[i]; });
    // z2' = z2 + φ(z1): ∂z2 = ∂z2', ∂z1 += φᵀ ∂z2'
    detail::irb_train_backward<T, Kn>(bw.phi, c, h, H, W, bt.phi, z1, da, dz1, gw.phi, g1, g2);
    // y = mix(z): ∂W += dy·zᵀ, ∂b += Σ dy, ∂z = Wᵀ dy
    Kn::conv1x1_weight_grad(N, N, P, dz, bt.in.data(), gw.mix_weight.data(), gw.mix_bias.data());
    Kn::conv1x1_backward(N, N, P, bw.mix_weight.data(), dz, dy, false);
    std::swap(dz, dy);
  }
  // The stem's input gradient is not needed: x is data.
  Kn::stem_weight_grad(N, H, W, tape.xh.data(), dz, grad.stem_weight.data(),
                       grad.stem_bias.data());
}

}  // namespace mghf
