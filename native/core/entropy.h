// Entropy-based channel importance, top-M selection and the reweighting of
// SPEC §4. The entropy is piecewise constant in the features, so I, the
// selection and the weights are constants for the backward (SPEC §4): only the
// gather-and-scale (w_i · F[b, sel_i]) carries a gradient, handled in csc.h.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "parallel.h"

namespace mghf {

// Normalised 256-bin histogram entropy of one map over its own min–max range.
// Binning is done in float32 with IEEE division exactly as SPEC §4 writes it,
// whatever T is, so a double-precision run bins the same way.
template <class T, class Kn>
double map_entropy(const T* x, int64_t n) {
  float lo = float(x[0]), hi = float(x[0]);
  for (int64_t i = 1; i < n; ++i) {
    const float v = float(x[i]);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  if (!(hi > lo)) return 1.0;  // a constant map carries no information
  int64_t count[256] = {0};
  Kn::histogram256(x, n, lo, hi - lo, count);
  double h = 0;
  for (int k = 0; k < 256; ++k)
    if (count[k] > 0) {
      const double p = double(count[k]) / double(n);
      h -= p * std::log(p);
    }
  return h / std::log(256.0);
}

// importance [B×N]: I_j = ((1 − Ĥ(G[b,j])) + (1 − Ĥ(S[b,j]))) / 2.
template <class T, class Kn>
std::vector<double> channel_importance(const T* G, const T* S, int B, int N, int64_t P) {
  std::vector<double> hg(size_t(B) * N), hs(size_t(B) * N), imp(size_t(B) * N);
  parallel_for(int64_t(2) * B * N, [&](int64_t t) {
    const int64_t i = t / 2;
    if (t % 2 == 0) hg[size_t(i)] = map_entropy<T, Kn>(G + i * P, P);
    else hs[size_t(i)] = map_entropy<T, Kn>(S + i * P, P);
  });
  for (size_t i = 0; i < imp.size(); ++i) imp[i] = ((1.0 - hg[i]) + (1.0 - hs[i])) / 2.0;
  return imp;
}

// The M channels of largest importance, ties to the smaller index, listed in
// ascending channel order.
inline std::vector<int> top_m(const double* importance, int N, int M) {
  std::vector<int> idx(static_cast<size_t>(N));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int a, int b) { return importance[a] > importance[b]; });
  idx.resize(size_t(M));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// The kept channels and their weights (SPEC §4), [B×M] each: per sample the
// caller's `selected` when given (B·M indices), else top_m of its importances;
// weight = (1 + α·importance)^γ. Shared by the CPU and CUDA backends.
struct ChannelSelection {
  std::vector<int> sel;
  std::vector<double> weights;
};
inline ChannelSelection select_channels(const std::vector<double>& imp, int B, int N, int M,
                                        const std::vector<int>& selected, double alpha,
                                        double gamma) {
  ChannelSelection c;
  c.sel.resize(size_t(B) * M);
  for (int b = 0; b < B; ++b) {
    if (!selected.empty()) {
      std::copy(selected.begin() + size_t(b) * M, selected.begin() + size_t(b + 1) * M,
                c.sel.begin() + size_t(b) * M);
    } else {
      std::vector<int> top = top_m(imp.data() + size_t(b) * N, N, M);
      std::copy(top.begin(), top.end(), c.sel.begin() + size_t(b) * M);
    }
  }
  c.weights.resize(c.sel.size());
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < M; ++i)
      c.weights[size_t(b) * M + i] =
          std::pow(1.0 + alpha * imp[size_t(b) * N + c.sel[size_t(b) * M + i]], gamma);
  return c;
}

}  // namespace mghf
