// The MGHF loss fused in one function: the CPU backend's loss until the CPU switched to the loss
// composed from the ops (ops/loss_ops.h's compose_loss, the one loss of every backend; issue 15
// item 3). Kept here, for the tests only, as an independent oracle: over ReferenceKernels<double> it
// is the double-precision loss the finite-difference and float-vs-double checks of test_core.cpp
// use, and over FastKernels<float> it gives the bits the composition must give (test_loss_composed,
// loss_composed_bits): the same stage functions, the same order of additions, written separately.
// It writes ∂L/∂S over S map by map after LIP's last read of that map and keeps the CSC gradient of
// the M kept maps in one buffer X; the composition does the same through the ops' overS attr.
#pragma once
#include "loss.h"

namespace mghf {

template <class T, class Kn>
LossResult<T> reference_loss(const DfeWeights<T>& w, const T* sr, const T* gt, const Shape& s,
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
