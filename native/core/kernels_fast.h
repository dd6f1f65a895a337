// The fast float kernels behind the same interface as ReferenceKernels<float>,
// so the DFE code is written once (dfe.h) and instantiated with either.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels_reference.h"
#include "kernels_table.h"
#include "parallel.h"

namespace mghf {

struct FastKernels {
  static void conv1x1(int M, int K, int64_t P, const float* W, const float* bias,
                      const float* in, float* out, bool accumulate) {
    fast_kernels().gemm(M, K, P, W, in, out, bias, accumulate);
  }
  static void conv1x1_relu6(int M, int K, int64_t P, const float* W, const float* in, float* out,
                            uint8_t* mask) {
    fast_kernels().gemm_relu6(M, K, P, W, in, out, mask);
  }
  static void conv1x1_backward(int M, int K, int64_t P, const float* W, const float* dout,
                               float* din, bool accumulate) {
    std::vector<float> wt(size_t(M) * K);
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < K; ++k) wt[size_t(k) * M + m] = W[size_t(m) * K + k];
    fast_kernels().gemm(K, M, P, wt.data(), dout, din, nullptr, accumulate);
  }
  static void depthwise_relu6(int C, int H, int W, const float* w, const float* in, float* out,
                              uint8_t* mask) {
    fast_kernels().depthwise_relu6(C, H, W, w, in, out, mask);
  }
  static void depthwise_relu6_backward(int C, int H, int W, const float* w,
                                       const uint8_t* mask_out, const uint8_t* mask_in, float* g,
                                       float* din) {
    fast_kernels().depthwise_relu6_backward(C, H, W, w, mask_out, mask_in, g, din);
  }

  static void irb_forward(int c, int h, int H, int W, const float* We, const float* Wd,
                          const float* Wp, const float* in, float* out, bool accumulate,
                          uint8_t* m1, uint8_t* m2) {
    fast_kernels().irb_forward(c, h, H, W, We, Wd, Wp, in, out, accumulate, m1, m2);
  }
  static void irb_backward(int c, int h, int H, int W, const float* We, const float* Wd,
                           const float* Wp, const uint8_t* m1, const uint8_t* m2,
                           const float* dout, float* din) {
    fast_kernels().irb_backward(c, h, H, W, We, Wd, Wp, m1, m2, dout, din);
  }

  static void matmul(int M, int K, int64_t N, const float* A, const float* B, int64_t ldb,
                     float* C, int64_t ldc, bool accumulate) {
    fast_kernels().matmul(M, K, N, A, B, ldb, C, ldc, accumulate);
  }
  static void matmul_nt(int M, int K, int N, const float* A, int64_t lda, const float* B,
                        int64_t ldb, float* C, int64_t ldc, bool accumulate) {
    fast_kernels().matmul_nt(M, K, N, A, lda, B, ldb, C, ldc, accumulate);
  }
  static void coupling_forward(int64_t n, const float* R, const float* Eta, float* z1, float* tz1,
                               float* tE) {
    fast_kernels().coupling_forward(n, R, Eta, z1, tz1, tE);
  }
  static double dot_wide(int64_t n, const float* a, const float* b) {
    return fast_kernels().dot_wide(n, a, b);
  }
  static void gram(int M, int64_t P, const float* X, double* C) { fast_kernels().gram(M, P, X, C); }
  static void histogram256(const float* x, int64_t n, float lo, float range, int64_t* count) {
    fast_kernels().histogram256(x, n, lo, range, count);
  }
  static double monce(int P, const float* sim, const MonceParams& prm, double g0, float* dsim,
                      std::vector<double>& work, std::vector<float>& kwork) {
    return fast_kernels().monce(P, sim, prm, g0, dsim, work, kwork);
  }

  // The stem as im2col + GEMM: a 27-deep product per output, like a 1×1 conv.
  static void stem(int N, int H, int W, const float* w, const float* b, const float* xh, float* z) {
    const int64_t P = int64_t(H) * W;
    std::vector<float> col(size_t(27) * P);
    parallel_for(27, [&](int64_t r) {
      const int ci = int(r / 9), dy = int(r / 3 % 3), dx = int(r % 3);
      float* dst = col.data() + r * P;
      for (int y = 0; y < H; ++y) {
        const int yy = y + dy - 1;
        for (int x = 0; x < W; ++x) {
          const int xx = x + dx - 1;
          dst[int64_t(y) * W + x] = (yy < 0 || yy >= H || xx < 0 || xx >= W)
                                        ? 0.f
                                        : xh[ci * P + int64_t(yy) * W + xx];
        }
      }
    });
    fast_kernels().gemm(N, 27, P, w, col.data(), z, b, false);
  }
  static void stem_backward(int N, int H, int W, const float* w, const float* dz, float* dxh) {
    const int64_t P = int64_t(H) * W;
    std::vector<float> dcol(size_t(27) * P);
    conv1x1_backward(N, 27, P, w, dz, dcol.data(), false);
    // col2im: each input pixel gathers the 9 taps that read it.
    parallel_range(int64_t(3) * H, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int ci = int(r / H), yy = int(r % H);
        float* dst = dxh + ci * P + int64_t(yy) * W;
        std::fill(dst, dst + W, 0.f);
        for (int dy = 0; dy < 3; ++dy) {
          const int y = yy - dy + 1;
          if (y < 0 || y >= H) continue;
          for (int dx = 0; dx < 3; ++dx) {
            const float* src = dcol.data() + int64_t(ci * 9 + dy * 3 + dx) * P + int64_t(y) * W;
            // xx = x + dx - 1  =>  x = xx - dx + 1
            for (int xx = 0; xx < W; ++xx) {
              const int x = xx - dx + 1;
              if (x >= 0 && x < W) dst[xx] += src[x];
            }
          }
        }
      }
    });
  }
};

}  // namespace mghf
