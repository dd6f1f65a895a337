// Adam (SPEC §10: PyTorch's update, no weight decay) and the step-wise
// learning-rate schedule.
#pragma once
#include <cmath>
#include <cstdint>

namespace mghf {

struct AdamConfig {
  double lr = 5e-4;  // lr0
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t decay_every = 5000;  // lr × decay_rate every decay_every steps
  double decay_rate = 0.95;
};

// The rate of the step taken after t steps: lr0 · rate^floor(t / every).
inline double scheduled_lr(const AdamConfig& c, int64_t t) {
  const int64_t every = c.decay_every > 0 ? c.decay_every : 1;
  return c.lr * std::pow(c.decay_rate, double(t / every));
}

// One Adam update of n parameters, the step-th (1-based: bias corrections use
// β^step), at rate lr:
//   m = β1 m + (1−β1) g;  v = β2 v + (1−β2) g²;  m̂ = m/(1−β1^step);  v̂ = v/(1−β2^step);
//   p −= lr · m̂ / (√v̂ + ε).
// Arithmetic in double; p, m, v are stored as float, and the update reads the
// stored m, v, so (p, m, v, step) is the whole state.
template <class G>
void adam_update(int64_t n, float* p, float* m, float* v, const G* g, double lr,
                 const AdamConfig& c, int64_t step) {
  const double bc1 = 1.0 - std::pow(c.beta1, double(step));
  const double bc2 = 1.0 - std::pow(c.beta2, double(step));
  for (int64_t i = 0; i < n; ++i) {
    const double gi = double(g[i]);
    m[i] = float(c.beta1 * double(m[i]) + (1.0 - c.beta1) * gi);
    v[i] = float(c.beta2 * double(v[i]) + (1.0 - c.beta2) * gi * gi);
    const double mh = double(m[i]) / bc1, vh = double(v[i]) / bc2;
    p[i] = float(double(p[i]) - lr * mh / (std::sqrt(vh) + c.eps));
  }
}

}  // namespace mghf
