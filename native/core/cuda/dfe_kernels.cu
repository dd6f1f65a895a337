// CUDA versions of the DFE ops of kernels_reference.h (SPEC §2) and of L_n's
// reduction (SPEC §3), one kernel per reference function. Each kernel keeps the
// reference's summation order per output (bias first, then k ascending; 3×3
// taps row-major), so GPU and CPU differ by rounding and FMA contraction only.
// No fast-math: expf and division are the IEEE-accurate device versions.
#include <algorithm>
#include <string>
#include <utility>

#include "cuda_check.h"
#include "dfe_kernels.h"
#include "device_buffer.h"

namespace mghf {
namespace cuda {
namespace {

constexpr int kThreads = 256;          // elementwise and per-pixel kernels
constexpr int64_t kMaxBlocks = 8192;   // grid-stride loops beyond this
constexpr int kMaxGridZ = 65535;       // the batch runs on gridDim.z

int elementwise_blocks(int64_t n) {
  return int(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

unsigned batch_z(int B) {
  if (B > kMaxGridZ)
    throw Error("E_UNSUPPORTED", "CUDA backend: batch " + std::to_string(B) + " exceeds " +
                                     std::to_string(kMaxGridZ));
  return unsigned(B);
}

unsigned blocks_for(int64_t n, int per_block) { return unsigned((n + per_block - 1) / per_block); }

// reflect_index of kernels_reference.h: ReflectionPad2d(1), −1 reads 1, n reads n−2.
__device__ __forceinline__ int reflect(int i, int n) {
  return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i);
}
__device__ __forceinline__ float relu6(float a) { return a < 0.f ? 0.f : (a > 6.f ? 6.f : a); }
__device__ __forceinline__ uint8_t relu6_mask(float a) { return (a > 0.f && a < 6.f) ? 1 : 0; }

// ---- normalise (dfe_forward's first loop, dfe_backward's last) ------------

struct PerChannel {
  float a0, a1, a2, b0, b1, b2;
};
// Selects by value, so the kernel keeps the six floats in registers.
__device__ __forceinline__ float pick(int ch, float v0, float v1, float v2) {
  return ch == 0 ? v0 : (ch == 1 ? v1 : v2);
}

// xh = (x − mean) / std, or ((x + 1) / 2 − mean) / std (SPEC §1, §2.1).
__global__ void normalise_kernel(int64_t n, int64_t P, bool symmetric, PerChannel ms,
                                 const float* __restrict__ x, float* __restrict__ xh) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int ch = int(i / P % 3);
    const float v = symmetric ? (x[i] + 1.f) / 2.f : x[i];
    xh[i] = (v - pick(ch, ms.a0, ms.a1, ms.a2)) / pick(ch, ms.b0, ms.b1, ms.b2);
  }
}

// dx = dxh · scale[ch], scale = (½ or 1) / std.
__global__ void normalise_backward_kernel(int64_t n, int64_t P, PerChannel sc,
                                          const float* __restrict__ dxh, float* __restrict__ dx) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = dxh[i] * pick(int(i / P % 3), sc.a0, sc.a1, sc.a2);
}

// ---- stem: 3×3 conv 3→N, zero padding (ReferenceKernels::stem) ------------

constexpr int kStemChannels = 32;  // output channels per block (grid.y)

// One thread per (pixel, 32 output channels): its 27 inputs in registers, the
// block's 32×27 weights in shared memory. grid (⌈P/256⌉, ⌈N/32⌉, B).
__global__ void __launch_bounds__(kThreads)
    stem_kernel(int N, int H, int W, const float* __restrict__ w, const float* __restrict__ bias,
                const float* __restrict__ xh, float* __restrict__ z, int64_t z_bs) {
  __shared__ float ws[kStemChannels * 27];
  __shared__ float bs[kStemChannels];
  const int n0 = blockIdx.y * kStemChannels, nc = min(kStemChannels, N - n0);
  for (int i = threadIdx.x; i < nc * 27; i += blockDim.x) ws[i] = w[n0 * 27 + i];
  for (int i = threadIdx.x; i < nc; i += blockDim.x) bs[i] = bias[n0 + i];
  __syncthreads();
  const int64_t P = int64_t(H) * W, p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= P) return;
  const int y = int(p / W), x = int(p % W);
  const float* xb = xh + int64_t(blockIdx.z) * 3 * P;
  float v[27];
#pragma unroll
  for (int ci = 0; ci < 3; ++ci)
#pragma unroll
    for (int dy = 0; dy < 3; ++dy)
#pragma unroll
      for (int dx = 0; dx < 3; ++dx) {
        const int yy = y + dy - 1, xx = x + dx - 1;
        // Zero padding: a tap outside adds w·0 = +0, as the reference's skip.
        v[(ci * 3 + dy) * 3 + dx] =
            (yy < 0 || yy >= H || xx < 0 || xx >= W) ? 0.f : xb[ci * P + int64_t(yy) * W + xx];
      }
  float* zb = z + int64_t(blockIdx.z) * z_bs + p;
  for (int n = 0; n < nc; ++n) {
    float acc = bs[n];
#pragma unroll
    for (int t = 0; t < 27; ++t) acc = fmaf(ws[n * 27 + t], v[t], acc);
    zb[int64_t(n0 + n) * P] = acc;
  }
}

