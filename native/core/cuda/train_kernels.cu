// CUDA versions of the pretraining ops (train_kernels_reference.h, head.h,
// classifier.h, adam.h). Deterministic: no atomics; every reduction runs in a
// fixed order (float partial sums over pixel chunks of ≤ kWeightGradChunk,
// then chunks added in double, image by image). No fast-math.
#include <algorithm>
#include <string>

#include "cuda_check.h"
#include "train_kernels.h"

namespace mghf {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 8192;
constexpr int kMaxGridYZ = 65535;

int elementwise_blocks(int64_t n) {
  return int(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}
unsigned blocks_for(int64_t n, int per_block) { return unsigned((n + per_block - 1) / per_block); }
unsigned grid_yz(int64_t n, const char* what) {
  if (n > kMaxGridYZ)
    throw Error("E_UNSUPPORTED", std::string("CUDA trainer: ") + what + " " + std::to_string(n) +
                                     " exceeds " + std::to_string(kMaxGridYZ));
  return unsigned(n);
}

__device__ __forceinline__ int reflect(int i, int n) {
  return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i);
}

// ---- weight gradients: dW[M×K] (+ db as column K) = Σ dout·Xᵀ ---------------
//
// X[k, p] of image b comes from a source functor: the input itself (1×1), or
// an on-the-fly im2col of a 3×3 convolution (stem, head). Column K (when
// cols = K + 1) is the bias: X = 1.

struct Src1x1 {
  const float* in;
  int64_t bs, P;
  __device__ float operator()(int b, int k, int64_t p) const {
    return in[int64_t(b) * bs + int64_t(k) * P + p];
  }
};

// Stem: k = (ci·3 + dy)·3 + dx, stride 1, zero padding 1; p an output pixel.
struct SrcStem {
  const float* xh;
  int H, W;
  __device__ float operator()(int b, int k, int64_t p) const {
    const int ci = k / 9, dy = k / 3 % 3, dx = k % 3;
    const int y = int(p / W), x = int(p % W);
    const int yy = y + dy - 1, xx = x + dx - 1;
    if (yy < 0 || yy >= H || xx < 0 || xx >= W) return 0.f;
    const int64_t P = int64_t(H) * W;
    return xh[(int64_t(b) * 3 + ci) * P + int64_t(yy) * W + xx];
  }
};

// Head conv: k = ci·9 + dy·3 + dx, stride 2, zero padding 1; p an output pixel.
struct SrcS2 {
  const float* in;
  int Ci, H, W, Wo;
  __device__ float operator()(int b, int k, int64_t p) const {
    const int ci = k / 9, dy = k / 3 % 3, dx = k % 3;
    const int y = int(p / Wo), x = int(p % Wo);
    const int yy = 2 * y + dy - 1, xx = 2 * x + dx - 1;
    if (yy < 0 || yy >= H || xx < 0 || xx >= W) return 0.f;
    return in[(int64_t(b) * Ci + ci) * (int64_t(H) * W) + int64_t(yy) * W + xx];
  }
};

// One block: the 64×64 tile (m0, k0) of chunk blockIdx.z's partial sums.
// 256 threads, each 4×4 outputs (rows tm + 16i, columns tk + 16j), pixels in
// slices of 16 through shared memory, summed in ascending pixel order.
constexpr int kWgM = 64, kWgK = 64, kWgP = 16, kWgThreads = 256;

template <class Src>
__global__ void __launch_bounds__(kWgThreads)
    wgrad_partial_kernel(int M, int K, int cols, int64_t P, int chunks_per_image,
                         const float* __restrict__ dout, int64_t dout_bs, Src src,
                         float* __restrict__ partial) {
  __shared__ float Ds[kWgP][kWgM + 1];
  __shared__ float Xs[kWgP][kWgK + 1];
  const int tid = threadIdx.x, tk = tid % 16, tm = tid / 16;
  const int m0 = blockIdx.y * kWgM, k0 = blockIdx.x * kWgK;
  const int chunk = blockIdx.z, b = chunk / chunks_per_image, j = chunk % chunks_per_image;
  const int64_t pb = int64_t(j) * kWeightGradChunk;
  const int64_t pe = min(P, pb + kWeightGradChunk);
  const float* d = dout + int64_t(b) * dout_bs;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) acc[i][jj] = 0.f;
  for (int64_t p0 = pb; p0 < pe; p0 += kWgP) {
#pragma unroll
    for (int r = 0; r < kWgM * kWgP / kWgThreads; ++r) {
      const int e = tid + r * kWgThreads, pp = e % kWgP, rr = e / kWgP;
      const int64_t p = p0 + pp;
      const int m = m0 + rr, k = k0 + rr;
      Ds[pp][rr] = (m < M && p < pe) ? d[int64_t(m) * P + p] : 0.f;
      Xs[pp][rr] = (k < cols && p < pe) ? (k < K ? src(b, k, p) : 1.f) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int pp = 0; pp < kWgP; ++pp) {
      float a[4], x[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = Ds[pp][tm + 16 * i];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) x[jj] = Xs[pp][tk + 16 * jj];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) acc[i][jj] = fmaf(a[i], x[jj], acc[i][jj]);
    }
    __syncthreads();
  }
  float* out = partial + int64_t(chunk) * M * cols;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + tm + 16 * i;
    if (m >= M) continue;
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      const int k = k0 + tk + 16 * jj;
      if (k < cols) out[int64_t(m) * cols + k] = acc[i][jj];
    }
  }
}

