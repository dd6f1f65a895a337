// The MGHF loss (SPEC §3–7) and its gradient with respect to sr.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "buffer.h"
#include "csc.h"
#include "dfe.h"
#include "entropy.h"
#include "error.h"
#include "lip.h"
#include "lip_params.h"
#include "numeric_checks.h"

namespace mghf {

enum class Variant { N, C };

// Every constant of SPEC §7 with its default. The TypeScript layer validates
// and fills these; the core trusts them.
struct LossOptions {
  Variant variant = Variant::C;
  InputRange range = InputRange::Unit;
  double gamma1 = 2, gamma2 = 1.5, gamma3 = 1e-3;        // Γ
  double beta1 = 0.1333, beta2 = 1, beta3 = 0.1333;      // β
  int M = 64;
  double alpha = 1, gamma = 1;
  std::vector<int> selected;  // [B×M] ascending per row; empty: top-M by importance
  LipOptions lip;
  bool details = false;  // return importance and selection
  bool profile = false;  // return per-stage times
  // Raised by another thread to abandon the call (E_ABORTED), checked between
  // stages, DFE blocks, LIP maps and Sinkhorn iterations.
  const CancelFlag* cancel = nullptr;
  // false: the loss and its parts only. No tape, no ∂L/∂S, no backward: less than half the work
  // of the DFE and LIP stages and much less memory (evaluation, `score`).
  bool grad = true;
};

struct Shape {
  int B = 0, C = 3, H = 0, W = 0;
  int64_t size() const { return int64_t(B) * C * H * W; }
};

template <class T>
struct LossResult {
  double loss = 0;
  // Unweighted parts; a skipped part stays 0 and is listed in `skipped`.
  double n = 0, mse = 0, corr = 0, gram = 0, csc = 0, lip = 0;
  std::vector<std::string> skipped;
  Buffer<T> grad;                   // ∂L/∂sr, the shape of sr (empty when options.grad is false)
  std::vector<double> importance;   // [B×N] (details, CSC on)
  std::vector<int> selected;        // [B×M] (details, CSC on)
  std::vector<std::pair<std::string, double>> timings;  // ms per stage (profile)
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

namespace detail {

class Stopwatch {
 public:
  explicit Stopwatch(std::vector<std::pair<std::string, double>>* out) : out_(out) {}
  void lap(const char* name) {
    if (!out_) return;
    const auto now = std::chrono::steady_clock::now();
    out_->emplace_back(name, std::chrono::duration<double, std::milli>(now - last_).count());
    last_ = now;
  }

 private:
  std::vector<std::pair<std::string, double>>* out_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace detail

// Which terms of SPEC §7 a call computes. A Γ or β of 0 skips its term (no
// work, reported as 0 and listed in `skipped`); variant 'n' is L_n alone, with
// no Γ1. Shared by every backend so they skip exactly the same parts.
struct TermPlan {
  bool c;
  double g1, g2, g3;
  bool do_n, do_csc, do_lip, b1, b2, b3;
  std::vector<std::string> skipped;
};

inline TermPlan plan_terms(const LossOptions& opt) {
  TermPlan p;
  p.c = opt.variant == Variant::C;
  p.g1 = p.c ? opt.gamma1 : 1.0;
  p.g2 = p.c ? opt.gamma2 : 0.0;
  p.g3 = p.c ? opt.gamma3 : 0.0;
  p.do_n = p.g1 != 0;
  p.do_csc = p.g2 != 0;
  p.do_lip = p.g3 != 0;
  p.b1 = p.do_csc && opt.beta1 != 0;
  p.b2 = p.do_csc && opt.beta2 != 0;
  p.b3 = p.do_csc && opt.beta3 != 0;
  if (!p.do_n) p.skipped.push_back("n");
  if (!p.b1) p.skipped.push_back("mse");
  if (!p.b2) p.skipped.push_back("corr");
  if (!p.b3) p.skipped.push_back("gram");
  if (!p.do_csc) p.skipped.push_back("csc");
  if (!p.do_lip) p.skipped.push_back("lip");
  return p;
}

// The options and weights an E_NUMERIC message names (numeric_checks.h).
template <class T>
NumericContext numeric_context(const LossOptions& o, const DfeWeights<T>& w) {
  NumericContext c;
  c.gamma1 = o.gamma1;
  c.gamma2 = o.gamma2;
  c.gamma3 = o.gamma3;
  c.beta1 = o.beta1;
  c.beta2 = o.beta2;
  c.beta3 = o.beta3;
  c.alpha = o.alpha;
  c.gamma = o.gamma;
  c.tau = o.lip.monce.tau;
  c.eps_ot = o.lip.monce.eps_ot;
  c.Q = o.lip.monce.Q;
  c.weights_hint = largest_weight_hint(w);
  return c;
}

// ∂L/∂S of one map of P values, written over S's map once nothing reads it any more: kn·(S − G)
// (L_n's gradient, kn = Γ1·2/(B·N·H·W), 0 without the term) + the CSC gradient of the map when it
// is kept (cp, else null) + the LIP gradient (lipg, else null), added in this order. The term op
// that reads S last runs it (ops/deferred_gradient.h, attr overS), map by map after its last read,
// so the loss composed from the ops needs no N-map ∂L/∂S buffer besides G and S: the peak of
// issue 14's fused loss (bench/NOTES.md "One composition of the loss").
template <class T>
void assemble_gradient_map(T* sp, const T* gp, int64_t P, T kn, const T* cp, const T* lipg) {
  for (int64_t p = 0; p < P; ++p) {
    T d = (sp[p] - gp[p]) * kn;
    if (cp) d += cp[p];
    if (lipg) d += lipg[p];
    sp[p] = d;
  }
}

// kn of assemble_gradient_map (and the mseTerm op's gradient scale): Γ1·2/(B·N·H·W) in T.
template <class T>
T n_gradient_scale(double gamma1, int64_t count) {
  return T(gamma1 * 2.0 / double(count));
}

}  // namespace mghf