// Gather per input pixel (yy, xx) of the 9·N outputs that read it: no atomics.
// Weights pass through shared memory 32 channels at a time. grid (⌈P/256⌉, 1, B).
__global__ void __launch_bounds__(kThreads)
    stem_backward_kernel(int N, int H, int W, const float* __restrict__ w,
                         const float* __restrict__ dz, int64_t dz_bs, float* __restrict__ dxh) {
  __shared__ float ws[kStemChannels * 27];
  const int64_t P = int64_t(H) * W, p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = p < P;
  const int yy = active ? int(p / W) : 0, xx = active ? int(p % W) : 0;
  const float* dzb = dz + int64_t(blockIdx.z) * dz_bs;
  float acc[3] = {0.f, 0.f, 0.f};
  for (int n0 = 0; n0 < N; n0 += kStemChannels) {
    const int nc = min(kStemChannels, N - n0);
    __syncthreads();
    for (int i = threadIdx.x; i < nc * 27; i += blockDim.x) ws[i] = w[n0 * 27 + i];
    __syncthreads();
    if (!active) continue;
    for (int n = 0; n < nc; ++n) {
      // Output (y, x) reads input (y + dy − 1, x + dx − 1) through tap (dy, dx).
      float g[9];
#pragma unroll
      for (int dy = 0; dy < 3; ++dy)
#pragma unroll
        for (int dx = 0; dx < 3; ++dx) {
          const int y = yy - dy + 1, x = xx - dx + 1;
          g[dy * 3 + dx] = (y < 0 || y >= H || x < 0 || x >= W)
                               ? 0.f
                               : dzb[int64_t(n0 + n) * P + int64_t(y) * W + x];
        }
#pragma unroll
      for (int ci = 0; ci < 3; ++ci)
#pragma unroll
        for (int t = 0; t < 9; ++t) acc[ci] = fmaf(ws[n * 27 + ci * 9 + t], g[t], acc[ci]);
    }
  }
  if (!active) return;
  float* out = dxh + int64_t(blockIdx.z) * 3 * P + p;
#pragma unroll
  for (int ci = 0; ci < 3; ++ci) out[ci * P] = acc[ci];
}

// ---- 1×1 conv: batched tiled SGEMM (ReferenceKernels::conv1x1 & co.) ------
//
// out[M×P] (+)= A[M×K]·in[K×P] (+ bias), A(m,k) = W[m·K + k], or W[k·M + m]
// when TRANS (the input gradient Wᵀ·dout of a [K×M]-stored weight). Block tile
// 64 rows × 128 columns, 16-deep K slices through shared memory; 128 threads,
// each an 8×8 register tile at rows ty + 8i and columns tx + 16j, so a warp's
// loads and stores touch consecutive columns. grid (⌈P/128⌉, ⌈M/64⌉, B).

constexpr int kTileM = 64, kTileP = 128, kTileK = 16, kGemmThreads = 128;

