// A general 2-D convolution for trainers (issue 16): NCHW float, square odd
// kernel k, "same" padding p = (k−1)/2 by zeros or by reflection (PyTorch's
// 'reflect': no edge repeat), stride 1 or 2, groups. Output
// [B, Co, ceil(H/stride), ceil(W/stride)].
//
// Two implementations with one meaning: the plain loops here (the reference
// the tests hold the fast one to) and im2col + the per-ISA GEMM in
// conv2d.cpp (what the ops run).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mghf {
namespace nn {

struct Conv2dShape {
  int B = 1, Ci = 1, H = 1, W = 1, Co = 1, k = 1, stride = 1, groups = 1;
  bool reflect = false;
  int pad() const { return (k - 1) / 2; }
  int Ho() const { return (H + stride - 1) / stride; }
  int Wo() const { return (W + stride - 1) / stride; }
  int cig() const { return Ci / groups; }  // input channels per group
  int cog() const { return Co / groups; }  // output channels per group
};

// The input index a padded tap reads, or −1 for a zero (the caller checked
// that reflection stays inside: pad < n).
inline int conv_source_index(int i, int n, bool reflect) {
  if (i >= 0 && i < n) return i;
  if (!reflect) return -1;
  return i < 0 ? -i : 2 * n - 2 - i;
}

// ---------------------------------------------------------------- reference
// y = conv(x, w) + b (b may be null). x [B,Ci,H,W], w [Co, Ci/groups, k, k].
template <class T>
void conv2d_reference(const Conv2dShape& s, const T* x, const T* w, const T* b, T* y) {
  const int Ho = s.Ho(), Wo = s.Wo(), p = s.pad(), cig = s.cig(), cog = s.cog();
  for (int n = 0; n < s.B; ++n)
    for (int co = 0; co < s.Co; ++co) {
      const int g = co / cog;
      for (int oy = 0; oy < Ho; ++oy)
        for (int ox = 0; ox < Wo; ++ox) {
          double acc = b ? double(b[co]) : 0.0;
          for (int c = 0; c < cig; ++c)
            for (int ky = 0; ky < s.k; ++ky) {
              const int iy = conv_source_index(oy * s.stride + ky - p, s.H, s.reflect);
              if (iy < 0) continue;
              for (int kx = 0; kx < s.k; ++kx) {
                const int ix = conv_source_index(ox * s.stride + kx - p, s.W, s.reflect);
                if (ix < 0) continue;
                acc += double(w[((int64_t(co) * cig + c) * s.k + ky) * s.k + kx]) *
                       double(x[((int64_t(n) * s.Ci + g * cig + c) * s.H + iy) * s.W + ix]);
              }
            }
          y[((int64_t(n) * s.Co + co) * Ho + oy) * Wo + ox] = T(acc);
        }
    }
}

// The adjoints of conv2d_reference: dx = ∂/∂x, dw = ∂/∂w, db = Σ dy (each
// may be null; each is overwritten).
template <class T>
void conv2d_backward_reference(const Conv2dShape& s, const T* x, const T* w, const T* dy, T* dx,
                               T* dw, T* db) {
  const int Ho = s.Ho(), Wo = s.Wo(), p = s.pad(), cig = s.cig(), cog = s.cog();
  const int64_t nx = int64_t(s.B) * s.Ci * s.H * s.W, nw = int64_t(s.Co) * cig * s.k * s.k;
  std::vector<double> gx(dx ? size_t(nx) : 0), gw(dw ? size_t(nw) : 0), gb(db ? size_t(s.Co) : 0);
  for (int n = 0; n < s.B; ++n)
    for (int co = 0; co < s.Co; ++co) {
      const int g = co / cog;
      for (int oy = 0; oy < Ho; ++oy)
        for (int ox = 0; ox < Wo; ++ox) {
          const double d = double(dy[((int64_t(n) * s.Co + co) * Ho + oy) * Wo + ox]);
          if (db) gb[size_t(co)] += d;
          for (int c = 0; c < cig; ++c)
            for (int ky = 0; ky < s.k; ++ky) {
              const int iy = conv_source_index(oy * s.stride + ky - p, s.H, s.reflect);
              if (iy < 0) continue;
              for (int kx = 0; kx < s.k; ++kx) {
                const int ix = conv_source_index(ox * s.stride + kx - p, s.W, s.reflect);
                if (ix < 0) continue;
                const int64_t wi = ((int64_t(co) * cig + c) * s.k + ky) * s.k + kx;
                const int64_t xi = ((int64_t(n) * s.Ci + g * cig + c) * s.H + iy) * s.W + ix;
                if (dx) gx[size_t(xi)] += double(w[wi]) * d;
                if (dw) gw[size_t(wi)] += double(x[xi]) * d;
              }
            }
        }
    }
  for (int64_t i = 0; dx && i < nx; ++i) dx[i] = T(gx[size_t(i)]);
  for (int64_t i = 0; dw && i < nw; ++i) dw[i] = T(gw[size_t(i)]);
  for (int i = 0; db && i < s.Co; ++i) db[i] = T(gb[size_t(i)]);
}

// ---------------------------------------------------------------- fast (conv2d.cpp)
// The same maps in float: im2col and the per-ISA GEMM, the weight gradient
// through train_kernels_fast.h's weight_grad (fixed-order sums in double).
void conv2d_fast(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y);
void conv2d_backward_fast(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* db);

}  // namespace nn
}  // namespace mghf
