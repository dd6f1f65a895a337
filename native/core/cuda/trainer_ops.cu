// The trainer ops of issue 16 on the GPU (trainer_ops.h): simple, one thread
// per output element, gathers rather than atomics, float sums where the CPU
// kernel sums in float and double where it sums in double.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "cuda_check.h"
#include "trainer_ops.h"

namespace mghf {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 8192;  // grid-stride loops beyond this

int blocks_for(int64_t n) { return int(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks))); }

#define GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// nn::conv_source_index: the input index a padded tap reads, −1 for a zero.
__device__ inline int source_index(int i, int n, bool reflect) {
  if (i >= 0 && i < n) return i;
  if (!reflect) return -1;
  return i < 0 ? -i : 2 * n - 2 - i;
}

struct ConvDims {
  int B, Ci, H, W, Co, k, stride, groups, Ho, Wo, pad, cig, cog;
  bool reflect;
};

ConvDims dims_of(const nn::Conv2dShape& s) {
  return {s.B, s.Ci, s.H, s.W, s.Co, s.k, s.stride, s.groups, s.Ho(), s.Wo(), s.pad(), s.cig(), s.cog(), s.reflect};
}

__global__ void conv2d_forward_kernel(ConvDims d, const float* x, const float* w, const float* b, float* y) {
  const int64_t total = int64_t(d.B) * d.Co * d.Ho * d.Wo;
  GRID_STRIDE(i, total) {
    const int ox = int(i % d.Wo), oy = int(i / d.Wo % d.Ho), co = int(i / d.Wo / d.Ho % d.Co);
    const int n = int(i / d.Wo / d.Ho / d.Co), g = co / d.cog;
    float acc = b ? b[co] : 0.f;
    for (int c = 0; c < d.cig; ++c)
      for (int ky = 0; ky < d.k; ++ky) {
        const int iy = source_index(oy * d.stride + ky - d.pad, d.H, d.reflect);
        if (iy < 0) continue;
        const float* xr = x + ((int64_t(n) * d.Ci + g * d.cig + c) * d.H + iy) * d.W;
        const float* wr = w + ((int64_t(co) * d.cig + c) * d.k + ky) * d.k;
        for (int kx = 0; kx < d.k; ++kx) {
          const int ix = source_index(ox * d.stride + kx - d.pad, d.W, d.reflect);
          if (ix >= 0) acc += wr[kx] * xr[ix];
        }
      }
    y[i] = acc;
  }
}

// The padded positions that read input index iy (itself; and under
// reflection its mirror images −iy and 2n−2−iy): at most 3.
__device__ inline int padded_sources(int iy, int n, bool reflect, int out[3]) {
  int m = 0;
  out[m++] = iy;
  if (reflect && iy > 0) out[m++] = -iy;
  if (reflect && iy < n - 1) out[m++] = 2 * n - 2 - iy;
  return m;
}

// dx[n, ci, iy, ix] = Σ over the (co, ky, kx, oy, ox) whose tap reads it of w·dy.
__global__ void conv2d_input_grad_kernel(ConvDims d, const float* w, const float* dy, float* dx) {
  const int64_t total = int64_t(d.B) * d.Ci * d.H * d.W;
  GRID_STRIDE(i, total) {
    const int ix = int(i % d.W), iy = int(i / d.W % d.H), ci = int(i / d.W / d.H % d.Ci);
    const int n = int(i / d.W / d.H / d.Ci), g = ci / d.cig, c = ci % d.cig;
    int ys[3], xs[3];
    const int my = padded_sources(iy, d.H, d.reflect, ys), mx = padded_sources(ix, d.W, d.reflect, xs);
    float acc = 0.f;
    for (int col = 0; col < d.cog; ++col) {
      const int co = g * d.cog + col;
      const float* dyp = dy + (int64_t(n) * d.Co + co) * d.Ho * d.Wo;
      for (int ky = 0; ky < d.k; ++ky)
        for (int a = 0; a < my; ++a) {
          const int ty = ys[a] - ky + d.pad;  // = oy·stride
          if (ty < 0 || ty % d.stride || ty / d.stride >= d.Ho) continue;
          const int oy = ty / d.stride;
          for (int kx = 0; kx < d.k; ++kx)
            for (int e = 0; e < mx; ++e) {
              const int tx = xs[e] - kx + d.pad;
              if (tx < 0 || tx % d.stride || tx / d.stride >= d.Wo) continue;
              acc += w[((int64_t(co) * d.cig + c) * d.k + ky) * d.k + kx] * dyp[int64_t(oy) * d.Wo + tx / d.stride];
            }
        }
    }
    dx[i] = acc;
  }
}

