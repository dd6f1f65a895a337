// The detail feature extractor (SPEC §2): forward, and the backward with
// respect to the input image. Written once over a kernel set (ReferenceKernels<T>
// or FastKernels), so the double-precision reference and the fast float path
// share every line of the model.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "buffer.h"
#include "dfe_weights.h"
#include "numeric_checks.h"
#include "parallel.h"

namespace mghf {

enum class InputRange { Unit, Symmetric };  // [0,1], or [-1,1] mapped by (x+1)/2 (SPEC §1)

constexpr double kMean[3] = {0.485, 0.456, 0.406};
constexpr double kStd[3] = {0.229, 0.224, 0.225};

// What the backward needs from the forward of one image batch: the ReLU6 masks
// of every inverted-residual sub-network, and z1, exp(ρ) of every coupling.
struct IrbTape {
  Buffer<uint8_t> m1, m2;  // B × Kn::irb_mask_bytes(h, H, W)
};
template <class T>
struct BlockTape {
  Buffer<T> z1, E;  // [B, c, P]
  IrbTape phi, rho, eta;
};
template <class T>
struct DfeTape {
  std::vector<BlockTape<T>> block;
};

namespace detail {

constexpr int64_t kElementGrain = 1 << 14;

template <class F>
void elementwise(int64_t n, F&& fn) {
  parallel_range(n, kElementGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) fn(i);
  });
}

// z1 ← z1 ⊙ exp(R) + Eta in chunks across the threads, keeping z1 and exp(R)
// in tz1, tE when they are not null.
template <class T, class Kn>
void coupling_forward(int64_t n, const T* R, const T* Eta, T* z1, T* tz1, T* tE) {
  parallel_range(n, kElementGrain, [&](int64_t i0, int64_t i1) {
    Kn::coupling_forward(i1 - i0, R + i0, Eta + i0, z1 + i0, tz1 ? tz1 + i0 : nullptr,
                         tE ? tE + i0 : nullptr);
  });
}

// out (+)= IRB(in); masks m1, m2 [h, P] are recorded when not null.
template <class T, class Kn>
void irb_forward(const IrbWeights<T>& w, int c, int h, int H, int W, const T* in, T* out,
                 bool accumulate, uint8_t* m1, uint8_t* m2) {
  Kn::irb_forward(c, h, H, W, w.expand.data(), w.depthwise.data(), w.project.data(), in, out,
                  accumulate, m1, m2);
}

// din += ∂IRB/∂in ᵀ · dout.
template <class T, class Kn>
void irb_backward(const IrbWeights<T>& w, int c, int h, int H, int W, const uint8_t* m1,
                  const uint8_t* m2, const T* dout, T* din) {
  Kn::irb_backward(c, h, H, W, w.expand.data(), w.depthwise.data(), w.project.data(), m1, m2,
                   dout, din);
}

}  // namespace detail

// Elements of the scratch dfe_forward needs (one sample's worth): the first block writes its output
// directly (F, or a block buffer) and keeps ρ(z2), η(z2) in the scratch, ρ in the tape's exp ρ slot
// when there is a tape; more blocks need a second N-map buffer to alternate with.
template <class T>
int64_t dfe_scratch_elems(const DfeArchitecture& a, int H, int W, bool with_tape) {
  const int64_t P = int64_t(H) * W;
  if (a.blocks > 1) return int64_t(a.channels) * P;
  return (with_tape ? int64_t(1) : int64_t(2)) * a.half() * P;
}

