// The fast float kernels behind the same interface as ReferenceKernels<float>,
// so the DFE code is written once (dfe.h) and instantiated with either.
#pragma once
#include <algorithm>
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

  // Bytes of one IRB mask, bit-packed by the fused kernels.
  static int64_t irb_mask_bytes(int h, int H, int W) { return mghf::irb_mask_bytes(h, H, W); }
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

  // The stem as im2col + GEMM: a 27-deep product per output, like a 1×1 conv. One slab of image
  // rows per task, so the im2col buffer is 27 × kStemSlab pixels per thread (16,384 pixels: 1.7 MiB) instead of 27·H·W
  // floats for the whole image (27 MiB at 512², most of what the DFE allocated besides its maps).
  static constexpr int64_t kStemSlab = 16384;
  static int stem_rows(int W) { return int(std::max<int64_t>(1, kStemSlab / W)); }
  // col[r·n + (y − y0)·W + x] = the tap r of pixel (y, x), rows y0 ≤ y < y1, zero padding.
  static void stem_im2col(int H, int W, int y0, int y1, const float* xh, float* col) {
    const int64_t P = int64_t(H) * W, n = int64_t(y1 - y0) * W;
    for (int r = 0; r < 27; ++r) {
      const int ci = r / 9, dy = r / 3 % 3, dx = r % 3;
      float* dst = col + r * n;
      for (int y = y0; y < y1; ++y) {
        const int yy = y + dy - 1;
        for (int x = 0; x < W; ++x) {
          const int xx = x + dx - 1;
          dst[int64_t(y - y0) * W + x] = (yy < 0 || yy >= H || xx < 0 || xx >= W)
                                             ? 0.f
                                             : xh[ci * P + int64_t(yy) * W + xx];
        }
      }
    }
  }
  static void stem(int N, int H, int W, const float* w, const float* b, const float* xh, float* z) {
    const int64_t P = int64_t(H) * W;
    const int rows = stem_rows(W);
    parallel_for((H + rows - 1) / rows, [&](int64_t si) {
      const int y0 = int(si) * rows, y1 = std::min(H, y0 + rows);
      const int64_t p0 = int64_t(y0) * W, n = int64_t(y1 - y0) * W;
      static thread_local std::vector<float> col;
      col.resize(size_t(27) * n);
      stem_im2col(H, W, y0, y1, xh, col.data());
      for (int m = 0; m < N; ++m) std::fill(z + m * P + p0, z + m * P + p0 + n, b[m]);
      fast_kernels().matmul(N, 27, n, w, col.data(), n, z + p0, P, true);
    });
  }
  // out = mix(stem(xh)) slab by slab: the stem's N maps of a slab of rows go straight into the
  // first block's 1×1 mix, so the stem output (N·H·W floats, 128 MiB at 512²) is never stored.
  static void stem_mix(int N, int H, int W, const float* ws, const float* bs, const float* wm,
                       const float* bm, const float* xh, float* out) {
    const int64_t P = int64_t(H) * W;
    const int rows = std::max(1, int(kMixSlab / W));
    parallel_for((H + rows - 1) / rows, [&](int64_t si) {
      const int y0 = int(si) * rows, y1 = std::min(H, y0 + rows);
      const int64_t p0 = int64_t(y0) * W, n = int64_t(y1 - y0) * W;
      static thread_local std::vector<float> col, z;
      col.resize(size_t(27) * n);
      z.resize(size_t(N) * n);
      stem_im2col(H, W, y0, y1, xh, col.data());
      for (int m = 0; m < N; ++m) std::fill(z.begin() + m * n, z.begin() + (m + 1) * n, bs[m]);
      fast_kernels().matmul(N, 27, n, ws, col.data(), n, z.data(), n, true);
      for (int m = 0; m < N; ++m) std::fill(out + m * P + p0, out + m * P + p0 + n, bm[m]);
      fast_kernels().matmul(N, N, n, wm, z.data(), n, out + p0, P, true);
    });
  }
  static constexpr int64_t kMixSlab = 2048;  // pixels: N·2048 floats (1 MiB at N = 128) per thread

  // dxh = col2im(wᵀ·dz), a slab of rows per task; each slab recomputes the product for the row
  // above and below it (col2im reads them) instead of keeping 27·H·W floats.
  static void stem_backward(int N, int H, int W, const float* w, const float* dz, float* dxh) {
    const int64_t P = int64_t(H) * W;
    std::vector<float> wt(size_t(27) * N);
    for (int m = 0; m < N; ++m)
      for (int k = 0; k < 27; ++k) wt[size_t(k) * N + m] = w[size_t(m) * 27 + k];
    const int rows = stem_rows(W);
    parallel_for((H + rows - 1) / rows, [&](int64_t si) {
      const int yy0 = int(si) * rows, yy1 = std::min(H, yy0 + rows);
      const int y0 = std::max(0, yy0 - 1), y1 = std::min(H, yy1 + 1);  // with the halo rows
      const int64_t n = int64_t(y1 - y0) * W;
      static thread_local std::vector<float> dcol;
      dcol.resize(size_t(27) * n);
      fast_kernels().matmul(27, N, n, wt.data(), dz + int64_t(y0) * W, P, dcol.data(), n, false);
      // col2im: each input pixel gathers the 9 taps that read it.
      for (int ci = 0; ci < 3; ++ci)
        for (int yy = yy0; yy < yy1; ++yy) {
          float* dst = dxh + ci * P + int64_t(yy) * W;
          std::fill(dst, dst + W, 0.f);
          for (int dy = 0; dy < 3; ++dy) {
            const int y = yy - dy + 1;
            if (y < 0 || y >= H) continue;
            for (int dx = 0; dx < 3; ++dx) {
              const float* src = dcol.data() + int64_t(ci * 9 + dy * 3 + dx) * n + int64_t(y - y0) * W;
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