// dw[co, c, ky, kx] = Σ_{n, oy, ox} dy·x at the tap, in double (one thread per weight).
__global__ void conv2d_weight_grad_kernel(ConvDims d, const float* x, const float* dy, float* dw) {
  const int64_t total = int64_t(d.Co) * d.cig * d.k * d.k;
  GRID_STRIDE(i, total) {
    const int kx = int(i % d.k), ky = int(i / d.k % d.k), c = int(i / d.k / d.k % d.cig);
    const int co = int(i / d.k / d.k / d.cig), g = co / d.cog;
    double acc = 0;
    for (int n = 0; n < d.B; ++n) {
      const float* xp = x + (int64_t(n) * d.Ci + g * d.cig + c) * d.H * d.W;
      const float* dyp = dy + (int64_t(n) * d.Co + co) * d.Ho * d.Wo;
      for (int oy = 0; oy < d.Ho; ++oy) {
        const int iy = source_index(oy * d.stride + ky - d.pad, d.H, d.reflect);
        if (iy < 0) continue;
        for (int ox = 0; ox < d.Wo; ++ox) {
          const int ix = source_index(ox * d.stride + kx - d.pad, d.W, d.reflect);
          if (ix >= 0) acc += double(dyp[int64_t(oy) * d.Wo + ox]) * double(xp[int64_t(iy) * d.W + ix]);
        }
      }
    }
    dw[i] = float(acc);
  }
}

__global__ void conv2d_bias_grad_kernel(ConvDims d, const float* dy, float* db) {
  GRID_STRIDE(co, int64_t(d.Co)) {
    double acc = 0;
    for (int n = 0; n < d.B; ++n) {
      const float* dyp = dy + (int64_t(n) * d.Co + co) * d.Ho * d.Wo;
      for (int64_t p = 0; p < int64_t(d.Ho) * d.Wo; ++p) acc += double(dyp[p]);
    }
    db[co] = float(acc);
  }
}

// One thread per element of the [B, C·r², H, W] side.
__global__ void pixel_shuffle_kernel(int64_t total, int C, int H, int W, int r, const float* src, float* dst,
                                     bool unshuffle) {
  GRID_STRIDE(q, total) {
    const int w = int(q % W), h = int(q / W % H);
    const int64_t cr = q / W / H;  // plane·r² + i·r + j
    const int j = int(cr % r), i = int(cr / r % r);
    const int64_t plane = cr / r / r;
    const int64_t big = plane * H * r * W * r + (int64_t(h) * r + i) * W * r + int64_t(w) * r + j;
    if (!unshuffle)
      dst[big] = src[q];
    else
      dst[q] = src[big];
  }
  (void)C;
}

__global__ void leaky_relu_kernel(int64_t n, float slope, const float* x, float* y) {
  GRID_STRIDE(i, n) y[i] = x[i] > 0 ? x[i] : x[i] * slope;
}

__global__ void leaky_relu_backward_kernel(int64_t n, float slope, const float* x, const float* dy, float* dx) {
  GRID_STRIDE(i, n) dx[i] = x[i] > 0 ? dy[i] : dy[i] * slope;
}

__global__ void add_scaled_kernel(int64_t n, float alpha, const float* a, const float* b, float* y) {
  GRID_STRIDE(i, n) y[i] = a[i] + alpha * b[i];
}

