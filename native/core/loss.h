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

// The CPU backend's loss. Its stages are the very functions the CPU ops call
// (ops/*_ops.cpp), so the loss composed from the ops (ops/loss_ops.h's
// compose_loss, the CUDA backend's only loss) gives its bits on the CPU
// (test/loss-composed.test.ts); it stays fused here because it writes ∂L/∂S over
// S map by map after LIP's last read of that map, which a chain of separate ops
// cannot (the composition's peak is one N-map tensor higher: README "Layout").
// Every stage's output is scanned for NaN/±Inf before the next stage reads it
// (E_NUMERIC names the first stage that produced one), and the cancel flag is
// checked between stages (E_ABORTED).
template <class T, class Kn>
LossResult<T> mghf_loss(const DfeWeights<T>& w, const T* sr, const T* gt, const Shape& s,
                        const LossOptions& opt) {
  LossResult<T> r;
  const TermPlan plan = plan_terms(opt);
  const bool c = plan.c;
  const double g1 = plan.g1, g2 = plan.g2, g3 = plan.g3;
  const bool do_n = plan.do_n, do_csc = plan.do_csc, do_lip = plan.do_lip;
  const bool b1 = plan.b1, b2 = plan.b2, b3 = plan.b3;
  r.skipped = plan.skipped;
  const bool grad = opt.grad;
  if (grad) {
    r.grad.resize(size_t(s.size()));
    r.grad.zero();
  }
  if (!do_n && !do_csc && !do_lip) return r;  // every term off: no work at all

  detail::Stopwatch clock(opt.profile ? &r.timings : nullptr);
  const int N = w.arch.channels;
  const int64_t P = int64_t(s.H) * s.W, count = int64_t(s.B) * N * P;
  auto ctx = [&] { return numeric_context(opt, w); };
  throw_if_cancelled(opt.cancel);
  // Peak memory is G, S, the tape and one buffer X of M maps, every stage's temporaries small:
  // ∂L/∂S is written over S map by map once nothing reads that map any more (below), X holds the
  // CSC gradient of the kept maps, and the DFE's scratch is borrowed (S's buffer before S is
  // computed, then X). At 512², 472 MiB instead of the 1,139 MiB of keeping every intermediate.
  const int M = std::min(opt.M, N);
  const int64_t kept = do_csc && grad ? int64_t(s.B) * M * P : 0;
  Buffer<T> G{size_t(count)}, S{size_t(count)};
  Buffer<T> X{size_t(std::max(kept, dfe_scratch_elems<T>(w.arch, s.H, s.W, grad)))};
  dfe_forward<T, Kn>(w, gt, s.B, s.H, s.W, opt.range, G.data(), nullptr, opt.cancel, S.data());
  check_finite(G.data(), count, NumericStage::DfeForwardGt, "the features of gt", ctx);
  DfeTape<T> tape;
  dfe_forward<T, Kn>(w, sr, s.B, s.H, s.W, opt.range, S.data(), grad ? &tape : nullptr, opt.cancel,
                     X.data());
  check_finite(S.data(), count, NumericStage::DfeForwardSr, "the features of sr", ctx);
  if (kept == 0) X.release();
  clock.lap("dfe_forward");

  // ∂(Γ1·L_n)/∂S = Γ1 · 2 (S − G) / (B·N·H·W), added when each map's gradient is assembled.
  const T kn = T(do_n ? g1 * 2.0 / double(count) : 0.0);
  if (do_n) {
    throw_if_cancelled(opt.cancel);
    r.n = sum_squared_difference(S.data(), G.data(), count) / double(count);
    check_finite_value(r.n, NumericStage::N, "L_n", ctx);
    clock.lap("n");
  }
  // Where the b-th sample's channel k sits among its kept maps (−1: not kept).
  std::vector<int> kept_index;
  if (do_csc) {
    throw_if_cancelled(opt.cancel);
    std::vector<double> imp = channel_importance<T, Kn>(G.data(), S.data(), s.B, N, P);
    // Before the sort: a NaN would break its ordering.
    check_finite(imp.data(), int64_t(imp.size()), NumericStage::Importance, "the importance", ctx);
    ChannelSelection chosen = select_channels(imp, s.B, N, M, opt.selected, opt.alpha, opt.gamma);
    std::vector<int>& sel = chosen.sel;
    const std::vector<double>& wts = chosen.weights;
    check_finite(wts.data(), int64_t(wts.size()), NumericStage::Importance, "the weights w", ctx);
    clock.lap("importance");
    throw_if_cancelled(opt.cancel);
    if (kept) {
      X.zero();
      kept_index.assign(size_t(s.B) * N, -1);
      for (int b = 0; b < s.B; ++b)
        for (int i = 0; i < M; ++i) kept_index[size_t(b) * N + sel[size_t(b) * M + i]] = i;
    }
    const CscParts parts = csc_loss<T, Kn>(G.data(), S.data(), s.B, N, P, M, sel.data(), wts.data(),
                                           {b1 ? opt.beta1 : 0, b2 ? opt.beta2 : 0,
                                            b3 ? opt.beta3 : 0, g2},
                                           kept ? X.data() : nullptr, /*by_kept=*/true);
    r.mse = b1 ? parts.mse : 0;
    r.corr = b2 ? parts.corr : 0;
    r.gram = b3 ? parts.gram : 0;
    r.csc = opt.beta1 * r.mse + opt.beta2 * r.corr + opt.beta3 * r.gram;
    check_finite_value(r.mse, NumericStage::Csc, "mse", ctx);
    check_finite_value(r.corr, NumericStage::Csc, "corr", ctx);
    check_finite_value(r.gram, NumericStage::Csc, "gram", ctx);
    check_finite_value(r.csc, NumericStage::Csc, "csc", ctx);
    if (kept) check_finite(X.data(), kept, NumericStage::Csc, "its gradient", ctx);
    if (opt.details) {
      r.importance = std::move(imp);
      r.selected = std::move(sel);
    }
    clock.lap("csc");
  }
  // ∂L/∂S of map bk = kn·(S − G) + the CSC gradient (kept maps) + the LIP gradient, written over
  // S's map: called once per map after the last read of S there (by the LIP task of that map).
  const std::function<void(int64_t, const T*)> assemble = [&](int64_t bk, const T* lipg) {
    T* sp = S.data() + bk * P;
    const T* gp = G.data() + bk * P;
    const int i = kept_index.empty() ? -1 : kept_index[size_t(bk)];
    const T* cp = i < 0 ? nullptr : X.data() + (bk / N * M + i) * P;
    for (int64_t p = 0; p < P; ++p) {
      T d = (sp[p] - gp[p]) * kn;
      if (cp) d += cp[p];
      if (lipg) d += lipg[p];
      sp[p] = d;
    }
  };
  if (do_lip) {
    throw_if_cancelled(opt.cancel);
    LipOptions lip = opt.lip;
    lip.monce.cancel = opt.cancel;
    r.lip = lip_loss<T, Kn>(G.data(), S.data(), s.B, N, s.H, s.W, lip, g3, nullptr,
                            grad ? &assemble : nullptr);
    check_finite_value(r.lip, NumericStage::Lip, "L_lip", ctx);
    clock.lap("lip");
  } else if (grad) {
    parallel_for(int64_t(s.B) * N, [&](int64_t bk) { assemble(bk, nullptr); });
  }
  T* const dS = S.data();  // from here on S's buffer holds ∂L/∂S
  if (grad) check_finite(dS, count, do_lip ? NumericStage::Lip : (do_csc ? NumericStage::Csc : NumericStage::N),
                         "the gradient ∂L/∂S", ctx);
  r.loss = g1 * r.n + g2 * r.csc + g3 * r.lip;
  if (!c) r.loss = r.n;
  check_finite_value(r.loss, NumericStage::Total, "the loss", ctx);
  if (!grad) return r;
  throw_if_cancelled(opt.cancel);
  G.release();
  X.release();
  dfe_backward<T, Kn>(w, tape, dS, s.B, s.H, s.W, opt.range, r.grad.data(), opt.cancel);
  check_finite(r.grad.data(), s.size(), NumericStage::DfeBackward, "the gradient", ctx);
  clock.lap("dfe_backward");
  return r;
}

}  // namespace mghf