template <bool TRANS, bool RELU>
__global__ void __launch_bounds__(kGemmThreads)
    conv1x1_kernel(int M, int K, int64_t P, const float* __restrict__ W,
                   const float* __restrict__ bias, const float* __restrict__ in, int64_t in_bs,
                   float* __restrict__ out, int64_t out_bs, uint8_t* __restrict__ mask,
                   bool accumulate) {
  __shared__ float As[kTileK][kTileM + 1];  // +1: the non-transposed fill is bank-conflict free
  __shared__ float Bs[kTileK][kTileP];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.y * kTileM;
  const int64_t p0 = int64_t(blockIdx.x) * kTileP;
  in += int64_t(blockIdx.z) * in_bs;
  out += int64_t(blockIdx.z) * out_bs;
  if (RELU && mask) mask += int64_t(blockIdx.z) * M * P;

  // The reference's order: acc = out (accumulate) + bias, then Σ_k ascending.
  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int m = m0 + ty + 8 * i;
    const float b0 = (bias && m < M) ? bias[m] : 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t p = p0 + tx + 16 * j;
      acc[i][j] = ((accumulate && m < M && p < P) ? out[int64_t(m) * P + p] : 0.f) + b0;
    }
  }

  for (int k0 = 0; k0 < K; k0 += kTileK) {
    // A slice 64×16: 8 per thread, read along W's rows. Outside: 0 (adds +0).
#pragma unroll
    for (int r = 0; r < kTileM * kTileK / kGemmThreads; ++r) {
      const int e = tid + r * kGemmThreads;
      const int mm = TRANS ? e % kTileM : e / kTileK, kk = TRANS ? e / kTileM : e % kTileK;
      const int m = m0 + mm, k = k0 + kk;
      As[kk][mm] = (m < M && k < K) ? (TRANS ? W[int64_t(k) * M + m] : W[int64_t(m) * K + k]) : 0.f;
    }
    // in slice 16×128: thread tid loads column tid of each of the 16 rows.
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      const int k = k0 + kk;
      const int64_t p = p0 + tid;
      Bs[kk][tid] = (k < K && p < P) ? in[int64_t(k) * P + p] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[8], b[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) a[i] = As[kk][ty + 8 * i];
#pragma unroll
      for (int j = 0; j < 8; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int m = m0 + ty + 8 * i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t p = p0 + tx + 16 * j;
      if (p >= P) continue;
      const int64_t o = int64_t(m) * P + p;
      float v = acc[i][j];
      if (RELU) {
        if (mask) mask[o] = relu6_mask(v);
        v = relu6(v);
      }
      out[o] = v;
    }
  }
}

// ---- reflection-padded depthwise 3×3 + ReLU6 (ReferenceKernels::depthwise_relu6)

// One thread per output pixel. grid (⌈P/256⌉, C, B).
__global__ void __launch_bounds__(kThreads)
    depthwise_relu6_kernel(int C, int H, int W, const float* __restrict__ w,
                           const float* __restrict__ in, float* __restrict__ out,
                           uint8_t* __restrict__ mask) {
  const int64_t P = int64_t(H) * W, p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= P) return;
  const int ch = blockIdx.y, y = int(p / W), x = int(p % W);
  const int64_t plane = (int64_t(blockIdx.z) * C + ch) * P;
  const float* src = in + plane;
  const float* wc = w + ch * 9;
  float acc = 0.f;
#pragma unroll
  for (int dy = 0; dy < 3; ++dy) {
    const float* row = src + int64_t(reflect(y + dy - 1, H)) * W;
#pragma unroll
    for (int dx = 0; dx < 3; ++dx) acc = fmaf(wc[dy * 3 + dx], row[reflect(x + dx - 1, W)], acc);
  }
  if (mask) mask[plane + p] = relu6_mask(acc);
  out[plane + p] = relu6(acc);
}

