// Plain reference kernels for every DFE piece (SPEC §2), forward and the
// backward with respect to the input. Templated on the scalar so the tests can
// check the backward in double against finite differences; the fast float
// kernels (kernels_fast.h) are tested against these.
//
// Layout: one sample, planar [channels][H*W]. Masks hold 1 where the ReLU6
// input was strictly inside (0, 6), i.e. where its derivative is 1 (SPEC §2).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "monce_reference.h"

namespace mghf {

// PyTorch's ReflectionPad2d(1): index -1 reads 1, index n reads n-2.
inline int reflect_index(int i, int n) { return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i); }

template <class T>
inline T relu6(T a) { return a < T(0) ? T(0) : (a > T(6) ? T(6) : a); }

template <class T>
inline uint8_t relu6_mask(T a) { return (a > T(0) && a < T(6)) ? 1 : 0; }

template <class T>
struct ReferenceKernels {
  // out[M×P] = W[M×K]·in[K×P] (+ bias[M]); accumulate adds to out instead.
  static void conv1x1(int M, int K, int64_t P, const T* W, const T* bias, const T* in, T* out,
                      bool accumulate) {
    for (int m = 0; m < M; ++m)
      for (int64_t p = 0; p < P; ++p) {
        T acc = accumulate ? out[m * P + p] : T(0);
        if (bias) acc += bias[m];
        for (int k = 0; k < K; ++k) acc += W[m * K + k] * in[k * P + p];
        out[m * P + p] = acc;
      }
  }

  // out = ReLU6(W·in), mask = ReLU6'(W·in).
  static void conv1x1_relu6(int M, int K, int64_t P, const T* W, const T* in, T* out,
                            uint8_t* mask) {
    conv1x1(M, K, P, W, nullptr, in, out, false);
    for (int64_t i = 0; i < int64_t(M) * P; ++i) {
      mask[i] = relu6_mask(out[i]);
      out[i] = relu6(out[i]);
    }
  }

  // din[K×P] (+)= Wᵀ·dout, the input gradient of conv1x1 with W [M×K].
  static void conv1x1_backward(int M, int K, int64_t P, const T* W, const T* dout, T* din,
                               bool accumulate) {
    for (int k = 0; k < K; ++k)
      for (int64_t p = 0; p < P; ++p) {
        T acc = accumulate ? din[k * P + p] : T(0);
        for (int m = 0; m < M; ++m) acc += W[m * K + k] * dout[m * P + p];
        din[k * P + p] = acc;
      }
  }

