// Options of the LIP term (SPEC §6), shared by every backend.
#pragma once
#include <atomic>

namespace mghf {

// Which form of the Sinkhorn iteration monce uses (SPEC §6 "Numerical form").
// Auto picks per map (sinkhorn_in_log_domain); the tests force either form.
enum class SinkhornForm { Auto, Plain, Log };

struct MonceParams {
  double tau = 0.07;    // τ
  double eps_ot = 1.0;  // ε_ot
  double Q = 1.0;
  int iters = 50;       // T_it
  bool sinkhorn_grad = true;
  SinkhornForm form = SinkhornForm::Auto;
  // Raised by another thread to stop the iterations early (an aborted call):
  // monce then returns at once with an unspecified value and the caller throws.
  const std::atomic<bool>* cancel = nullptr;
};

inline bool cancel_requested(const std::atomic<bool>* cancel) {
  return cancel != nullptr && cancel->load(std::memory_order_relaxed);
}

// The plain iteration u ← 1 ⊘ (K·v), v ← 1 ⊘ (Kᵀ·u) on K = exp(C) keeps
// every number of the forward and of its unrolled backward representable
// while |C| stays moderate: from v = 1 the iterates stay within about
// e^(±3·max|C|) and the backward's products within e^(±5·max|C|), far inside
// double's e^±709 at max|C| = 50; and K's entries themselves, e^±50, fit
// float32's normal range (e^±87), where a backend stores K in float (CUDA).
// Past it (small ε_ot: C = sim/ε_ot with |sim| ≤ 1) K overflows or underflows
// and the iteration turns into inf·0 = NaN, so such a map runs in the log
// domain instead: exact in exact arithmetic, but two exponentials per entry
// of K per half-iteration (about 4× the plain form's cost), hence only where
// needed. Every default and golden configuration (ε_ot ≥ 0.5) stays plain,
// bit for bit as before.
constexpr double kPlainSinkhornMaxExponent = 50.0;

// Whether a map runs in the log domain: from the largest |sim_ij| off the
// diagonal (C_ij = sim_ij/ε_ot there) and, with a single patch, the diagonal
// alone (C_ii = −10/ε_ot; with P ≥ 2 its underflow is harmless, each row
// having an off-diagonal entry ≥ e^−max|C| beside it).
inline bool sinkhorn_in_log_domain(const MonceParams& p, int P, double max_abs_offdiag) {
  if (p.form != SinkhornForm::Auto) return p.form == SinkhornForm::Log;
  const double c = P < 2 ? 10.0 / p.eps_ot : max_abs_offdiag / p.eps_ot;
  return !(c <= kPlainSinkhornMaxExponent);  // NaN (a non-finite sim) too
}

struct LipOptions {
  int patch = 32;   // s
  int stride = 16;  // t
  int pmax = 256;   // P_max
  MonceParams monce;
};

}  // namespace mghf