// din = mask_in ⊙ dwᵀ(mask_out ⊙ g), gathered per input pixel (yy, xx): the
// outputs (y, x) whose tap (dy, dx) reads it through the reflection. Any such
// output is within one row and column (−1 → 1 and n → n−2 come from rows 0 and
// n−1), so scanning y ∈ [yy−1, yy+1] and every dy finds each read exactly once,
// the doubled reads of n = 2 included. grid (⌈P/256⌉, C, B).
__global__ void __launch_bounds__(kThreads)
    depthwise_relu6_backward_kernel(int C, int H, int W, const float* __restrict__ w,
                                    const uint8_t* __restrict__ mask_out,
                                    const uint8_t* __restrict__ mask_in,
                                    const float* __restrict__ g, float* __restrict__ din) {
  const int64_t P = int64_t(H) * W, p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= P) return;
  const int ch = blockIdx.y, yy = int(p / W), xx = int(p % W);
  const int64_t plane = (int64_t(blockIdx.z) * C + ch) * P;
  if (!mask_in[plane + p]) {
    din[plane + p] = 0.f;
    return;
  }
  const float* wc = w + ch * 9;
  float acc = 0.f;
  for (int y = max(0, yy - 1); y <= min(H - 1, yy + 1); ++y)
    for (int dy = 0; dy < 3; ++dy) {
      if (reflect(y + dy - 1, H) != yy) continue;
      for (int x = max(0, xx - 1); x <= min(W - 1, xx + 1); ++x) {
        const int64_t o = plane + int64_t(y) * W + x;
        if (!mask_out[o]) continue;
        const float gv = g[o];
        for (int dx = 0; dx < 3; ++dx)
          if (reflect(x + dx - 1, W) == xx) acc = fmaf(wc[dy * 3 + dx], gv, acc);
      }
    }
  din[plane + p] = acc;
}

// ---- affine coupling (dfe_forward / dfe_backward elementwise loops) --------

// i runs over [B][c][P]; z1 lives inside [B][N][P] with batch stride z1_bs.
__device__ __forceinline__ int64_t strided(int64_t i, int64_t cP, int64_t bs) {
  return i / cP * bs + i % cP;
}

__global__ void coupling_forward_kernel(int64_t n, int64_t cP, float* __restrict__ z1,
                                        int64_t z1_bs, const float* __restrict__ R,
                                        const float* __restrict__ Eta, float* __restrict__ tz1,
                                        float* __restrict__ tE) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t zi = strided(i, cP, z1_bs);
    const float e = expf(R[i]), z = z1[zi];
    if (tz1) {
      tz1[i] = z;
      tE[i] = e;
    }
    z1[zi] = z * e + Eta[i];
  }
}

__global__ void coupling_rho_grad_kernel(int64_t n, int64_t cP, const float* __restrict__ dz1,
                                         int64_t dz1_bs, const float* __restrict__ z1,
                                         const float* __restrict__ E, float* __restrict__ Dr) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    Dr[i] = dz1[strided(i, cP, dz1_bs)] * z1[i] * E[i];
}

__global__ void coupling_scale_kernel(int64_t n, int64_t cP, float* __restrict__ dz1,
                                      int64_t dz1_bs, const float* __restrict__ E) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dz1[strided(i, cP, dz1_bs)] *= E[i];
}

// ---- L_n (SPEC §3; loss.h) --------------------------------------------------

constexpr int kReduceBlocks = 1024;

// Block sum of v in a fixed tree order; the result in thread 0.
__device__ double block_sum(double v) {
  __shared__ double s[kThreads];
  s[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (int(threadIdx.x) < stride) s[threadIdx.x] += s[threadIdx.x + stride];
    __syncthreads();
  }
  return s[0];
}

__global__ void __launch_bounds__(kThreads)
    ssd_partial_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t n,
                       double* __restrict__ partial) {
  double acc = 0;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kThreads) {
    const double d = double(a[i]) - double(b[i]);
    acc += d * d;
  }
  const double s = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(const double* __restrict__ partial, int count, double* __restrict__ out) {
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += kThreads) acc += partial[i];
  const double s = block_sum(acc);
  if (threadIdx.x == 0) *out = s;
}

// *first = min(*first, i) over the non-finite x[i]: the smallest index, whatever
// the order of the atomics (numeric_checks.h's first_nonfinite).
__global__ void first_nonfinite_kernel(int64_t n, const float* __restrict__ x,
                                       unsigned long long* __restrict__ first) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    if (!isfinite(x[i])) atomicMin(first, (unsigned long long)i);
}

__global__ void n_gradient_kernel(int64_t n, const float* __restrict__ S,
                                  const float* __restrict__ G, float k, float* __restrict__ dS) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dS[i] += (S[i] - G[i]) * k;
}

}  // namespace

// ---- launchers ---------------------------------------------------------------

void normalise(int B, int64_t P, InputRange range, const float* x, float* xh,
               cudaStream_t stream) {
  const int64_t n = int64_t(B) * 3 * P;
  if (n == 0) return;
  const PerChannel ms{float(kMean[0]), float(kMean[1]), float(kMean[2]),
                      float(kStd[0]),  float(kStd[1]),  float(kStd[2])};
  normalise_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(
      n, P, range == InputRange::Symmetric, ms, x, xh);
  MGHF_CUDA_LAUNCH_CHECK();
}

