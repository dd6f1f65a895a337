// conv2d_fast / conv2d_backward_fast: im2col + the per-ISA GEMM
// (kernels_table.h), per sample and group; the weight gradient through
// train/train_kernels_fast.h's weight_grad, whose fixed pixel chunks summed in
// double make it independent of the thread count.
#include <algorithm>
#include <vector>

#include "buffer.h"
#include "kernels_fast.h"
#include "kernels_table.h"
#include "nn/conv2d.h"
#include "parallel.h"
#include "train/train_kernels_fast.h"

namespace mghf {
namespace nn {
namespace {

// For each kx and output column ox, the input column the tap reads (−1: a
// zero): computed once per call so the im2col inner loop is a gather.
struct ColumnMap {
  int Wo, k;
  std::vector<int> src;  // [k][Wo]
  explicit ColumnMap(const Conv2dShape& s) : Wo(s.Wo()), k(s.k), src(size_t(s.k) * s.Wo()) {
    for (int kx = 0; kx < k; ++kx)
      for (int ox = 0; ox < Wo; ++ox)
        src[size_t(kx) * Wo + ox] = conv_source_index(ox * s.stride + kx - s.pad(), s.W, s.reflect);
  }
  const int* row(int kx) const { return src.data() + size_t(kx) * Wo; }
};

// Rows r0 … r1−1, columns p0 … p0+n−1 of the patch matrix of one sample's
// group xg [cig, H, W]: dst[r][j] (row stride n) = xg[c, src(oy·s+ky−p),
// src(ox·s+kx−p)] with r = (c·k + ky)·k + kx, p0 + j = oy·Wo + ox.
void im2col(const Conv2dShape& s, const ColumnMap& cm, const float* xg, int64_t p0, int n,
            int64_t r0, int64_t r1, float* dst) {
  const int k = s.k, Wo = s.Wo();
  const int64_t plane = int64_t(s.H) * s.W;
  for (int64_t r = r0; r < r1; ++r) {
    const int c = int(r / (k * k)), ky = int(r / k % k), kx = int(r % k);
    const int* xs = cm.row(kx);
    float* d = dst + r * n;
    for (int64_t q = p0; q < p0 + n;) {
      const int oy = int(q / Wo), x0 = int(q % Wo);
      const int x1 = int(std::min<int64_t>(Wo, x0 + (p0 + n - q)));
      const int iy = conv_source_index(oy * s.stride + ky - s.pad(), s.H, s.reflect);
      if (iy < 0) {
        std::fill(d, d + (x1 - x0), 0.f);
      } else {
        const float* src = xg + c * plane + int64_t(iy) * s.W;
        for (int ox = x0; ox < x1; ++ox) d[ox - x0] = xs[ox] < 0 ? 0.f : src[xs[ox]];
      }
      d += x1 - x0;
      q += x1 - x0;
    }
  }
}

// A 1×1 stride-1 convolution reads its input as the patch matrix itself.
bool is_pointwise(const Conv2dShape& s) { return s.k == 1 && s.stride == 1; }

}  // namespace

void conv2d_fast(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y) {
  const int cig = s.cig(), cog = s.cog();
  const int64_t Po = int64_t(s.Ho()) * s.Wo(), K = int64_t(cig) * s.k * s.k;
  const int64_t plane = int64_t(s.H) * s.W;
  const FastKernelTable& kt = fast_kernels();
  const ColumnMap cm(s);
  Buffer<float> col(is_pointwise(s) ? 0 : size_t(K * Po));
  for (int n = 0; n < s.B; ++n)
    for (int g = 0; g < s.groups; ++g) {
      const float* xg = x + (int64_t(n) * s.Ci + int64_t(g) * cig) * plane;
      const float* B = xg;
      if (!is_pointwise(s)) {
        parallel_range(K, 4, [&](int64_t r0, int64_t r1) {
          im2col(s, cm, xg, 0, int(Po), r0, r1, col.data());
        });
        B = col.data();
      }
      // The GEMM threads over its own pixel tiles.
      kt.gemm(cog, int(K), Po, w + int64_t(g) * cog * K, B,
              y + (int64_t(n) * s.Co + int64_t(g) * cog) * Po, b ? b + int64_t(g) * cog : nullptr,
              false);
    }
}

void conv2d_backward_fast(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* db) {
  const int cig = s.cig(), cog = s.cog(), k = s.k, Wo = s.Wo(), Ho = s.Ho();
  const int64_t Po = int64_t(Ho) * Wo, K = int64_t(cig) * k * k;
  const int64_t plane = int64_t(s.H) * s.W;
  const ColumnMap cm(s);
  std::vector<double> gw(dw ? size_t(s.Co * K) : 0), gb(db ? size_t(s.Co) : 0);
  Buffer<float> dcol(dx && !is_pointwise(s) ? size_t(K * Po) : 0);
  for (int n = 0; n < s.B; ++n)
    for (int g = 0; g < s.groups; ++g) {
      const int64_t xoff = (int64_t(n) * s.Ci + int64_t(g) * cig) * plane;
      const float* dyg = dy + (int64_t(n) * s.Co + int64_t(g) * cog) * Po;
      const float* wg = w + int64_t(g) * cog * K;
      if (dx && is_pointwise(s)) {
        FastKernels::conv1x1_backward(cog, int(K), Po, wg, dyg, dx + xoff, false);
      } else if (dx) {
        // dcol = Wgᵀ·dy, then col2im: each input channel gathers its own rows
        // (channels are independent, so they run in parallel).
        FastKernels::conv1x1_backward(cog, int(K), Po, wg, dyg, dcol.data(), false);
        parallel_for(cig, [&](int64_t c) {
          float* dxc = dx + xoff + c * plane;
          std::fill(dxc, dxc + plane, 0.f);
          for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx) {
              const float* src = dcol.data() + ((c * k + ky) * k + kx) * Po;
              const int* xs = cm.row(kx);
              for (int oy = 0; oy < Ho; ++oy) {
                const int iy = conv_source_index(oy * s.stride + ky - s.pad(), s.H, s.reflect);
                if (iy < 0) continue;
                float* d = dxc + int64_t(iy) * s.W;
                const float* sr = src + int64_t(oy) * Wo;
                for (int ox = 0; ox < Wo; ++ox)
                  if (xs[ox] >= 0) d[xs[ox]] += sr[ox];
              }
            }
        });
      }
      if (dw || db) {
        const float* xg = x + xoff;
        const ColumnSource cols = [&](int64_t p0, int cn, float* dst) {
          im2col(s, cm, xg, p0, cn, 0, K, dst);
        };
        // weight_grad adds dW and db together; a db-only call still needs a dW target.
        std::vector<double> scratch(dw ? 0 : size_t(cog * K));
        double* dWg = dw ? gw.data() + int64_t(g) * cog * K : scratch.data();
        weight_grad(cog, int(K), Po, dyg, is_pointwise(s) ? xg : nullptr,
                    is_pointwise(s) ? nullptr : &cols, dWg, db ? gb.data() + int64_t(g) * cog : nullptr);
      }
    }
  for (size_t i = 0; i < gw.size(); ++i) dw[i] = float(gw[i]);
  for (size_t i = 0; i < gb.size(); ++i) db[i] = float(gb[i]);
}

}  // namespace nn
}  // namespace mghf