// One block: each thread sums its strided share of the per-element loss in
// double, then a fixed tree adds the threads; dx per element on the way.
// kind 0: L1, 1: Charbonnier.
__global__ void pixel_loss_kernel(int64_t n, int kind, double eps, const float* x, const float* y, float* dx,
                                  double* loss) {
  __shared__ double part[kThreads];
  const double inv = 1.0 / double(n);
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    if (kind == 0) {
      const float d = x[i] - y[i];
      s += fabs(double(d));
      if (dx) dx[i] = d > 0 ? float(inv) : (d < 0 ? -float(inv) : 0.f);
    } else {
      const double d = double(x[i]) - double(y[i]);
      const double r = sqrt(d * d + eps * eps);
      s += r;
      if (dx) dx[i] = float(d / r * inv);
    }
  }
  part[threadIdx.x] = s;
  __syncthreads();
  for (int h = kThreads / 2; h > 0; h /= 2) {
    if (int(threadIdx.x) < h) part[threadIdx.x] += part[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = part[0] * inv;
}

// Forward H pass: rows[pl, oh, w] = Σ_t wh·x[pl, ih, w]; W pass: y = Σ_t ww·rows.
__global__ void resize_h_kernel(int64_t planes, int in_h, int out_h, int W, int taps, const float* weight,
                                const int* index, const float* x, float* rows) {
  GRID_STRIDE(i, planes * out_h * W) {
    const int w = int(i % W), oh = int(i / W % out_h);
    const int64_t pl = i / W / out_h;
    double acc = 0;
    for (int t = 0; t < taps; ++t)
      acc += double(weight[oh * taps + t]) * x[(pl * in_h + index[oh * taps + t]) * W + w];
    rows[i] = float(acc);
  }
}

__global__ void resize_w_kernel(int64_t lines, int in_w, int out_w, int taps, const float* weight, const int* index,
                                const float* rows, float* y) {
  GRID_STRIDE(i, lines * out_w) {
    const int ow = int(i % out_w);
    const int64_t line = i / out_w;
    double acc = 0;
    for (int t = 0; t < taps; ++t) acc += double(weight[ow * taps + t]) * rows[line * in_w + index[ow * taps + t]];
    y[i] = float(acc);
  }
}

// Adjoint W pass: rows[line, iw] = Σ over the (ow, t) reading iw of w·dy[line, ow] (CSR by iw).
__global__ void resize_w_adjoint_kernel(int64_t lines, int in_w, int out_w, const int* start, const int* out,
                                        const float* weight, const float* dy, float* rows) {
  GRID_STRIDE(i, lines * in_w) {
    const int iw = int(i % in_w);
    const int64_t line = i / in_w;
    double acc = 0;
    for (int e = start[iw]; e < start[iw + 1]; ++e) acc += double(weight[e]) * dy[line * out_w + out[e]];
    rows[i] = float(acc);
  }
}

// Adjoint H pass: dx[pl, ih, w] = Σ over the (oh, t) reading ih of w·rows[pl, oh, w].
__global__ void resize_h_adjoint_kernel(int64_t planes, int in_h, int out_h, int W, const int* start, const int* out,
                                        const float* weight, const float* rows, float* dx) {
  GRID_STRIDE(i, planes * in_h * W) {
    const int w = int(i % W), ih = int(i / W % in_h);
    const int64_t pl = i / W / in_h;
    double acc = 0;
    for (int e = start[ih]; e < start[ih + 1]; ++e)
      acc += double(weight[e]) * rows[(pl * out_h + out[e]) * W + w];
    dx[i] = float(acc);
  }
}

__global__ void trainer_adam_kernel(int64_t n, float* p, float* m, float* v, const float* g, double lr, double b1, double b2,
                            double eps, double bc1, double bc2) {
  GRID_STRIDE(i, n) {
    const double gi = double(g[i]);
    m[i] = float(b1 * double(m[i]) + (1.0 - b1) * gi);
    v[i] = float(b2 * double(v[i]) + (1.0 - b2) * gi * gi);
    const double mh = double(m[i]) / bc1, vh = double(v[i]) / bc2;
    p[i] = float(double(p[i]) - lr * mh / (sqrt(vh) + eps));
  }
}

template <class T>
void upload(DeviceBuffer<T>& dst, const std::vector<T>& src, cudaStream_t stream) {
  dst.resize(src.size());
  MGHF_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
}

// The transpose of an axis as CSR by input index: start[i] … start[i+1]−1
// are the (output, weight) pairs that read input i, in output order (a fixed
// summation order).
void transpose_axis(const nn::ResizeAxis& a, std::vector<int>& start, std::vector<int>& out,
                    std::vector<float>& weight) {
  std::vector<std::vector<std::pair<int, float>>> by_input(size_t(a.in));
  for (int o = 0; o < a.out; ++o)
    for (int t = 0; t < a.taps; ++t)
      by_input[size_t(a.index[size_t(o) * a.taps + t])].push_back({o, a.weight[size_t(o) * a.taps + t]});
  for (int i = 0; i < a.in; ++i) {
    start.push_back(int(out.size()));
    for (const auto& [o, w] : by_input[size_t(i)]) {
      out.push_back(o);
      weight.push_back(w);
    }
  }
  start.push_back(int(out.size()));
}

}  // namespace