void normalise_backward(int B, int64_t P, InputRange range, const float* dxh, float* dx,
                        cudaStream_t stream) {
  const int64_t n = int64_t(B) * 3 * P;
  if (n == 0) return;
  // In float, as dfe_backward's T(0.5) / T(kStd[ch]).
  const float half = range == InputRange::Symmetric ? 0.5f : 1.f;
  const PerChannel sc{half / float(kStd[0]), half / float(kStd[1]), half / float(kStd[2]), 0, 0, 0};
  normalise_backward_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(n, P, sc, dxh, dx);
  MGHF_CUDA_LAUNCH_CHECK();
}

void stem(int B, int N, int H, int W, const float* w, const float* bias, const float* xh, float* z,
          int64_t z_bs, cudaStream_t stream) {
  const int64_t P = int64_t(H) * W;
  if (B == 0 || P == 0 || N == 0) return;
  const dim3 grid(blocks_for(P, kThreads), blocks_for(N, kStemChannels), batch_z(B));
  stem_kernel<<<grid, kThreads, 0, stream>>>(N, H, W, w, bias, xh, z, z_bs);
  MGHF_CUDA_LAUNCH_CHECK();
}

void stem_backward(int B, int N, int H, int W, const float* w, const float* dz, int64_t dz_bs,
                   float* dxh, cudaStream_t stream) {
  const int64_t P = int64_t(H) * W;
  if (B == 0 || P == 0) return;
  const dim3 grid(blocks_for(P, kThreads), 1, batch_z(B));
  stem_backward_kernel<<<grid, kThreads, 0, stream>>>(N, H, W, w, dz, dz_bs, dxh);
  MGHF_CUDA_LAUNCH_CHECK();
}

void conv1x1(int B, int M, int K, int64_t P, const float* W, bool transpose_w, const float* bias,
             const float* in, int64_t in_bs, float* out, int64_t out_bs, bool accumulate,
             cudaStream_t stream) {
  if (B == 0 || M == 0 || P == 0) return;
  const dim3 grid(blocks_for(P, kTileP), blocks_for(M, kTileM), batch_z(B));
  if (transpose_w)
    conv1x1_kernel<true, false><<<grid, kGemmThreads, 0, stream>>>(
        M, K, P, W, bias, in, in_bs, out, out_bs, nullptr, accumulate);
  else
    conv1x1_kernel<false, false><<<grid, kGemmThreads, 0, stream>>>(
        M, K, P, W, bias, in, in_bs, out, out_bs, nullptr, accumulate);
  MGHF_CUDA_LAUNCH_CHECK();
}

void conv1x1_relu6(int B, int M, int K, int64_t P, const float* W, const float* in, int64_t in_bs,
                   float* out, uint8_t* mask, cudaStream_t stream) {
  if (B == 0 || M == 0 || P == 0) return;
  const dim3 grid(blocks_for(P, kTileP), blocks_for(M, kTileM), batch_z(B));
  conv1x1_kernel<false, true><<<grid, kGemmThreads, 0, stream>>>(
      M, K, P, W, nullptr, in, in_bs, out, int64_t(M) * P, mask, false);
  MGHF_CUDA_LAUNCH_CHECK();
}

void depthwise_relu6(int B, int C, int H, int W, const float* w, const float* in, float* out,
                     uint8_t* mask, cudaStream_t stream) {
  const int64_t P = int64_t(H) * W;
  if (B == 0 || C == 0 || P == 0) return;
  const dim3 grid(blocks_for(P, kThreads), unsigned(C), batch_z(B));
  depthwise_relu6_kernel<<<grid, kThreads, 0, stream>>>(C, H, W, w, in, out, mask);
  MGHF_CUDA_LAUNCH_CHECK();
}

void depthwise_relu6_backward(int B, int C, int H, int W, const float* w, const uint8_t* mask_out,
                              const uint8_t* mask_in, const float* g, float* din,
                              cudaStream_t stream) {
  const int64_t P = int64_t(H) * W;
  if (B == 0 || C == 0 || P == 0) return;
  const dim3 grid(blocks_for(P, kThreads), unsigned(C), batch_z(B));
  depthwise_relu6_backward_kernel<<<grid, kThreads, 0, stream>>>(C, H, W, w, mask_out, mask_in, g,
                                                                 din);
  MGHF_CUDA_LAUNCH_CHECK();
}