// dW[m, k] += Σ_chunk partial (in double, chunks in order) for k < K; column
// K (when cols > K) into db[m].
__global__ void wgrad_reduce_kernel(int M, int K, int cols, int chunks,
                                    const float* __restrict__ partial, double* __restrict__ dW,
                                    double* __restrict__ db) {
  const int64_t n = int64_t(M) * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    double s = 0;
    for (int c = 0; c < chunks; ++c) s += double(partial[int64_t(c) * n + i]);
    const int m = int(i / cols), k = int(i % cols);
    if (k < K)
      dW[int64_t(m) * K + k] += s;
    else if (db)
      db[m] += s;
  }
}

template <class Src>
void weight_grad(int B, int M, int K, bool bias, int64_t P, const float* dout, int64_t dout_bs,
                 Src src, double* dW, double* db, WeightGradScratch& scratch,
                 cudaStream_t stream) {
  if (B == 0 || M == 0 || P == 0) return;
  const int cols = K + (bias ? 1 : 0);
  if (cols == 0) return;
  const int cpi = int((P + kWeightGradChunk - 1) / kWeightGradChunk);
  const int64_t chunks = int64_t(B) * cpi;
  float* partial = scratch.get(size_t(chunks) * size_t(M) * size_t(cols));
  const dim3 grid(blocks_for(cols, kWgK), grid_yz(blocks_for(M, kWgM), "rows"),
                  grid_yz(chunks, "pixel chunks"));
  wgrad_partial_kernel<Src><<<grid, kWgThreads, 0, stream>>>(M, K, cols, P, cpi, dout, dout_bs,
                                                             src, partial);
  MGHF_CUDA_LAUNCH_CHECK();
  wgrad_reduce_kernel<<<elementwise_blocks(int64_t(M) * cols), kThreads, 0, stream>>>(
      M, K, cols, int(chunks), partial, dW, bias ? db : nullptr);
  MGHF_CUDA_LAUNCH_CHECK();
}

// ---- depthwise weight gradient ---------------------------------------------