void conv2d_forward(const nn::Conv2dShape& s, const float* x, const float* w, const float* b, float* y,
                    cudaStream_t stream) {
  const ConvDims d = dims_of(s);
  conv2d_forward_kernel<<<blocks_for(int64_t(d.B) * d.Co * d.Ho * d.Wo), kThreads, 0, stream>>>(d, x, w, b, y);
  MGHF_CUDA_LAUNCH_CHECK();
}

void conv2d_backward(const nn::Conv2dShape& s, const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db, cudaStream_t stream) {
  const ConvDims d = dims_of(s);
  if (dx) {
    conv2d_input_grad_kernel<<<blocks_for(int64_t(d.B) * d.Ci * d.H * d.W), kThreads, 0, stream>>>(d, w, dy, dx);
    MGHF_CUDA_LAUNCH_CHECK();
  }
  if (dw) {
    conv2d_weight_grad_kernel<<<blocks_for(int64_t(d.Co) * d.cig * d.k * d.k), kThreads, 0, stream>>>(d, x, dy, dw);
    MGHF_CUDA_LAUNCH_CHECK();
  }
  if (db) {
    conv2d_bias_grad_kernel<<<blocks_for(d.Co), kThreads, 0, stream>>>(d, dy, db);
    MGHF_CUDA_LAUNCH_CHECK();
  }
}

void pixel_shuffle(int B, int C, int H, int W, int r, const float* src, float* dst, bool unshuffle,
                   cudaStream_t stream) {
  const int64_t total = int64_t(B) * C * r * r * H * W;
  pixel_shuffle_kernel<<<blocks_for(total), kThreads, 0, stream>>>(total, C, H, W, r, src, dst, unshuffle);
  MGHF_CUDA_LAUNCH_CHECK();
}

void leaky_relu(int64_t n, float slope, const float* x, float* y, cudaStream_t stream) {
  leaky_relu_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, slope, x, y);
  MGHF_CUDA_LAUNCH_CHECK();
}

void leaky_relu_backward(int64_t n, float slope, const float* x, const float* dy, float* dx, cudaStream_t stream) {
  leaky_relu_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, slope, x, dy, dx);
  MGHF_CUDA_LAUNCH_CHECK();
}

void add_scaled(int64_t n, float alpha, const float* a, const float* b, float* y, cudaStream_t stream) {
  add_scaled_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, alpha, a, b, y);
  MGHF_CUDA_LAUNCH_CHECK();
}

void l1_loss(int64_t n, const float* x, const float* y, float* dx, double* loss, cudaStream_t stream) {
  pixel_loss_kernel<<<1, kThreads, 0, stream>>>(n, 0, 0.0, x, y, dx, loss);
  MGHF_CUDA_LAUNCH_CHECK();
}