  // out = ReLU6(depthwise3x3(ReflectionPad(1)(in))), w [C×9].
  static void depthwise_relu6(int C, int H, int Wd, const T* w, const T* in, T* out,
                              uint8_t* mask) {
    const int64_t P = int64_t(H) * Wd;
    for (int ch = 0; ch < C; ++ch)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < Wd; ++x) {
          T acc = 0;
          for (int dy = 0; dy < 3; ++dy)
            for (int dx = 0; dx < 3; ++dx)
              acc += w[ch * 9 + dy * 3 + dx] *
                     in[ch * P + int64_t(reflect_index(y + dy - 1, H)) * Wd +
                        reflect_index(x + dx - 1, Wd)];
          int64_t i = ch * P + int64_t(y) * Wd + x;
          mask[i] = relu6_mask(acc);
          out[i] = relu6(acc);
        }
  }

  // Given g = ∂L/∂(depthwise ReLU6 output): din = mask_in ⊙ dwᵀ(mask_out ⊙ g),
  // where dwᵀ scatters through the reflection (overlapping reads add up).
  // g is used as scratch.
  static void depthwise_relu6_backward(int C, int H, int Wd, const T* w, const uint8_t* mask_out,
                                       const uint8_t* mask_in, T* g, T* din) {
    const int64_t P = int64_t(H) * Wd;
    for (int64_t i = 0; i < int64_t(C) * P; ++i) {
      if (!mask_out[i]) g[i] = 0;
      din[i] = 0;
    }
    for (int ch = 0; ch < C; ++ch)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < Wd; ++x) {
          T gv = g[ch * P + int64_t(y) * Wd + x];
          for (int dy = 0; dy < 3; ++dy)
            for (int dx = 0; dx < 3; ++dx)
              din[ch * P + int64_t(reflect_index(y + dy - 1, H)) * Wd +
                  reflect_index(x + dx - 1, Wd)] += w[ch * 9 + dy * 3 + dx] * gv;
        }
    for (int64_t i = 0; i < int64_t(C) * P; ++i)
      if (!mask_in[i]) din[i] = 0;
  }

  // Bytes of one IRB mask: a byte per element, [h×P].
  static int64_t irb_mask_bytes(int h, int H, int W) { return int64_t(h) * H * W; }

  // out (+)= IRB(in) (SPEC §2): expand 1×1 → ReLU6 → reflect-pad + depthwise
  // 3×3 → ReLU6 → project 1×1. We [h×c], Wd [h×9], Wp [c×h]. Masks m1, m2
  // [h×P] are recorded for the backward when not null.
  static void irb_forward(int c, int h, int H, int W, const T* We, const T* Wd, const T* Wp,
                          const T* in, T* out, bool accumulate, uint8_t* m1, uint8_t* m2) {
    const size_t n = size_t(h) * H * W;
    std::vector<T> r1(n), r2(n);
    std::vector<uint8_t> own1(m1 ? 0 : n), own2(m2 ? 0 : n);
    conv1x1_relu6(h, c, int64_t(H) * W, We, in, r1.data(), m1 ? m1 : own1.data());
    depthwise_relu6(h, H, W, Wd, r1.data(), r2.data(), m2 ? m2 : own2.data());
    conv1x1(c, h, int64_t(H) * W, Wp, nullptr, r2.data(), out, accumulate);
  }

  // din += IRBᵀ(dout), using the masks of the forward.
  static void irb_backward(int c, int h, int H, int W, const T* We, const T* Wd, const T* Wp,
                           const uint8_t* m1, const uint8_t* m2, const T* dout, T* din) {
    const size_t n = size_t(h) * H * W;
    std::vector<T> g(n), dt(n);
    conv1x1_backward(c, h, int64_t(H) * W, Wp, dout, g.data(), false);
    depthwise_relu6_backward(h, H, W, Wd, m2, m1, g.data(), dt.data());
    conv1x1_backward(h, c, int64_t(H) * W, We, dt.data(), din, true);
  }

  // C[M×N] (+)= A[M×K]·B[K×N], strides ldb, ldc.
  static void matmul(int M, int K, int64_t N, const T* A, const T* B, int64_t ldb, T* C,
                     int64_t ldc, bool accumulate) {
    for (int m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        T acc = accumulate ? C[m * ldc + n] : T(0);
        for (int k = 0; k < K; ++k) acc += A[m * K + k] * B[k * ldb + n];
        C[m * ldc + n] = acc;
      }
  }

  // e = exp(R); tz1 = z1 and tE = e where not null; z1 = z1·e + Eta.
  static void coupling_forward(int64_t n, const T* R, const T* Eta, T* z1, T* tz1, T* tE) {
    for (int64_t i = 0; i < n; ++i) {
      const T e = std::exp(R[i]);
      if (tz1) tz1[i] = z1[i];
      if (tE) tE[i] = e;
      z1[i] = z1[i] * e + Eta[i];
    }
  }

  static void exp_n(int64_t n, double* x) {
    for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
  }
  static void log_n(int64_t n, double* x) {
    for (int64_t i = 0; i < n; ++i) x[i] = std::log(x[i]);
  }

  // Σ a[i]·b[i] in double.
  static double dot_wide(int64_t n, const T* a, const T* b) {
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) acc += double(a[i]) * double(b[i]);
    return acc;
  }

  // C[M×N] (+)= A[M×K]·B[N×K]ᵀ; A, B, C with row strides lda, ldb, ldc.
  static void matmul_nt(int M, int K, int N, const T* A, int64_t lda, const T* B, int64_t ldb,
                        T* C, int64_t ldc, bool accumulate) {
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        T acc = accumulate ? C[m * ldc + n] : T(0);
        for (int k = 0; k < K; ++k) acc += A[m * lda + k] * B[n * ldb + k];
        C[m * ldc + n] = acc;
      }
  }

  // C[M×M] = X·Xᵀ, accumulated in double.
  static void gram(int M, int64_t P, const T* X, double* C) {
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < M; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < P; ++p) acc += double(X[i * P + p]) * double(X[j * P + p]);
        C[size_t(i) * M + j] = acc;
      }
  }

  static void histogram256(const T* x, int64_t n, float lo, float range, int64_t* count) {
    for (int64_t i = 0; i < n; ++i) {
      const float t = (float(x[i]) - lo) / range;
      const float f = std::floor(256.0f * t);
      // min(255, floor(256·t)); a NaN (a non-finite map, which the loss
      // rejects before this) lands in bin 0 instead of indexing out of bounds.
      ++count[f >= 255.0f ? 255 : (f >= 0.0f ? int(f) : 0)];
    }
  }

  static double monce(int P, const T* sim, const MonceParams& prm, double g0, T* dsim,
                      std::vector<double>& work, std::vector<T>& kwork) {
    return ref::monce<T>(P, sim, prm, g0, dsim, work, kwork);
  }

  // z[N×P] = conv3x3(xh[3×P]; w [N×3×3×3], b [N]), stride 1, zero padding 1.
  // out = mix(stem(xh)): the stem and the first block's 1×1 mix, composed plainly.
  static void stem_mix(int N, int H, int Wd, const T* ws, const T* bs, const T* wm, const T* bm,
                       const T* xh, T* out) {
    std::vector<T> z(size_t(N) * H * Wd);
    stem(N, H, Wd, ws, bs, xh, z.data());
    conv1x1(N, N, int64_t(H) * Wd, wm, bm, z.data(), out, false);
  }
  static void stem(int N, int H, int Wd, const T* w, const T* b, const T* xh, T* z) {
    const int64_t P = int64_t(H) * Wd;
    for (int n = 0; n < N; ++n)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < Wd; ++x) {
          T acc = b[n];
          for (int ci = 0; ci < 3; ++ci)
            for (int dy = 0; dy < 3; ++dy)
              for (int dx = 0; dx < 3; ++dx) {
                int yy = y + dy - 1, xx = x + dx - 1;
                if (yy < 0 || yy >= H || xx < 0 || xx >= Wd) continue;
                acc += w[((n * 3 + ci) * 3 + dy) * 3 + dx] * xh[ci * P + int64_t(yy) * Wd + xx];
              }
          z[n * P + int64_t(y) * Wd + x] = acc;
        }
  }

  // dxh[3×P] = input gradient of stem given dz [N×P].
  static void stem_backward(int N, int H, int Wd, const T* w, const T* dz, T* dxh) {
    const int64_t P = int64_t(H) * Wd;
    for (int64_t i = 0; i < 3 * P; ++i) dxh[i] = 0;
    for (int n = 0; n < N; ++n)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < Wd; ++x) {
          T g = dz[n * P + int64_t(y) * Wd + x];
          for (int ci = 0; ci < 3; ++ci)
            for (int dy = 0; dy < 3; ++dy)
              for (int dx = 0; dx < 3; ++dx) {
                int yy = y + dy - 1, xx = x + dx - 1;
                if (yy < 0 || yy >= H || xx < 0 || xx >= Wd) continue;
                dxh[ci * P + int64_t(yy) * Wd + xx] += w[((n * 3 + ci) * 3 + dy) * 3 + dx] * g;
              }
        }
  }
};

}  // namespace mghf