// F [B, N, H, W] = DFE(x [B, 3, H, W]). With a tape, records what
// dfe_backward needs. A raised `cancel` stops it between blocks (E_ABORTED).
// `scratch`, when not null, is dfe_scratch_elems elements the caller has no
// use for during the call (the loss lends buffers that are filled only later).
template <class T, class Kn>
void dfe_forward(const DfeWeights<T>& w, const T* x, int B, int H, int W, InputRange range, T* F,
                 DfeTape<T>* tape, const CancelFlag* cancel = nullptr, T* scratch = nullptr) {
  const DfeArchitecture& a = w.arch;
  const int N = a.channels, c = a.half(), h = a.hidden();
  const int64_t P = int64_t(H) * W, cP = int64_t(c) * P, mb = Kn::irb_mask_bytes(h, H, W);
  if (tape) {
    tape->block.resize(a.blocks);
    for (auto& bt : tape->block) {
      bt.z1.resize(size_t(B) * cP);
      bt.E.resize(size_t(B) * cP);
      for (IrbTape* it : {&bt.phi, &bt.rho, &bt.eta}) {
        it->m1.resize(size_t(B * mb));
        it->m2.resize(size_t(B * mb));
      }
    }
  }
  // The stem output is never stored whole (Kn::stem_mix feeds it to block 0's mix slab by slab).
  // Block outputs before the last alternate between y and the scratch; a block's ρ and η live in
  // its input buffer, dead once the mix has read it, block 0's in the scratch.
  const int64_t need = dfe_scratch_elems<T>(a, H, W, tape != nullptr);
  Buffer<T> xh{size_t(3) * P}, own{scratch ? 0 : size_t(need)}, y{a.blocks > 1 ? size_t(N) * P : 0};
  T* const sbuf = scratch ? scratch : own.data();
  for (int b = 0; b < B; ++b) {
    const T* xb = x + int64_t(b) * 3 * P;
    for (int ch = 0; ch < 3; ++ch) {
      const T mean = T(kMean[ch]), sd = T(kStd[ch]);
      T* dst = xh.data() + ch * P;
      const T* src = xb + ch * P;
      if (range == InputRange::Symmetric)
        detail::elementwise(P, [&](int64_t i) { dst[i] = ((src[i] + T(1)) / T(2) - mean) / sd; });
      else
        detail::elementwise(P, [&](int64_t i) { dst[i] = (src[i] - mean) / sd; });
    }
    T* Fb = F + int64_t(b) * N * P;
    T* zp = nullptr;  // block k's input; null for block 0 (the stem, fused into its mix)
    for (int k = 0; k < a.blocks; ++k) {
      throw_if_cancelled(cancel);
      T* yp = k == a.blocks - 1 ? Fb : (k % 2 == 0 ? y.data() : sbuf);
      const BlockWeights<T>& bw = w.block[k];
      BlockTape<T>* bt = tape ? &tape->block[k] : nullptr;
      // Masks only when a backward will follow.
      auto m1p = [&](IrbTape* it) { return it ? it->m1.data() + b * mb : nullptr; };
      auto m2p = [&](IrbTape* it) { return it ? it->m2.data() + b * mb : nullptr; };
      if (k == 0)
        Kn::stem_mix(N, H, W, w.stem_weight.data(), w.stem_bias.data(), bw.mix_weight.data(),
                     bw.mix_bias.data(), xh.data(), yp);
      else
        Kn::conv1x1(N, N, P, bw.mix_weight.data(), bw.mix_bias.data(), zp, yp, false);
      T* z1 = yp;
      T* z2 = yp + cP;
      // z2 ← z2 + φ(z1)
      detail::irb_forward<T, Kn>(bw.phi, c, h, H, W, z1, z2, true, m1p(bt ? &bt->phi : nullptr),
                                 m2p(bt ? &bt->phi : nullptr));
      // z1 ← z1 ⊙ exp(ρ(z2)) + η(z2); ρ goes straight to the tape's exp ρ slot (exp in place).
      T* tz1 = bt ? bt->z1.data() + b * cP : nullptr;
      T* tE = bt ? bt->E.data() + b * cP : nullptr;
      T* room = k == 0 ? sbuf : zp;
      T* Rp = tE ? tE : room;
      T* Ep = tE ? room : room + cP;
      detail::irb_forward<T, Kn>(bw.rho, c, h, H, W, z2, Rp, false,
                                 m1p(bt ? &bt->rho : nullptr), m2p(bt ? &bt->rho : nullptr));
      detail::irb_forward<T, Kn>(bw.eta, c, h, H, W, z2, Ep, false,
                                 m1p(bt ? &bt->eta : nullptr), m2p(bt ? &bt->eta : nullptr));
      detail::coupling_forward<T, Kn>(cP, Rp, Ep, z1, tz1, tE);
      zp = yp;
    }
  }
}