void coupling_forward(int B, int c, int64_t P, float* z1, int64_t z1_bs, const float* R,
                      const float* Eta, float* tz1, float* tE, cudaStream_t stream) {
  const int64_t cP = int64_t(c) * P, n = int64_t(B) * cP;
  if (n == 0) return;
  coupling_forward_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(n, cP, z1, z1_bs, R, Eta,
                                                                          tz1, tE);
  MGHF_CUDA_LAUNCH_CHECK();
}

void coupling_rho_grad(int B, int c, int64_t P, const float* dz1, int64_t dz1_bs, const float* z1,
                       const float* E, float* Dr, cudaStream_t stream) {
  const int64_t cP = int64_t(c) * P, n = int64_t(B) * cP;
  if (n == 0) return;
  coupling_rho_grad_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(n, cP, dz1, dz1_bs, z1,
                                                                           E, Dr);
  MGHF_CUDA_LAUNCH_CHECK();
}

void coupling_scale(int B, int c, int64_t P, float* dz1, int64_t dz1_bs, const float* E,
                    cudaStream_t stream) {
  const int64_t cP = int64_t(c) * P, n = int64_t(B) * cP;
  if (n == 0) return;
  coupling_scale_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(n, cP, dz1, dz1_bs, E);
  MGHF_CUDA_LAUNCH_CHECK();
}

double sum_squared_difference(const float* a, const float* b, int64_t n, cudaStream_t stream) {
  if (n == 0) return 0;
  // The block count depends on n only: the same n sums in the same order.
  const int blocks = int(std::min<int64_t>((n + kThreads - 1) / kThreads, kReduceBlocks));
  DeviceBuffer<double> partial(size_t(blocks) + 1);
  ssd_partial_kernel<<<blocks, kThreads, 0, stream>>>(a, b, n, partial.data());
  MGHF_CUDA_LAUNCH_CHECK();
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(partial.data(), blocks, partial.data() + blocks);
  MGHF_CUDA_LAUNCH_CHECK();
  double total = 0;
  MGHF_CUDA_CHECK(cudaMemcpyAsync(&total, partial.data() + blocks, sizeof(double),
                                  cudaMemcpyDeviceToHost, stream));
  MGHF_CUDA_CHECK(cudaStreamSynchronize(stream));  // before `partial` goes back to the cache
  return total;
}

int64_t first_nonfinite(const float* x, int64_t n, float* value, cudaStream_t stream) {
  if (n == 0) return -1;
  DeviceBuffer<unsigned long long> first(1);
  MGHF_CUDA_CHECK(cudaMemsetAsync(first.data(), 0xff, sizeof(unsigned long long), stream));
  first_nonfinite_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(n, x, first.data());
  MGHF_CUDA_LAUNCH_CHECK();
  unsigned long long i = 0;
  MGHF_CUDA_CHECK(
      cudaMemcpyAsync(&i, first.data(), sizeof(i), cudaMemcpyDeviceToHost, stream));
  MGHF_CUDA_CHECK(cudaStreamSynchronize(stream));  // before `first` goes back to the cache
  if (i == ~0ull) return -1;
  MGHF_CUDA_CHECK(cudaMemcpyAsync(value, x + i, sizeof(float), cudaMemcpyDeviceToHost, stream));
  MGHF_CUDA_CHECK(cudaStreamSynchronize(stream));
  return int64_t(i);
}

void n_gradient(const float* S, const float* G, int64_t n, float k, float* dS,
                cudaStream_t stream) {
  if (n == 0) return;
  n_gradient_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(n, S, G, k, dS);
  MGHF_CUDA_LAUNCH_CHECK();
}

// ---- the model: dfe.h over these ops, the whole batch per launch -----------

float* DfeScratch::get(DeviceBuffer<float>& b, int channels) {
  const size_t n = size_t(B_) * size_t(channels) * size_t(P_);
  if (b.size() != n) b.resize(n);  // first use only: each buffer has one size per call
  return b.data();
}