// Block (chunk, channel): 9 float sums over the chunk's pixels (thread t takes
// pixels t, t + 256, …), then a fixed tree over the threads.
__global__ void __launch_bounds__(kThreads)
    depthwise_wgrad_partial_kernel(int C, int H, int W, int chunks_per_image,
                                   const float* __restrict__ g, const uint8_t* __restrict__ mask,
                                   const float* __restrict__ in, float* __restrict__ partial) {
  __shared__ float s[9][kThreads];
  const int64_t P = int64_t(H) * W;
  const int chunk = blockIdx.x, ch = blockIdx.y;
  const int b = chunk / chunks_per_image, j = chunk % chunks_per_image;
  const int64_t pb = int64_t(j) * kWeightGradChunk;
  const int64_t pe = min(P, pb + kWeightGradChunk);
  const int64_t plane = (int64_t(b) * C + ch) * P;
  float acc[9];
#pragma unroll
  for (int t = 0; t < 9; ++t) acc[t] = 0.f;
  for (int64_t p = pb + threadIdx.x; p < pe; p += kThreads) {
    if (mask && !mask[plane + p]) continue;
    const float gv = g[plane + p];
    const int y = int(p / W), x = int(p % W);
#pragma unroll
    for (int dy = 0; dy < 3; ++dy) {
      const float* row = in + plane + int64_t(reflect(y + dy - 1, H)) * W;
#pragma unroll
      for (int dx = 0; dx < 3; ++dx)
        acc[dy * 3 + dx] = fmaf(gv, row[reflect(x + dx - 1, W)], acc[dy * 3 + dx]);
    }
  }
#pragma unroll
  for (int t = 0; t < 9; ++t) s[t][threadIdx.x] = acc[t];
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (int(threadIdx.x) < stride)
#pragma unroll
      for (int t = 0; t < 9; ++t) s[t][threadIdx.x] += s[t][threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x < 9) partial[(int64_t(chunk) * C + ch) * 9 + threadIdx.x] = s[threadIdx.x][0];
}

// ---- head: conv3x3 stride 2 -------------------------------------------------

// One thread per output pixel of channel o: bias, then ci, dy, dx ascending.
// grid (⌈Po/256⌉, Co, B).
__global__ void __launch_bounds__(kThreads)
    conv3x3s2_kernel(int Co, int Ci, int H, int W, const float* __restrict__ w,
                     const float* __restrict__ bias, const float* __restrict__ in,
                     float* __restrict__ out, bool relu) {
  const int Ho = (H - 1) / 2 + 1, Wo = (W - 1) / 2 + 1;
  const int64_t Po = int64_t(Ho) * Wo, P = int64_t(H) * W;
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= Po) return;
  const int o = blockIdx.y, b = blockIdx.z, y = int(p / Wo), x = int(p % Wo);
  const float* ib = in + int64_t(b) * Ci * P;
  const float* wo = w + int64_t(o) * Ci * 9;
  float acc = bias[o];
  for (int ci = 0; ci < Ci; ++ci) {
    const float* plane = ib + int64_t(ci) * P;
    const float* wc = wo + ci * 9;
#pragma unroll
    for (int dy = 0; dy < 3; ++dy) {
      const int yy = 2 * y + dy - 1;
      if (yy < 0 || yy >= H) continue;
#pragma unroll
      for (int dx = 0; dx < 3; ++dx) {
        const int xx = 2 * x + dx - 1;
        if (xx < 0 || xx >= W) continue;
        acc = fmaf(wc[dy * 3 + dx], plane[int64_t(yy) * W + xx], acc);
      }
    }
  }
  if (relu) acc = acc > 0.f ? acc : 0.f;
  out[(int64_t(b) * Co + o) * Po + p] = acc;
}

// Gather per input pixel (yy, xx) of channel ci: the outputs (y, x) with
// 2y + dy − 1 = yy and 2x + dx − 1 = xx. grid (⌈P/256⌉, Ci, B).
__global__ void __launch_bounds__(kThreads)
    conv3x3s2_backward_kernel(int Co, int Ci, int H, int W, const float* __restrict__ w,
                              const float* __restrict__ dout, float* __restrict__ din) {
  const int Ho = (H - 1) / 2 + 1, Wo = (W - 1) / 2 + 1;
  const int64_t Po = int64_t(Ho) * Wo, P = int64_t(H) * W;
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= P) return;
  const int ci = blockIdx.y, b = blockIdx.z, yy = int(p / W), xx = int(p % W);
  // Tap d of each axis reads this pixel when yy + 1 − d = 2y (x likewise) for
  // an output row y (column x) in range; flags and positions stay in
  // registers (the loops below are unrolled).
  bool vy[3], vx[3];
  int oy[3], ox[3];
