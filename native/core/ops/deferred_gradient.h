// How the loss composition (loss_ops.cpp) gets ∂L/∂S without an N-map buffer of its own, on host
// tensors. The term ops (mseTerm, csc, lip) each add their term's gradient into a dS accumulator
// by default (the public semantics). With the internal attr `overS`, the term op that reads S
// last writes the whole ∂L/∂S over S instead, map by map after its last read of that map
// (loss.h's assemble_gradient_map), adding the gradients of the terms before it, which the
// composition kept small: L_n's as its scale alone (attr `nScale`: kn·(S − G) is formed at
// assembly) and the CSC term's as the M kept maps only (the csc op's attr `keptGrad`: output
// dKept [B, M, H, W], by kept map, with the `selected` it ran with). S must be handed over (an
// op's own output, as in the composition); a borrowed S is copied first (writable), so a
// caller's array is never written. Without this the composition held ∂L/∂S in a buffer of its
// own, one N-map tensor more than the fused loss: +19 % peak at 256², +22 % at 512².
#pragma once
#include <vector>

#include "loss.h"
#include "ops/op.h"

namespace mghf {
namespace ops {

struct DeferredGradient {
  float kn = 0;                  // L_n's gradient scale (0: no L_n term)
  const float* kept = nullptr;   // the CSC gradient of the kept maps [B, M, P], or null
  std::vector<int> kept_index;   // [B·N]: a map's index among its sample's kept maps, −1 if none
  int N = 0, M = 0;
  int64_t P = 0;

  // attrs: nScale (Γ1 of the deferred L_n; 0 or absent: none), on S of dims [B, N, H, W].
  DeferredGradient(const Attrs& attrs, const std::vector<int64_t>& dims)
      : N(int(dims[1])), P(dims[2] * dims[3]) {
    kn = n_gradient_scale<float>(attrs.number("nScale", 0), dims[0] * dims[1] * P);
  }
  // The CSC gradient of the kept maps: kept [B, M, P], sel [B·M] the channel of each.
  void keep(const float* k, const int32_t* sel, int B, int m) {
    kept = k;
    M = m;
    kept_index.assign(size_t(B) * N, -1);
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < M; ++i) kept_index[size_t(b) * N + size_t(sel[size_t(b) * M + i])] = i;
  }
  // ∂L/∂S of map bk over S's map, lipg the LIP gradient of that map (or null).
  void write(float* S, const float* G, int64_t bk, const float* lipg) const {
    const int i = kept_index.empty() ? -1 : kept_index[size_t(bk)];
    const float* cp = i < 0 ? nullptr : kept + (bk / N * M + i) * P;
    assemble_gradient_map<float>(S + bk * P, G + bk * P, P, kn, cp, lipg);
  }
};

inline bool over_s(const Attrs& attrs, bool grad) { return grad && attrs.flag("overS", false); }

// S at input 1, handed over to be written (a copy when borrowed): the dS the op returns. The op's
// own dS input (at ds_input) must be absent: the gradient so far is deferred (nScale, dKept).
inline Value take_s_for_gradient(std::vector<Value>& in, size_t ds_input, const std::string& op) {
  if (present(in, ds_input)) op_fail(op, "overS takes no dS input: the gradient so far is deferred (nScale, dKept)");
  return writable(in[1]);
}

}  // namespace ops
}  // namespace mghf