namespace {

void put(const Buffer<float>& h, DeviceBuffer<float>& d, cudaStream_t stream) {
  d.resize(h.size());
  if (h.size())
    MGHF_CUDA_CHECK(cudaMemcpyAsync(d.data(), h.data(), h.size() * sizeof(float),
                                    cudaMemcpyHostToDevice, stream));
}

// out (+)= IRB(in) (ReferenceKernels::irb_forward): expand 1×1 + ReLU6 into r1,
// reflect-pad depthwise 3×3 + ReLU6 into r2, project 1×1 into out.
void irb_forward(const DeviceIrbWeights& w, int B, int c, int h, int H, int W, const float* in,
                 int64_t in_bs, float* out, int64_t out_bs, bool accumulate, uint8_t* m1,
                 uint8_t* m2, DfeScratch& s, cudaStream_t stream) {
  const int64_t P = int64_t(H) * W;
  conv1x1_relu6(B, h, c, P, w.expand.data(), in, in_bs, s.r1(), m1, stream);
  depthwise_relu6(B, h, H, W, w.depthwise.data(), s.r1(), s.r2(), m2, stream);
  conv1x1(B, c, h, P, w.project.data(), false, nullptr, s.r2(), int64_t(h) * P, out, out_bs,
          accumulate, stream);
}

// din += IRBᵀ(dout) (ReferenceKernels::irb_backward): g = Wpᵀ·dout into r1,
// dt = m1 ⊙ dwᵀ(m2 ⊙ g) into r2, din += Weᵀ·dt.
void irb_backward(const DeviceIrbWeights& w, int B, int c, int h, int H, int W, const uint8_t* m1,
                  const uint8_t* m2, const float* dout, int64_t dout_bs, float* din,
                  int64_t din_bs, DfeScratch& s, cudaStream_t stream) {
  const int64_t P = int64_t(H) * W, hP = int64_t(h) * P;
  conv1x1_backward(B, c, h, P, w.project.data(), dout, dout_bs, s.r1(), hP, false, stream);
  depthwise_relu6_backward(B, h, H, W, w.depthwise.data(), m2, m1, s.r1(), s.r2(), stream);
  conv1x1_backward(B, h, c, P, w.expand.data(), s.r2(), hP, din, din_bs, true, stream);
}

}  // namespace

void upload(const DfeWeights<float>& w, DeviceDfeWeights& d, cudaStream_t stream) {
  d.arch = w.arch;
  put(w.stem_weight, d.stem_weight, stream);
  put(w.stem_bias, d.stem_bias, stream);
  d.block.resize(w.block.size());
  for (size_t k = 0; k < w.block.size(); ++k) {
    const BlockWeights<float>& hb = w.block[k];
    DeviceBlockWeights& db = d.block[k];
    put(hb.mix_weight, db.mix_weight, stream);
    put(hb.mix_bias, db.mix_bias, stream);
    const IrbWeights<float>* hi[] = {&hb.phi, &hb.rho, &hb.eta};
    DeviceIrbWeights* di[] = {&db.phi, &db.rho, &db.eta};
    for (int i = 0; i < 3; ++i) {
      put(hi[i]->expand, di[i]->expand, stream);
      put(hi[i]->depthwise, di[i]->depthwise, stream);
      put(hi[i]->project, di[i]->project, stream);
    }
  }
}