#pragma unroll
  for (int d = 0; d < 3; ++d) {
    const int t = yy + 1 - d, u = xx + 1 - d;
    vy[d] = t >= 0 && t % 2 == 0 && t / 2 < Ho;
    oy[d] = vy[d] ? t / 2 : 0;
    vx[d] = u >= 0 && u % 2 == 0 && u / 2 < Wo;
    ox[d] = vx[d] ? u / 2 : 0;
  }
  const float* db = dout + int64_t(b) * Co * Po;
  float acc = 0.f;
  for (int o = 0; o < Co; ++o) {
    const float* wc = w + (int64_t(o) * Ci + ci) * 9;
    const float* plane = db + int64_t(o) * Po;
#pragma unroll
    for (int dy = 0; dy < 3; ++dy)
#pragma unroll
      for (int dx = 0; dx < 3; ++dx)
        if (vy[dy] && vx[dx])
          acc = fmaf(wc[dy * 3 + dx], plane[int64_t(oy[dy]) * Wo + ox[dx]], acc);
  }
  din[(int64_t(b) * Ci + ci) * P + p] = acc;
}

__global__ void relu_backward_kernel(int64_t n, const float* __restrict__ act,
                                     float* __restrict__ d) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    d[i] = act[i] > 0.f ? d[i] : 0.f;
}

// ---- head: pooling, FC, softmax cross-entropy ------------------------------

__global__ void pool_kernel(int64_t rows, int64_t P, const float* __restrict__ in,
                            float* __restrict__ pooled) {
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0;
    const float* src = in + r * P;
    for (int64_t p = 0; p < P; ++p) sum += double(src[p]);
    pooled[r] = float(sum / double(P));
  }
}

__global__ void fc_kernel(int B, int N, int classes, const float* __restrict__ w,
                          const float* __restrict__ bias, const float* __restrict__ pooled,
                          float* __restrict__ logits) {
  const int64_t n = int64_t(B) * classes;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int b = int(i / classes), k = int(i % classes);
    const float* wk = w + int64_t(k) * N;
    const float* pb = pooled + int64_t(b) * N;
    float acc = bias[k];
    for (int ch = 0; ch < N; ++ch) acc = fmaf(wk[ch], pb[ch], acc);
    logits[i] = acc;
  }
}

__global__ void softmax_xent_kernel(int B, int classes, const float* __restrict__ logits,
                                    const int* __restrict__ labels, double* __restrict__ loss,
                                    int* __restrict__ correct, float* __restrict__ dlogits) {
  for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < B; b += gridDim.x * blockDim.x) {
    const float* z = logits + int64_t(b) * classes;
    const int label = labels[b];
    int best = 0;
    double zmax = double(z[0]);
    for (int k = 1; k < classes; ++k)
      if (double(z[k]) > zmax) {
        zmax = double(z[k]);
        best = k;
      }
    double se = 0;
    for (int k = 0; k < classes; ++k) se += exp(double(z[k]) - zmax);
    const double lse = zmax + log(se);
    loss[b] = lse - double(z[label]);
    correct[b] = best == label ? 1 : 0;
    if (dlogits)
      for (int k = 0; k < classes; ++k)
        dlogits[int64_t(b) * classes + k] =
            float((exp(double(z[k]) - lse) - (k == label ? 1.0 : 0.0)) / double(B));
  }
}

// Thread per (k, ch), ch = N the bias: images in order, in double.
__global__ void fc_wgrad_kernel(int B, int N, int classes, const float* __restrict__ pooled,
                                const float* __restrict__ dlogits, double* __restrict__ dW,
                                double* __restrict__ db) {
  const int64_t n = int64_t(classes) * (N + 1);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int k = int(i / (N + 1)), ch = int(i % (N + 1));
    double s = 0;
    for (int b = 0; b < B; ++b) {
      const float g = dlogits[int64_t(b) * classes + k];
      s += ch < N ? double(g * pooled[int64_t(b) * N + ch]) : double(g);
    }
    if (ch < N)
      dW[int64_t(k) * N + ch] += s;
    else
      db[k] += s;
  }
}

