// The MGHF loss of SPEC §3 and §7 and its gradient with respect to sr.
// Variant 'n' only for now; 'c' (SPEC §4–6) raises E_UNSUPPORTED.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "buffer.h"
#include "dfe.h"
#include "error.h"

namespace mghf {

enum class Variant { N, C };

struct LossOptions {
  Variant variant = Variant::C;
  InputRange range = InputRange::Unit;
};

struct Shape {
  int B = 0, C = 3, H = 0, W = 0;
  int64_t size() const { return int64_t(B) * C * H * W; }
};

template <class T>
struct LossResult {
  double loss = 0;
  double n = 0;                      // unweighted L_n
  std::vector<std::string> skipped;  // parts not computed (reported as 0)
  Buffer<T> grad;                    // ∂L/∂sr, the shape of sr
};

// Σ (a−b)² in double: the sum has B·N·H·W terms (SPEC §8: > 4096 terms).
template <class T>
double sum_squared_difference(const T* a, const T* b, int64_t n) {
  const int64_t chunk = 1 << 15;
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<double> partial(size_t(chunks), 0.0);
  parallel_for(chunks, [&](int64_t c) {
    const int64_t i0 = c * chunk, i1 = std::min(n, i0 + chunk);
    double acc = 0;
    for (int64_t i = i0; i < i1; ++i) {
      const double d = double(a[i]) - double(b[i]);
      acc += d * d;
    }
    partial[size_t(c)] = acc;
  });
  double total = 0;
  for (double p : partial) total += p;  // fixed order: same result for any thread count
  return total;
}

template <class T, class Kn>
LossResult<T> mghf_loss(const DfeWeights<T>& w, const T* sr, const T* gt, const Shape& s,
                        const LossOptions& opt) {
  if (opt.variant != Variant::N)
    throw Error("E_UNSUPPORTED",
                "variant 'c' (MGHF-c) is not implemented yet; pass { variant: 'n' }");
  const int N = w.arch.channels;
  const int64_t count = int64_t(s.B) * N * s.H * s.W;
  Buffer<T> G{size_t(count)}, S{size_t(count)};
  dfe_forward<T, Kn>(w, gt, s.B, s.H, s.W, opt.range, G.data(), nullptr);
  DfeTape<T> tape;
  dfe_forward<T, Kn>(w, sr, s.B, s.H, s.W, opt.range, S.data(), &tape);

  LossResult<T> r;
  r.n = sum_squared_difference(S.data(), G.data(), count) / double(count);
  r.loss = r.n;
  r.skipped = {"mse", "corr", "gram", "csc", "lip"};
  // ∂L_n/∂S = 2 (S − G) / (B·N·H·W), written over G, which is no longer needed.
  const T scale = T(2.0 / double(count));
  T* dS = G.data();
  const T* Sp = S.data();
  detail::elementwise(count, [&](int64_t i) { dS[i] = (Sp[i] - dS[i]) * scale; });
  r.grad.resize(size_t(s.size()));
  dfe_backward<T, Kn>(w, tape, dS, s.B, s.H, s.W, opt.range, r.grad.data());
  return r;
}

}  // namespace mghf
