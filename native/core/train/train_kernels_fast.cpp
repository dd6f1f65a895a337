#include "train_kernels_fast.h"

#include <algorithm>

#include "buffer.h"
#include "kernels_table.h"
#include "parallel.h"

namespace mghf {
namespace {

// Pixels per GEMM call of a weight gradient (its reduction depth), and the
// most chunks one float accumulator sums (8 × 512 = 4,096 pixels, SPEC §8's
// bound for float sums). Fixed, so the summation order depends on the image
// size only.
constexpr int64_t kChunk = 512;
constexpr int64_t kChunksPerSlot = 8;
constexpr int64_t kMinSlots = 16;  // enough independent tasks for the pool

// Baseline 4-wide vectors (SSE2 / NEON); this file is built without an ISA
// target, the heavy products go through the per-ISA table.
typedef float v4 __attribute__((vector_size(16)));
typedef float v4u __attribute__((vector_size(16), aligned(4), may_alias));
inline v4 load4(const float* p) { return *reinterpret_cast<const v4u*>(p); }

float sum_floats(int n, const float* x) {
  v4 acc = {};
  int i = 0;
  for (; i + 4 <= n; i += 4) acc += load4(x + i);
  float s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (; i < n; ++i) s += x[i];
  return s;
}

// Columns p0 … p0+n−1 of the 3×3 (zero padding 1) patch matrix of `in`
// [Ci, H, W] for an Ho×Wo output grid of the given stride: rows r0 … r1−1 of
// dst[(ci·9 + dy·3 + dx)][j] = in[ci, stride·y + dy − 1, stride·x + dx − 1]
// where p0 + j = y·Wo + x (0 outside the image). dst has row stride n.
void im2col3x3(int H, int W, int stride, int Wo, const float* in, int64_t p0, int n, int64_t r0,
               int64_t r1, float* dst) {
  const int64_t P = int64_t(H) * W;
  for (int64_t r = r0; r < r1; ++r) {
    const int ci = int(r / 9), dy = int(r / 3 % 3), dx = int(r % 3);
    // stride·x + dx − 1 inside [0, W) for x in [xlo, xhi).
    const int xlo = dx == 0 ? 1 : 0, xhi = W - dx >= 0 ? (W - dx) / stride + 1 : 0;
    float* d = dst + r * n;
    for (int64_t q = p0; q < p0 + n;) {
      const int y = int(q / Wo), x0 = int(q % Wo);
      const int x1 = int(std::min<int64_t>(Wo, x0 + (p0 + n - q)));
      const int yy = stride * y + dy - 1;
      if (yy < 0 || yy >= H) {
        std::fill(d, d + (x1 - x0), 0.f);
      } else {
        const float* row = in + ci * P + int64_t(yy) * W;
        const int a = std::max(x0, std::min(x1, xlo)), b = std::max(a, std::min(x1, xhi));
        std::fill(d, d + (a - x0), 0.f);
        if (stride == 1)
          std::copy(row + a + dx - 1, row + b + dx - 1, d + (a - x0));
        else
          for (int x = a; x < b; ++x) d[x - x0] = row[stride * x + dx - 1];
        std::fill(d + (b - x0), d + (x1 - x0), 0.f);
      }
      d += x1 - x0;
      q += x1 - x0;
    }
  }
}

// s[dx] = Σ_x g[x]·row[reflect(x + dx − 1)], dx = 0, 1, 2: one row pair of the
// reflection-padded depthwise weight gradient.
void row_taps(int W, const float* g, const float* row, float s[3]) {
  v4 v0 = {}, v1 = {}, v2 = {};
  int x = 1;
  for (; x + 4 <= W - 1; x += 4) {
    const v4 gv = load4(g + x);
    v0 += gv * load4(row + x - 1);
    v1 += gv * load4(row + x);
    v2 += gv * load4(row + x + 1);
  }
  float a[3] = {(v0[0] + v0[1]) + (v0[2] + v0[3]), (v1[0] + v1[1]) + (v1[2] + v1[3]),
                (v2[0] + v2[1]) + (v2[2] + v2[3])};
  for (; x < W - 1; ++x)
    for (int dx = 0; dx < 3; ++dx) a[dx] += g[x] * row[x + dx - 1];
  for (int xe : {0, W - 1})
    for (int dx = 0; dx < 3; ++dx) a[dx] += g[xe] * row[reflect_index(xe + dx - 1, W)];
  s[0] = a[0];
  s[1] = a[1];
  s[2] = a[2];
}

}  // namespace

void weight_grad(int M, int K, int64_t P, const float* dout, const float* x,
                 const ColumnSource* cols, double* dW, double* db) {
  if (P <= 0 || M <= 0 || K <= 0) return;
  const int64_t chunks = (P + kChunk - 1) / kChunk;
  const int64_t slots =
      std::min(chunks, std::max(kMinSlots, (chunks + kChunksPerSlot - 1) / kChunksPerSlot));
  const size_t MK = size_t(M) * K, stride = MK + size_t(M);
  Buffer<float> acc(size_t(slots) * stride);
  const FastKernelTable& kt = fast_kernels();
  // Slot s owns chunks s, s + slots, …: which thread runs it does not matter.
  parallel_for(slots, [&](int64_t s) {
    Buffer<float> scratch(x ? 0 : size_t(K) * kChunk);
    float* dw = acc.data() + size_t(s) * stride;
    float* sums = dw + MK;
    for (int64_t c = s; c < chunks; c += slots) {
      const int64_t p0 = c * kChunk;
      const int n = int(std::min(kChunk, P - p0));
      const bool first = c == s;
      const float* B = x ? x + p0 : scratch.data();
      if (!x) (*cols)(p0, n, scratch.data());
      kt.matmul_nt(M, n, K, dout + p0, P, B, x ? P : n, dw, K, !first);
      if (db)
        for (int m = 0; m < M; ++m) {
          const float v = sum_floats(n, dout + int64_t(m) * P + p0);
          sums[m] = first ? v : sums[m] + v;
        }
    }
  });
  // Slots added in double, in slot order.
  const int64_t total = int64_t(db ? stride : MK);
  parallel_range(total, 4096, [&](int64_t i0, int64_t i1) {
    std::vector<double> sum(size_t(i1 - i0), 0.0);
    for (int64_t s = 0; s < slots; ++s) {
      const float* src = acc.data() + size_t(s) * stride;
      for (int64_t i = i0; i < i1; ++i) sum[size_t(i - i0)] += double(src[i]);
    }
    for (int64_t i = i0; i < i1; ++i) {
      if (size_t(i) < MK) dW[i] += sum[size_t(i - i0)];
      else db[size_t(i) - MK] += sum[size_t(i - i0)];
    }
  });
}

void fast_conv1x1_weight_grad(int M, int K, int64_t P, const float* dout, const float* in,
                              double* dW, double* db) {
  weight_grad(M, K, P, dout, in, nullptr, dW, db);
}

void fast_stem_weight_grad(int N, int H, int W, const float* xh, const float* dz, double* dW,
                           double* db) {
  const ColumnSource cols = [&](int64_t p0, int n, float* dst) {
    im2col3x3(H, W, 1, W, xh, p0, n, 0, 27, dst);
  };
  weight_grad(N, 27, int64_t(H) * W, dz, nullptr, &cols, dW, db);
}

void fast_depthwise_weight_grad(int C, int H, int W, const float* g, const float* in, double* dW) {
  const int64_t P = int64_t(H) * W;
  parallel_for(C, [&](int64_t ch) {
    double acc[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    const float* gc = g + ch * P;
    const float* ic = in + ch * P;
    for (int y = 0; y < H; ++y)
      for (int dy = 0; dy < 3; ++dy) {
        float s[3];
        row_taps(W, gc + int64_t(y) * W, ic + int64_t(reflect_index(y + dy - 1, H)) * W, s);
        for (int dx = 0; dx < 3; ++dx) acc[dy * 3 + dx] += s[dx];
      }
    for (int t = 0; t < 9; ++t) dW[ch * 9 + t] += acc[t];
  });
}

void fast_conv3x3s2(int Co, int Ci, int H, int W, const float* w, const float* b, const float* in,
                    float* out) {
  const int Wo = conv_s2_out(W);
  const int64_t Po = int64_t(conv_s2_out(H)) * Wo;
  Buffer<float> col(size_t(Ci) * 9 * Po);
  parallel_range(int64_t(Ci) * 9, 4, [&](int64_t r0, int64_t r1) {
    im2col3x3(H, W, 2, Wo, in, 0, int(Po), r0, r1, col.data());
  });
  fast_kernels().gemm(Co, Ci * 9, Po, w, col.data(), out, b, false);
}

void fast_conv3x3s2_backward(int Co, int Ci, int H, int W, const float* w, const float* dout,
                             float* din) {
  const int Ho = conv_s2_out(H), Wo = conv_s2_out(W);
  const int64_t P = int64_t(H) * W, Po = int64_t(Ho) * Wo;
  Buffer<float> dcol(size_t(Ci) * 9 * Po);
  FastKernels::conv1x1_backward(Co, Ci * 9, Po, w, dout, dcol.data(), false);
  // col2im as a gather: each input row collects the taps that read it, in a
  // fixed (dy, dx) order.
  parallel_range(int64_t(Ci) * H, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int ci = int(r / H), yy = int(r % H);
      float* d = din + ci * P + int64_t(yy) * W;
      std::fill(d, d + W, 0.f);
      for (int dy = 0; dy < 3; ++dy) {
        const int t = yy + 1 - dy;  // = 2y
        if (t < 0 || t % 2 || t / 2 >= Ho) continue;
        const int y = t / 2;
        for (int dx = 0; dx < 3; ++dx) {
          const float* src = dcol.data() + (int64_t(ci) * 9 + dy * 3 + dx) * Po + int64_t(y) * Wo;
          // 2x + dx − 1 inside [0, W) for x in [xlo, xhi).
          const int xlo = dx == 0 ? 1 : 0, xhi = W - dx >= 0 ? std::min(Wo, (W - dx) / 2 + 1) : 0;
          for (int x = xlo; x < xhi; ++x) d[2 * x + dx - 1] += src[x];
        }
      }
    }
  });
}

void fast_conv3x3s2_weight_grad(int Co, int Ci, int H, int W, const float* in, const float* dout,
                                double* dW, double* db) {
  const int Wo = conv_s2_out(W);
  const ColumnSource cols = [&](int64_t p0, int n, float* dst) {
    im2col3x3(H, W, 2, Wo, in, p0, n, 0, int64_t(Ci) * 9, dst);
  };
  weight_grad(Co, Ci * 9, int64_t(conv_s2_out(H)) * Wo, dout, nullptr, &cols, dW, db);
}

}  // namespace mghf
