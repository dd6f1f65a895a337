// SPEC §10's pretraining objective on a batch: DFE → head → softmax
// cross-entropy, mean over the batch; with gradients, ∂L/∂(every DFE and head
// weight). Images are processed one at a time (the loss is a mean over
// images), so the activations kept for the backward are one image's, and the
// per-image weight gradients add up in image order (deterministic).
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "buffer.h"
#include "dfe.h"
#include "dfe_train.h"
#include "dfe_weights.h"
#include "error.h"
#include "head.h"
#include "head_weights.h"

namespace mghf {

struct StepStats {
  double loss = 0;  // mean softmax cross-entropy
  int correct = 0;  // images whose arg-max logit (the first, on ties) is the label
};

template <class G>
struct ClassifierGrads {
  DfeWeights<G> dfe;
  HeadWeights<G> head;
  ClassifierGrads(const DfeArchitecture& a, int classes)
      : dfe(a), head(a.channels, classes) {}
  void zero() {
    dfe.for_each([](const std::string&, Buffer<G>& b) { b.zero(); });
    head.for_each([](const std::string&, Buffer<G>& b) { b.zero(); });
  }
};

// Milliseconds per phase, summed over the batch (profiling, optional).
using PhaseTimes = std::vector<std::pair<std::string, double>>;

namespace detail {

class PhaseClock {
 public:
  explicit PhaseClock(PhaseTimes* out) : out_(out) {
    if (out_)
      for (const char* n : {"dfe_forward", "head_forward", "head_backward", "dfe_backward"})
        out_->emplace_back(n, 0.0);
  }
  void lap(int phase) {
    if (!out_) return;
    const auto now = std::chrono::steady_clock::now();
    (*out_)[size_t(phase)].second += std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
  }

 private:
  PhaseTimes* out_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace detail

// E_WEIGHTS unless the head takes the DFE's N maps and has a class (checked
// by the trainers when built and by every batch).
template <class T>
void check_head_fits(const DfeArchitecture& a, const HeadWeights<T>& head) {
  if (head.channels != a.channels)
    throw Error("E_WEIGHTS", "the head has " + std::to_string(head.channels) +
                                 " channels, the DFE " + std::to_string(a.channels));
  if (head.classes < 1) throw Error("E_WEIGHTS", "the head needs at least one class");
}

// Checks what memory safety needs (lib/ validates the rest): labels in range,
// images at least 2×2 (the reflection padding), matching channel counts.
template <class T>
void check_classifier_args(const DfeWeights<T>& w, const HeadWeights<T>& head, const int* labels,
                           int B, int H, int W) {
  check_head_fits(w.arch, head);
  if (B < 1) throw Error("E_SHAPE", "a batch needs at least one image");
  if (H < 2 || W < 2) throw Error("E_TOO_SMALL", "images must be at least 2×2");
  for (int b = 0; b < B; ++b)
    if (labels[b] < 0 || labels[b] >= head.classes)
      throw Error("E_ARGUMENT", "label " + std::to_string(labels[b]) + " of image " +
                                    std::to_string(b) + " is outside [0, " +
                                    std::to_string(head.classes) + ")");
}

// Mean cross-entropy and correct count of x [B, 3, H, W] (values in [0, 1]).
// With grads (zeroed by the caller), adds ∂L/∂(every weight).
// A raised `cancel` stops it between images (E_ABORTED).
template <class T, class Kn>
StepStats classifier_batch(const DfeWeights<T>& w, const HeadWeights<T>& head, const T* x,
                           const int* labels, int B, int H, int W,
                           ClassifierGrads<typename Kn::grad_type>* grads,
                           PhaseTimes* times = nullptr, const CancelFlag* cancel = nullptr) {
  check_classifier_args(w, head, labels, B, H, W);
  const int N = w.arch.channels, classes = head.classes;
  const int64_t P = int64_t(H) * W;
  Buffer<T> F(size_t(N) * P), dF, other;
  if (grads) {
    dF.resize(F.size());
    other.resize(F.size());
  }
  DfeTrainTape<T> tape;
  HeadTape<T> htape;
  std::vector<T> logits(static_cast<size_t>(classes)), dlogits(static_cast<size_t>(classes));
  detail::PhaseClock clock(times);
  StepStats st;
  double loss_sum = 0;
  for (int b = 0; b < B; ++b) {
    throw_if_cancelled(cancel);
    const T* xb = x + int64_t(b) * 3 * P;
    if (grads)
      dfe_train_forward<T, Kn>(w, xb, H, W, tape, F.data());
    else
      dfe_forward<T, Kn>(w, xb, 1, H, W, InputRange::Unit, F.data(), nullptr);
    clock.lap(0);
    head_forward<T, Kn>(head, F.data(), H, W, htape, logits.data());
    // Softmax cross-entropy in double: l = logsumexp(z) − z[label].
    const int label = labels[b];
    int best = 0;
    double zmax = double(logits[0]);
    for (int k = 1; k < classes; ++k)
      if (double(logits[size_t(k)]) > zmax) {
        zmax = double(logits[size_t(k)]);
        best = k;
      }
    double se = 0;
    for (int k = 0; k < classes; ++k) se += std::exp(double(logits[size_t(k)]) - zmax);
    const double lse = zmax + std::log(se);
    loss_sum += lse - double(logits[size_t(label)]);
    st.correct += best == label;
    clock.lap(1);
    if (!grads) continue;
    for (int k = 0; k < classes; ++k)
      dlogits[size_t(k)] =
          T((std::exp(double(logits[size_t(k)]) - lse) - (k == label ? 1.0 : 0.0)) / double(B));
    head_backward<T, Kn>(head, F.data(), htape, dlogits.data(), grads->head, dF.data());
    clock.lap(2);
    dfe_train_backward<T, Kn>(w, tape, F.data(), dF.data(), other.data(), H, W, grads->dfe);
    clock.lap(3);
  }
  st.loss = loss_sum / double(B);
  return st;
}

}  // namespace mghf