void charbonnier_loss(int64_t n, double eps, const float* x, const float* y, float* dx, double* loss,
                      cudaStream_t stream) {
  pixel_loss_kernel<<<1, kThreads, 0, stream>>>(n, 1, eps, x, y, dx, loss);
  MGHF_CUDA_LAUNCH_CHECK();
}

void resize_forward(int64_t planes, const nn::ResizeAxis& ah, const nn::ResizeAxis& aw, const float* x, float* y,
                    ResizeTables& tables, cudaStream_t stream) {
  std::vector<float> weight(ah.weight);
  weight.insert(weight.end(), aw.weight.begin(), aw.weight.end());
  std::vector<int> index(ah.index);
  index.insert(index.end(), aw.index.begin(), aw.index.end());
  upload(tables.weight, weight, stream);
  upload(tables.index, index, stream);
  tables.rows.resize(size_t(planes) * ah.out * aw.in);
  const size_t hw = ah.weight.size();
  resize_h_kernel<<<blocks_for(planes * ah.out * aw.in), kThreads, 0, stream>>>(
      planes, ah.in, ah.out, aw.in, ah.taps, tables.weight.data(), tables.index.data(), x, tables.rows.data());
  MGHF_CUDA_LAUNCH_CHECK();
  resize_w_kernel<<<blocks_for(planes * ah.out * aw.out), kThreads, 0, stream>>>(
      planes * ah.out, aw.in, aw.out, aw.taps, tables.weight.data() + hw, tables.index.data() + hw,
      tables.rows.data(), y);
  MGHF_CUDA_LAUNCH_CHECK();
  // The host tables must outlive their copies.
  MGHF_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void resize_adjoint(int64_t planes, const nn::ResizeAxis& ah, const nn::ResizeAxis& aw, const float* dy, float* dx,
                    ResizeTables& tables, cudaStream_t stream) {
  std::vector<int> hs, ho, ws, wo;
  std::vector<float> hwt, wwt;
  transpose_axis(ah, hs, ho, hwt);
  transpose_axis(aw, ws, wo, wwt);
  // One upload each: h's table, then w's (w's starts shifted by h's entry count).
  const int h_entries = int(ho.size());
  for (int& v : ws) v += h_entries;
  std::vector<int> start(hs), out(ho);
  std::vector<float> weight(hwt);
  start.insert(start.end(), ws.begin(), ws.end());
  out.insert(out.end(), wo.begin(), wo.end());
  weight.insert(weight.end(), wwt.begin(), wwt.end());
  upload(tables.t_start, start, stream);
  upload(tables.t_out, out, stream);
  upload(tables.t_weight, weight, stream);
  tables.rows.resize(size_t(planes) * ah.out * aw.in);
  resize_w_adjoint_kernel<<<blocks_for(planes * ah.out * aw.in), kThreads, 0, stream>>>(
      planes * ah.out, aw.in, aw.out, tables.t_start.data() + hs.size(), tables.t_out.data(),
      tables.t_weight.data(), dy, tables.rows.data());
  MGHF_CUDA_LAUNCH_CHECK();
  resize_h_adjoint_kernel<<<blocks_for(planes * ah.in * aw.in), kThreads, 0, stream>>>(
      planes, ah.in, ah.out, aw.in, tables.t_start.data(), tables.t_out.data(), tables.t_weight.data(),
      tables.rows.data(), dx);
  MGHF_CUDA_LAUNCH_CHECK();
  MGHF_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void adam_step(int64_t n, float* p, float* m, float* v, const float* g, double lr, double beta1, double beta2,
               double eps, int64_t step, cudaStream_t stream) {
  const double bc1 = 1.0 - std::pow(beta1, double(step)), bc2 = 1.0 - std::pow(beta2, double(step));
  trainer_adam_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, p, m, v, g, lr, beta1, beta2, eps, bc1, bc2);
  MGHF_CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace mghf
