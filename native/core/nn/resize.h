// Bicubic resize as MATLAB's imresize computes it, after BasicSR's
// basicsr/utils/matlab_functions.py (imresize, calculate_weights_indices):
// the a = −0.5 cubic; when shrinking (scale < 1) the kernel is widened by
// 1/scale (antialiasing) and scaled by `scale`; output pixel i (1-based) is
// centred on u = i/scale + 0.5·(1 − 1/scale); each row of weights is
// normalised to sum 1; taps outside the image read it mirrored with the edge
// repeated (MATLAB's 'symmetric'); rows (H) are resized first, then columns.
// The resize is linear, so resize_adjoint is its exact transpose (the backward).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "parallel.h"

namespace mghf {
namespace nn {

// One dimension's resampling matrix: out × taps weights, with the input
// index each tap reads.
struct ResizeAxis {
  int in = 0, out = 0, taps = 0;
  std::vector<float> weight;  // [out][taps]
  std::vector<int> index;     // [out][taps], in [0, in)
};

inline double bicubic(double x) {
  const double a = std::fabs(x), a2 = a * a, a3 = a2 * a;
  if (a <= 1) return 1.5 * a3 - 2.5 * a2 + 1;
  if (a <= 2) return -0.5 * a3 + 2.5 * a2 - 4 * a + 2;
  return 0;
}

// MATLAB 'symmetric' padding: −1 → 0, −2 → 1, n → n−1 (repeated until inside).
inline int symmetric_index(int i, int n) {
  while (i < 0 || i >= n) i = i < 0 ? -1 - i : 2 * n - 1 - i;
  return i;
}

inline ResizeAxis resize_axis(int in, int out, double scale) {
  ResizeAxis a;
  a.in = in;
  a.out = out;
  const bool shrink = scale < 1;
  const double width = shrink ? 4.0 / scale : 4.0;
  a.taps = int(std::ceil(width)) + 2;
  a.weight.resize(size_t(out) * a.taps);
  a.index.resize(size_t(out) * a.taps);
  for (int i = 0; i < out; ++i) {
    const double u = double(i + 1) / scale + 0.5 * (1 - 1 / scale);
    const double left = std::floor(u - width / 2);
    std::vector<double> w(size_t(a.taps));
    double sum = 0;
    for (int t = 0; t < a.taps; ++t) {
      const double d = u - (left + t);
      w[size_t(t)] = shrink ? scale * bicubic(d * scale) : bicubic(d);
      sum += w[size_t(t)];
    }
    for (int t = 0; t < a.taps; ++t) {
      a.weight[size_t(i) * a.taps + t] = float(w[size_t(t)] / sum);
      // left + t is 1-based.
      a.index[size_t(i) * a.taps + t] = symmetric_index(int(left) + t - 1, in);
    }
  }
  return a;
}

// y [planes, ah.out, aw.out] = resize of x [planes, ah.in, aw.in].
inline void resize_forward(int64_t planes, const ResizeAxis& ah, const ResizeAxis& aw,
                           const float* x, float* y) {
  parallel_for(planes, [&](int64_t pl) {
    const float* xp = x + pl * ah.in * aw.in;
    float* yp = y + pl * ah.out * aw.out;
    std::vector<float> rows(size_t(ah.out) * aw.in);  // H done, W not yet
    for (int oh = 0; oh < ah.out; ++oh)
      for (int w = 0; w < aw.in; ++w) {
        double acc = 0;
        for (int t = 0; t < ah.taps; ++t)
          acc += double(ah.weight[size_t(oh) * ah.taps + t]) *
                 xp[int64_t(ah.index[size_t(oh) * ah.taps + t]) * aw.in + w];
        rows[size_t(oh) * aw.in + w] = float(acc);
      }
    for (int oh = 0; oh < ah.out; ++oh)
      for (int ow = 0; ow < aw.out; ++ow) {
        double acc = 0;
        for (int t = 0; t < aw.taps; ++t)
          acc += double(aw.weight[size_t(ow) * aw.taps + t]) *
                 rows[size_t(oh) * aw.in + aw.index[size_t(ow) * aw.taps + t]];
        yp[int64_t(oh) * aw.out + ow] = float(acc);
      }
  });
}

// dx = Aᵀ·dy: the same two passes transposed, in reverse order (W, then H).
inline void resize_adjoint(int64_t planes, const ResizeAxis& ah, const ResizeAxis& aw,
                           const float* dy, float* dx) {
  parallel_for(planes, [&](int64_t pl) {
    const float* dyp = dy + pl * ah.out * aw.out;
    float* dxp = dx + pl * ah.in * aw.in;
    std::vector<double> rows(size_t(ah.out) * aw.in, 0.0);
    for (int oh = 0; oh < ah.out; ++oh)
      for (int ow = 0; ow < aw.out; ++ow) {
        const double d = dyp[int64_t(oh) * aw.out + ow];
        for (int t = 0; t < aw.taps; ++t)
          rows[size_t(oh) * aw.in + aw.index[size_t(ow) * aw.taps + t]] +=
              double(aw.weight[size_t(ow) * aw.taps + t]) * d;
      }
    std::vector<double> acc(size_t(ah.in) * aw.in, 0.0);
    for (int oh = 0; oh < ah.out; ++oh)
      for (int t = 0; t < ah.taps; ++t) {
        const double wt = ah.weight[size_t(oh) * ah.taps + t];
        double* dst = acc.data() + size_t(ah.index[size_t(oh) * ah.taps + t]) * aw.in;
        const double* src = rows.data() + size_t(oh) * aw.in;
        for (int w = 0; w < aw.in; ++w) dst[w] += wt * src[w];
      }
    for (size_t i = 0; i < acc.size(); ++i) dxp[i] = float(acc[i]);
  });
}

}  // namespace nn
}  // namespace mghf