// dx [B, 3, H, W] = (∂F/∂x)ᵀ · dF, using the tape of the forward on x.
// dF is used as scratch (saves a copy of the largest tensor).
template <class T, class Kn>
void dfe_backward(const DfeWeights<T>& w, const DfeTape<T>& tape, T* dF, int B, int H, int W,
                  InputRange range, T* dx, const CancelFlag* cancel = nullptr) {
  const DfeArchitecture& a = w.arch;
  const int N = a.channels, c = a.half(), h = a.hidden();
  const int64_t P = int64_t(H) * W, cP = int64_t(c) * P, mb = Kn::irb_mask_bytes(h, H, W);
  // ∂ρ (Dr) lives in the half of `other` that the 1×1 mix's backward overwrites only after the
  // last read of ∂ρ.
  Buffer<T> other{size_t(N) * P}, dxh{size_t(3) * P};
  for (int b = 0; b < B; ++b) {
    T* dz = dF + int64_t(b) * N * P;
    T* dy = other.data();
    for (int k = a.blocks - 1; k >= 0; --k) {
      throw_if_cancelled(cancel);
      const BlockWeights<T>& bw = w.block[k];
      const BlockTape<T>& bt = tape.block[k];
      const T* z1 = bt.z1.data() + b * cP;
      const T* E = bt.E.data() + b * cP;
      T* dz1 = dz;       // ∂L/∂z1 after the coupling, becomes ∂L/∂z1 before it
      T* da = dz + cP;   // ∂L/∂z2 after φ
      T* Drp = dy;
      // z1' = z1 ⊙ E + η(a), E = exp(ρ(a)):  ∂ρ = dz1' ⊙ z1 ⊙ E,  ∂η = dz1'
      detail::elementwise(cP, [&](int64_t i) { Drp[i] = dz1[i] * z1[i] * E[i]; });
      detail::irb_backward<T, Kn>(bw.eta, c, h, H, W, bt.eta.m1.data() + b * mb,
                                  bt.eta.m2.data() + b * mb, dz1, da);
      detail::irb_backward<T, Kn>(bw.rho, c, h, H, W, bt.rho.m1.data() + b * mb,
                                  bt.rho.m2.data() + b * mb, Drp, da);
      detail::elementwise(cP, [&](int64_t i) { dz1[i] *= E[i]; });
      // a = z2 + φ(z1): ∂z2 = ∂a, ∂z1 += φᵀ ∂a
      detail::irb_backward<T, Kn>(bw.phi, c, h, H, W, bt.phi.m1.data() + b * mb,
                                  bt.phi.m2.data() + b * mb, da, dz1);
      Kn::conv1x1_backward(N, N, P, bw.mix_weight.data(), dz, dy, false);
      std::swap(dz, dy);
    }
    Kn::stem_backward(N, H, W, w.stem_weight.data(), dz, dxh.data());
    T* dxb = dx + int64_t(b) * 3 * P;
    for (int ch = 0; ch < 3; ++ch) {
      const T scale = (range == InputRange::Symmetric ? T(0.5) : T(1)) / T(kStd[ch]);
      const T* src = dxh.data() + ch * P;
      T* dst = dxb + ch * P;
      detail::elementwise(P, [&](int64_t i) { dst[i] = src[i] * scale; });
    }
  }
}

}  // namespace mghf