__global__ void pool_fc_backward_kernel(int B, int N, int classes, int64_t Po,
                                        const float* __restrict__ w,
                                        const float* __restrict__ dlogits,
                                        float* __restrict__ dout) {
  const int64_t n = int64_t(B) * N * Po;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / Po;
    const int b = int(r / N), ch = int(r % N);
    const float* dl = dlogits + int64_t(b) * classes;
    float g = 0.f;
    for (int k = 0; k < classes; ++k) g = fmaf(w[int64_t(k) * N + ch], dl[k], g);
    dout[i] = g / float(Po);
  }
}

// ---- Adam ---------------------------------------------------------------------

__global__ void adam_kernel(int64_t n, float* __restrict__ p, float* __restrict__ m,
                            float* __restrict__ v, const double* __restrict__ g, double lr,
                            double beta1, double beta2, double eps, double bc1, double bc2) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double gi = g[i];
    const float mi = float(beta1 * double(m[i]) + (1.0 - beta1) * gi);
    const float vi = float(beta2 * double(v[i]) + (1.0 - beta2) * gi * gi);
    m[i] = mi;
    v[i] = vi;
    const double mh = double(mi) / bc1, vh = double(vi) / bc2;
    p[i] = float(double(p[i]) - lr * mh / (sqrt(vh) + eps));
  }
}

__global__ void nonfinite_kernel(int64_t n, const double* __restrict__ g, int* __restrict__ flag) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    if (!isfinite(g[i])) atomicOr(flag, 1);  // many writers: atomically (a plain store would race)
}

}  // namespace

// ---- launchers ---------------------------------------------------------------

void conv1x1_weight_grad(int B, int M, int K, int64_t P, const float* dout, int64_t dout_bs,
                         const float* in, int64_t in_bs, double* dW, double* db,
                         WeightGradScratch& scratch, cudaStream_t stream) {
  weight_grad(B, M, K, db != nullptr, P, dout, dout_bs, Src1x1{in, in_bs, P}, dW, db, scratch,
              stream);
}

void stem_weight_grad(int B, int N, int H, int W, const float* xh, const float* dz, int64_t dz_bs,
                      double* dW, double* db, WeightGradScratch& scratch, cudaStream_t stream) {
  weight_grad(B, N, 27, db != nullptr, int64_t(H) * W, dz, dz_bs, SrcStem{xh, H, W}, dW, db,
              scratch, stream);
}

void depthwise_weight_grad(int B, int C, int H, int W, const float* g, const uint8_t* mask,
                           const float* in, double* dW, WeightGradScratch& scratch,
                           cudaStream_t stream) {
  const int64_t P = int64_t(H) * W;
  if (B == 0 || C == 0 || P == 0) return;
  const int cpi = int((P + kWeightGradChunk - 1) / kWeightGradChunk);
  const int64_t chunks = int64_t(B) * cpi;
  if (chunks > 0x7fffffff) throw Error("E_UNSUPPORTED", "CUDA trainer: too many pixel chunks");
  float* partial = scratch.get(size_t(chunks) * size_t(C) * 9);
  const dim3 grid(unsigned(chunks), grid_yz(C, "channels"));
  depthwise_wgrad_partial_kernel<<<grid, kThreads, 0, stream>>>(C, H, W, cpi, g, mask, in,
                                                                partial);
  MGHF_CUDA_LAUNCH_CHECK();
  wgrad_reduce_kernel<<<elementwise_blocks(int64_t(C) * 9), kThreads, 0, stream>>>(
      C, 9, 9, int(chunks), partial, dW, nullptr);
  MGHF_CUDA_LAUNCH_CHECK();
}

void conv3x3s2(int B, int Co, int Ci, int H, int W, const float* w, const float* bias,
               const float* in, float* out, bool relu, cudaStream_t stream) {
  const int64_t Po = int64_t((H - 1) / 2 + 1) * ((W - 1) / 2 + 1);
  if (B == 0 || Co == 0 || H <= 0 || W <= 0) return;
  const dim3 grid(blocks_for(Po, kThreads), grid_yz(Co, "channels"), grid_yz(B, "batch"));
  conv3x3s2_kernel<<<grid, kThreads, 0, stream>>>(Co, Ci, H, W, w, bias, in, out, relu);
  MGHF_CUDA_LAUNCH_CHECK();
}

