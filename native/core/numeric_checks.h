// What a computation checks between its stages (issue 13): that the caller
// has not cancelled it (E_ABORTED), and that the stage produced only finite
// numbers (E_NUMERIC, naming the first stage where a NaN or ±Inf appeared
// and the option or input most likely responsible). A finiteness scan reads
// a stage's output once, cheap beside the stage that wrote it. Every backend
// raises the same errors with the same messages (numeric_error).
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "error.h"
#include "lip_params.h"
#include "parallel.h"

namespace mghf {

using CancelFlag = std::atomic<bool>;

inline void throw_if_cancelled(const CancelFlag* cancel) {
  if (cancel_requested(cancel)) throw Error("E_ABORTED", "The operation was aborted");
}

// The smallest i with x[i] not finite, or −1: chunks in parallel, the
// first hit of the lowest chunk wins (the same answer for any thread count).
template <class T>
int64_t first_nonfinite(const T* x, int64_t n) {
  const int64_t chunk = int64_t(1) << 16;
  const int64_t chunks = (n + chunk - 1) / chunk;
  if (chunks <= 1) {
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(x[i])) return i;
    return -1;
  }
  std::vector<int64_t> hit(size_t(chunks), -1);
  parallel_for(chunks, [&](int64_t c) {
    const int64_t i1 = std::min(n, (c + 1) * chunk);
    for (int64_t i = c * chunk; i < i1; ++i)
      if (!std::isfinite(x[i])) {
        hit[size_t(c)] = i;
        return;
      }
  });
  for (int64_t h : hit)
    if (h >= 0) return h;
  return -1;
}

// The stages of a loss (or features) call, in order.
enum class NumericStage {
  DfeForwardGt,  // the features G of gt
  DfeForwardSr,  // the features S of sr
  N,             // L_n and its gradient
  Importance,    // the entropies and the reweighting (SPEC §4)
  Csc,           // L_csc and its gradient
  Lip,           // L_lip and its gradient
  Total,         // Γ1·L_n + Γ2·L_csc + Γ3·L_lip
  DfeBackward,   // ∂L/∂sr
  Features,      // dfeFeatures' F
};

// What a message says about the options; filled from LossOptions by the
// backends (a plain struct so this header needs no loss.h).
struct NumericContext {
  double gamma1 = 0, gamma2 = 0, gamma3 = 0, beta1 = 0, beta2 = 0, beta3 = 0;
  double alpha = 0, gamma = 0, tau = 0, eps_ot = 0, Q = 0;
  // The largest |weight| and its tensor (weights_hint), when known.
  std::string weights_hint;
};

inline std::string numeric_fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

// "what" is the value found ("NaN", "Infinity", "-Infinity"), where the
// first non-finite value was (e.g. "the gradient, index 12").
inline std::string nonfinite_name(double v) {
  return std::isnan(v) ? "NaN" : (v > 0 ? "Infinity" : "-Infinity");
}

[[noreturn]] inline void numeric_error(NumericStage stage, const std::string& where, double value,
                                       const NumericContext& c) {
  const std::string found = nonfinite_name(value) + " in " + where;
  const std::string w = c.weights_hint.empty() ? "" : " (" + c.weights_hint + ")";
  std::string m;
  switch (stage) {
    case NumericStage::DfeForwardGt:
    case NumericStage::DfeForwardSr:
    case NumericStage::Features: {
      const char* x = stage == NumericStage::DfeForwardGt ? "gt"
                      : stage == NumericStage::DfeForwardSr ? "sr" : "x";
      m = std::string("DFE forward of ") + x + " overflowed float32 (" + found +
          "): the weights are too large for it" + w +
          ", or the input's magnitude is; check the weights file (a trained DFE's weights are "
          "of order 1)";
      break;
    }
    case NumericStage::N:
      m = "L_n overflowed (" + found + "): the features of sr and gt differ by more than "
          "float32 holds; the weights are too large" + w + "?";
      break;
    case NumericStage::Importance:
      m = "the channel importance or its reweighting is not finite (" + found + "): alpha=" +
          numeric_fmt(c.alpha) + ", gamma=" + numeric_fmt(c.gamma) + "?";
      break;
    case NumericStage::Csc:
      m = "CSC produced a non-finite value (" + found + "): the features are too large for the "
          "Gram and MSE terms (they grow as w⁴·F² with w = (1 + alpha·I)^gamma; alpha=" +
          numeric_fmt(c.alpha) + ", gamma=" + numeric_fmt(c.gamma) + ", beta1..3=" +
          numeric_fmt(c.beta1) + "/" + numeric_fmt(c.beta2) + "/" + numeric_fmt(c.beta3) +
          ", gamma2=" + numeric_fmt(c.gamma2) + "), or the weights" + w + "?";
      break;
    case NumericStage::Lip:
      m = "LIP produced a non-finite value (" + found + "): epsOt=" + numeric_fmt(c.eps_ot) +
          ", tau=" + numeric_fmt(c.tau) + ", Q=" + numeric_fmt(c.Q) + ", gamma3=" +
          numeric_fmt(c.gamma3) + " too extreme?";
      break;
    case NumericStage::Total:
      m = "the total loss overflowed (" + found + "): gamma1=" + numeric_fmt(c.gamma1) +
          ", gamma2=" + numeric_fmt(c.gamma2) + ", gamma3=" + numeric_fmt(c.gamma3) +
          " times parts too large?";
      break;
    case NumericStage::DfeBackward:
      m = "the DFE backward overflowed float32 (" + found + "): the loss gradient times the "
          "weights is too large; gamma1=" + numeric_fmt(c.gamma1) + ", gamma2=" +
          numeric_fmt(c.gamma2) + ", gamma3=" + numeric_fmt(c.gamma3) + " or the weights" + w +
          "?";
      break;
  }
  throw Error("E_NUMERIC", m);
}

// Throws E_NUMERIC when x[0..n) holds a non-finite value; ctx() (called
// only then) gives the options and weights to name.
template <class T, class Ctx>
void check_finite(const T* x, int64_t n, NumericStage stage, const char* what, Ctx&& ctx) {
  const int64_t i = first_nonfinite(x, n);
  if (i >= 0)
    numeric_error(stage, std::string(what) + " at index " + std::to_string(i), double(x[i]), ctx());
}

template <class Ctx>
void check_finite_value(double v, NumericStage stage, const char* what, Ctx&& ctx) {
  if (!std::isfinite(v)) numeric_error(stage, what, v, ctx());
}

// "largest |weight| 3.4e+38 in stem.weight": the weights' likeliest culprit.
template <class W>
std::string largest_weight_hint(const W& w) {
  double best = -1;
  std::string name;
  bool nonfinite = false;
  const_cast<W&>(w).for_each([&](const std::string& n, auto& b) {
    if (nonfinite) return;
    for (size_t i = 0; i < b.size(); ++i) {
      const double a = std::fabs(double(b[i]));
      if (!(a <= best)) {  // NaN wins too
        if (std::isnan(a)) nonfinite = true;
        best = a;
        name = n;
        if (nonfinite) return;
      }
    }
  });
  if (name.empty()) return "";
  return nonfinite ? "a NaN weight in " + name
                   : "largest |weight| " + numeric_fmt(best) + " in " + name;
}

}  // namespace mghf