void dfe_forward(const DeviceDfeWeights& w, const float* x, int B, int H, int W, InputRange range,
                 float* F, DeviceDfeTape* tape, DfeScratch& s, cudaStream_t stream) {
  const DfeArchitecture& a = w.arch;
  const int N = a.channels, c = a.half(), h = a.hidden();
  const int64_t P = int64_t(H) * W, NP = int64_t(N) * P, cP = int64_t(c) * P,
                hP = int64_t(h) * P;
  if (tape) {
    tape->block.resize(size_t(a.blocks));
    for (auto& bt : tape->block) {
      bt.z1.resize(size_t(B) * cP);
      bt.E.resize(size_t(B) * cP);
      for (DeviceIrbTape* it : {&bt.phi, &bt.rho, &bt.eta}) {
        it->m1.resize(size_t(B) * hP);
        it->m2.resize(size_t(B) * hP);
      }
    }
  }
  normalise(B, P, range, x, s.xh(), stream);
  // z → y each block; the last block writes straight into F.
  float* zp = a.blocks % 2 ? s.z() : s.y();
  stem(B, N, H, W, w.stem_weight.data(), w.stem_bias.data(), s.xh(), zp, NP, stream);
  for (int k = 0; k < a.blocks; ++k) {
    float* yp = k == a.blocks - 1 ? F : (zp == s.z() ? s.y() : s.z());
    const DeviceBlockWeights& bw = w.block[size_t(k)];
    DeviceBlockTape* bt = tape ? &tape->block[size_t(k)] : nullptr;
    // Masks only when a backward will follow.
    DeviceIrbTape* tphi = bt ? &bt->phi : nullptr;
    DeviceIrbTape* trho = bt ? &bt->rho : nullptr;
    DeviceIrbTape* teta = bt ? &bt->eta : nullptr;
    auto m1 = [](DeviceIrbTape* t) { return t ? t->m1.data() : nullptr; };
    auto m2 = [](DeviceIrbTape* t) { return t ? t->m2.data() : nullptr; };
    conv1x1(B, N, N, P, bw.mix_weight.data(), false, bw.mix_bias.data(), zp, NP, yp, NP, false,
            stream);
    float* z1 = yp;
    float* z2 = yp + cP;
    // z2 ← z2 + φ(z1)
    irb_forward(bw.phi, B, c, h, H, W, z1, NP, z2, NP, true, m1(tphi), m2(tphi), s, stream);
    // z1 ← z1 ⊙ exp(ρ(z2)) + η(z2)
    irb_forward(bw.rho, B, c, h, H, W, z2, NP, s.R(), cP, false, m1(trho), m2(trho), s, stream);
    irb_forward(bw.eta, B, c, h, H, W, z2, NP, s.Eta(), cP, false, m1(teta), m2(teta), s, stream);
    coupling_forward(B, c, P, z1, NP, s.R(), s.Eta(), bt ? bt->z1.data() : nullptr,
                     bt ? bt->E.data() : nullptr, stream);
    zp = yp;
  }
}

void dfe_backward(const DeviceDfeWeights& w, const DeviceDfeTape& tape, float* dF, int B, int H,
                  int W, InputRange range, float* dx, DfeScratch& s, cudaStream_t stream) {
  const DfeArchitecture& a = w.arch;
  const int N = a.channels, c = a.half(), h = a.hidden();
  const int64_t P = int64_t(H) * W, NP = int64_t(N) * P, cP = int64_t(c) * P;
  float* dz = dF;
  float* dy = s.z();  // the forward's z is free once the tape holds what is needed
  for (int k = a.blocks - 1; k >= 0; --k) {
    const DeviceBlockWeights& bw = w.block[size_t(k)];
    const DeviceBlockTape& bt = tape.block[size_t(k)];
    float* dz1 = dz;      // ∂L/∂z1 after the coupling, becomes ∂L/∂z1 before it
    float* da = dz + cP;  // ∂L/∂z2 after φ
    float* Dr = s.R();
    // z1' = z1 ⊙ E + η(a), E = exp(ρ(a)):  ∂ρ = dz1' ⊙ z1 ⊙ E,  ∂η = dz1'
    coupling_rho_grad(B, c, P, dz1, NP, bt.z1.data(), bt.E.data(), Dr, stream);
    irb_backward(bw.eta, B, c, h, H, W, bt.eta.m1.data(), bt.eta.m2.data(), dz1, NP, da, NP, s,
                 stream);
    irb_backward(bw.rho, B, c, h, H, W, bt.rho.m1.data(), bt.rho.m2.data(), Dr, cP, da, NP, s,
                 stream);
    coupling_scale(B, c, P, dz1, NP, bt.E.data(), stream);
    // a = z2 + φ(z1): ∂z2 = ∂a, ∂z1 += φᵀ ∂a
    irb_backward(bw.phi, B, c, h, H, W, bt.phi.m1.data(), bt.phi.m2.data(), da, NP, dz1, NP, s,
                 stream);
    conv1x1_backward(B, N, N, P, bw.mix_weight.data(), dz, NP, dy, NP, false, stream);
    std::swap(dz, dy);
  }
  stem_backward(B, N, H, W, w.stem_weight.data(), dz, NP, s.xh(), stream);
  normalise_backward(B, P, range, s.xh(), dx, stream);
}

cudaError_t probe_kernel_image() {
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, normalise_kernel);
}

}  // namespace cuda
}  // namespace mghf
