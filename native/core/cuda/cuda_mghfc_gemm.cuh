// A small batched tiled SGEMM for the MGHF-c terms (no cuBLAS): the channel
// Gram X·Xᵀ and its backward A·X (csc), the patch similarity q·gᵀ and
// ∂q = ∂sim·g (lip). One 64×64 tile of C per block, 16×16 threads with 4×4
// outputs each, k in slices of 16 staged in shared memory.
//
// C_z = A_z · op(B_z) for every batch z, A_z [m×k] row-major; op(B_z) = B_zᵀ
// with B_z [n×k] (kTransB, the X·Xᵀ shape) or B_z [k×n]. The k range may be
// split into chunks (grid z runs over batch × chunk) so that long sums get
// many blocks; each chunk's product goes to the epilogue on its own.
//
// Precision: products are summed in float within a k slice of 16; the slice
// sums are accumulated in double with kDoubleAcc (SPEC §8: sums of more than
// 4,096 terms), otherwise in float (as the CPU's float matmul).
//
// The epilogue is a functor: epi(batch, chunk, i, j, value) for every i < m,
// j < n of the tile (value is double with kDoubleAcc, float otherwise).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda_check.h"

namespace mghf {
namespace cuda {
namespace gemm {
// Internal linkage: each including file gets its own kernels, so two files
// instantiating the same kernel never share a host stub (no -rdc here).
namespace {

constexpr int kTile = 64;
constexpr int kTileK = 16;
constexpr int kThreads = 256;
constexpr int kMaxGridZ = 65535;

struct Problem {
  int m = 0;
  int64_t n = 0, k = 0;
  const float* A = nullptr;
  int64_t lda = 0, strideA = 0;
  const float* B = nullptr;
  int64_t ldb = 0, strideB = 0;
  int batches = 0;
  int64_t k_chunk = 0;     // 0: the whole k in one chunk
  bool upper_only = false;  // skip tiles strictly below the diagonal (symmetric C)
};

template <bool kTransB, bool kDoubleAcc, class Epi>
__global__ void __launch_bounds__(kThreads) tiled_gemm_kernel(Problem pr, int64_t k_chunk,
                                                               int chunks, Epi epi) {
  using Acc = typename std::conditional<kDoubleAcc, double, float>::type;
  __shared__ float As[kTileK][kTile + 1];
  __shared__ float Bs[kTileK][kTile + 1];
  const int tid = int(threadIdx.x), tx = tid % 16, ty = tid / 16;
  const int i0 = int(blockIdx.y) * kTile;
  const int64_t j0 = int64_t(blockIdx.x) * kTile;
  if (pr.upper_only && j0 + kTile - 1 < i0) return;  // whole block: no sync skipped
  const int64_t total = int64_t(pr.batches) * chunks;
  for (int64_t zc = blockIdx.z; zc < total; zc += gridDim.z) {
    const int batch = int(zc / chunks), chunk = int(zc % chunks);
    const int64_t kb = int64_t(chunk) * k_chunk, ke = kb + k_chunk < pr.k ? kb + k_chunk : pr.k;
    const float* A = pr.A + batch * pr.strideA;
    const float* B = pr.B + batch * pr.strideB;
    float slice[4][4];  // products of one k slice, in float
    Acc acc[4][4];      // slices summed over the chunk
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) {
        slice[r][c] = 0.f;
        acc[r][c] = Acc(0);
      }
    for (int64_t k0 = kb; k0 < ke; k0 += kTileK) {
      for (int l = 0; l < kTile * kTileK / kThreads; ++l) {
        const int e = tid + kThreads * l, r = e / kTileK, kk = e % kTileK;
        const int gi = i0 + r;
        const int64_t gk = k0 + kk;
        As[kk][r] = (gi < pr.m && gk < ke) ? A[gi * pr.lda + gk] : 0.f;
      }
      for (int l = 0; l < kTile * kTileK / kThreads; ++l) {
        const int e = tid + kThreads * l;
        if constexpr (kTransB) {
          const int r = e / kTileK, kk = e % kTileK;
          const int64_t gj = j0 + r, gk = k0 + kk;
          Bs[kk][r] = (gj < pr.n && gk < ke) ? B[gj * pr.ldb + gk] : 0.f;
        } else {
          const int kk = e / kTile, c = e % kTile;
          const int64_t gj = j0 + c, gk = k0 + kk;
          Bs[kk][c] = (gj < pr.n && gk < ke) ? B[gk * pr.ldb + gj] : 0.f;
        }
      }
      __syncthreads();
      for (int kk = 0; kk < kTileK; ++kk) {
        float a[4], b[4];
        for (int r = 0; r < 4; ++r) a[r] = As[kk][ty + 16 * r];
        for (int c = 0; c < 4; ++c) b[c] = Bs[kk][tx + 16 * c];
        for (int r = 0; r < 4; ++r)
          for (int c = 0; c < 4; ++c) slice[r][c] += a[r] * b[c];
      }
      __syncthreads();
      for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) {
          acc[r][c] += Acc(slice[r][c]);
          slice[r][c] = 0.f;
        }
    }
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) {
        const int i = i0 + ty + 16 * r;
        const int64_t j = j0 + tx + 16 * c;
        if (i < pr.m && j < pr.n) epi(batch, chunk, i, j, acc[r][c]);
      }
  }
}

// Launches C_z = A_z·op(B_z) for all batches on `stream`.
template <bool kTransB, bool kDoubleAcc, class Epi>
void launch_tiled_gemm(const Problem& p, const Epi& epi, cudaStream_t stream) {
  if (p.m <= 0 || p.n <= 0 || p.batches <= 0) return;
  const int64_t k_chunk = p.k_chunk > 0 ? p.k_chunk : std::max<int64_t>(p.k, 1);
  const int chunks = p.k > 0 ? int((p.k + k_chunk - 1) / k_chunk) : 1;
  const int64_t z = std::min<int64_t>(int64_t(p.batches) * chunks, kMaxGridZ);
  const dim3 grid(unsigned((p.n + kTile - 1) / kTile), unsigned((p.m + kTile - 1) / kTile),
                  unsigned(z));
  tiled_gemm_kernel<kTransB, kDoubleAcc, Epi>
      <<<grid, kThreads, 0, stream>>>(p, k_chunk, chunks, epi);
  MGHF_CUDA_LAUNCH_CHECK();
}

// C_z[i, j] = value, C_z at C + z·strideC with leading dimension ldc.
struct StoreEpi {
  float* C;
  int64_t ldc, strideC;
  __device__ void operator()(int batch, int, int i, int64_t j, float v) const {
    C[batch * strideC + i * ldc + j] = v;
  }
};

}  // namespace
}  // namespace gemm
}  // namespace cuda
}  // namespace mghf
