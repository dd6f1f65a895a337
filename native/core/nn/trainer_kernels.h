// The small trainer kernels of issue 16 (pixel shuffle, activations, add, the
// L1 and Charbonnier losses): plain loops, the CPU meaning that
// cuda/trainer_ops.cu mirrors.
#pragma once
#include <cmath>
#include <cstdint>

#include "parallel.h"

namespace mghf {
namespace nn {

// Runs fn(i) for i in [0, n) on the pool, in ranges (elementwise kernels).
template <class F>
void for_each_index(int64_t n, F&& fn) {
  parallel_range(n, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) fn(i);
  });
}

// PyTorch's pixel_shuffle: y[b, c, h·r+i, w·r+j] = x[b, c·r²+i·r+j, h, w]
// (x [B, C·r², H, W]). pixel_unshuffle is its inverse permutation, so also
// its exact adjoint (the backward): dx[b, c·r²+i·r+j, h, w] = dy[b, c, h·r+i, w·r+j].
// Both run over the rows of the small side; `unshuffle` picks the direction.
inline void pixel_shuffle_copy(int B, int C, int H, int W, int r, const float* src, float* dst,
                               bool unshuffle) {
  const int64_t planes = int64_t(B) * C;
  for_each_index(planes * r * r * H, [&](int64_t q) {
    // q = ((plane·r + i)·r + j)·H + h: one row of the [B, C·r², H, W] side.
    const int h = int(q % H);
    const int j = int(q / H % r), i = int(q / H / r % r);
    const int64_t plane = q / H / r / r;
    const int64_t small = (plane * r * r + int64_t(i) * r + j) * H * W + int64_t(h) * W;
    const int64_t big = plane * H * r * W * r + (int64_t(h) * r + i) * W * r + j;
    if (!unshuffle)
      for (int w = 0; w < W; ++w) dst[big + int64_t(w) * r] = src[small + w];
    else
      for (int w = 0; w < W; ++w) dst[small + w] = src[big + int64_t(w) * r];
  });
}

// slope 0 is ReLU. The gradient at x = 0 is the slope (PyTorch's choice: x > 0 passes).
inline void leaky_relu(int64_t n, float slope, const float* x, float* y) {
  for_each_index(n, [&](int64_t i) { y[i] = x[i] > 0 ? x[i] : x[i] * slope; });
}
inline void leaky_relu_backward(int64_t n, float slope, const float* x, const float* dy, float* dx) {
  for_each_index(n, [&](int64_t i) { dx[i] = x[i] > 0 ? dy[i] : dy[i] * slope; });
}

inline void add_scaled(int64_t n, float alpha, const float* a, const float* b, float* y) {
  for_each_index(n, [&](int64_t i) { y[i] = a[i] + alpha * b[i]; });
}

// mean |x − y| (a double sum); dx (may be null) = sign(x − y)/n, sign(0) = 0.
inline double l1_loss(int64_t n, const float* x, const float* y, float* dx) {
  double s = 0;
  const float k = float(1.0 / double(n));
  for (int64_t i = 0; i < n; ++i) {
    const float d = x[i] - y[i];
    s += std::fabs(double(d));
    if (dx) dx[i] = d > 0 ? k : (d < 0 ? -k : 0.f);
  }
  return s / double(n);
}

// mean sqrt((x − y)² + eps²); dx (may be null) = (x − y)/sqrt(…)/n.
inline double charbonnier_loss(int64_t n, double eps, const float* x, const float* y, float* dx) {
  double s = 0;
  const double e2 = eps * eps, inv = 1.0 / double(n);
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - double(y[i]);
    const double r = std::sqrt(d * d + e2);
    s += r;
    if (dx) dx[i] = float(d / r * inv);
  }
  return s * inv;
}

}  // namespace nn
}  // namespace mghf