void conv3x3s2_backward(int B, int Co, int Ci, int H, int W, const float* w, const float* dout,
                        float* din, cudaStream_t stream) {
  const int64_t P = int64_t(H) * W;
  if (B == 0 || Ci == 0 || P <= 0) return;
  const dim3 grid(blocks_for(P, kThreads), grid_yz(Ci, "channels"), grid_yz(B, "batch"));
  conv3x3s2_backward_kernel<<<grid, kThreads, 0, stream>>>(Co, Ci, H, W, w, dout, din);
  MGHF_CUDA_LAUNCH_CHECK();
}

void conv3x3s2_weight_grad(int B, int Co, int Ci, int H, int W, const float* in, const float* dout,
                           double* dW, double* db, WeightGradScratch& scratch,
                           cudaStream_t stream) {
  const int Ho = (H - 1) / 2 + 1, Wo = (W - 1) / 2 + 1;
  const int64_t Po = int64_t(Ho) * Wo;
  weight_grad(B, Co, Ci * 9, db != nullptr, Po, dout, int64_t(Co) * Po, SrcS2{in, Ci, H, W, Wo},
              dW, db, scratch, stream);
}

void relu_backward(int64_t n, const float* act, float* d, cudaStream_t stream) {
  if (n == 0) return;
  relu_backward_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(n, act, d);
  MGHF_CUDA_LAUNCH_CHECK();
}

void global_avg_pool(int B, int N, int64_t P, const float* in, float* pooled,
                     cudaStream_t stream) {
  const int64_t rows = int64_t(B) * N;
  if (rows == 0) return;
  pool_kernel<<<elementwise_blocks(rows), kThreads, 0, stream>>>(rows, P, in, pooled);
  MGHF_CUDA_LAUNCH_CHECK();
}

void fc_forward(int B, int N, int classes, const float* w, const float* b, const float* pooled,
                float* logits, cudaStream_t stream) {
  const int64_t n = int64_t(B) * classes;
  if (n == 0) return;
  fc_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(B, N, classes, w, b, pooled, logits);
  MGHF_CUDA_LAUNCH_CHECK();
}

void softmax_cross_entropy(int B, int classes, const float* logits, const int* labels,
                           double* loss, int* correct, float* dlogits, cudaStream_t stream) {
  if (B == 0 || classes == 0) return;
  softmax_xent_kernel<<<elementwise_blocks(B), kThreads, 0, stream>>>(B, classes, logits, labels,
                                                                      loss, correct, dlogits);
  MGHF_CUDA_LAUNCH_CHECK();
}

void fc_weight_grad(int B, int N, int classes, const float* pooled, const float* dlogits,
                    double* dW, double* db, cudaStream_t stream) {
  const int64_t n = int64_t(classes) * (N + 1);
  if (n == 0 || B == 0) return;
  fc_wgrad_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(B, N, classes, pooled, dlogits,
                                                                  dW, db);
  MGHF_CUDA_LAUNCH_CHECK();
}

void pool_fc_backward(int B, int N, int classes, int64_t Po, const float* w, const float* dlogits,
                      float* dout, cudaStream_t stream) {
  const int64_t n = int64_t(B) * N * Po;
  if (n == 0) return;
  pool_fc_backward_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(B, N, classes, Po, w,
                                                                          dlogits, dout);
  MGHF_CUDA_LAUNCH_CHECK();
}

void adam_update(int64_t n, float* p, float* m, float* v, const double* g, double lr,
                 double beta1, double beta2, double eps, double bc1, double bc2,
                 cudaStream_t stream) {
  if (n == 0) return;
  adam_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(n, p, m, v, g, lr, beta1, beta2,
                                                              eps, bc1, bc2);
  MGHF_CUDA_LAUNCH_CHECK();
}

void flag_nonfinite(int64_t n, const double* g, int* flag, cudaStream_t stream) {
  if (n == 0) return;
  nonfinite_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(n, g, flag);
  MGHF_CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace mghf
