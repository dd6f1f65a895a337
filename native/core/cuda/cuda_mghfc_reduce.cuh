// Deterministic warp and block reductions for the MGHF-c kernels
// (cuda_mghfc_*.cu). Every sum has a fixed shape for a given block size: each
// thread's strided partial, then an xor butterfly over the warp (a + b and
// b + a round the same, so every lane ends with the same bits), then warp 0
// over the warps' partials in warp order. Same inputs, same launch: same
// result, run after run (no atomics on floating point).
#pragma once
#include <cuda_runtime.h>

namespace mghf {
namespace cuda {
namespace red {

constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// max without NaN special-casing, written as the CPU code writes it.
template <class T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(kFullMask, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Sums NV doubles over the whole block; every thread gets the totals. All
// threads of the block must call it (it synchronises); blockDim.x a multiple
// of 32, at most 1024.
template <int NV>
__device__ void block_sum(double (&v)[NV]) {
  __shared__ double part[32][NV];
  __shared__ double total[NV];
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int warps = int(blockDim.x) >> 5;
  for (int k = 0; k < NV; ++k) v[k] = warp_sum(v[k]);
  if (lane == 0)
    for (int k = 0; k < NV; ++k) part[warp][k] = v[k];
  __syncthreads();
  if (warp == 0) {
    for (int k = 0; k < NV; ++k) {
      const double t = warp_sum(lane < warps ? part[lane][k] : 0.0);
      if (lane == 0) total[k] = t;
    }
  }
  __syncthreads();
  for (int k = 0; k < NV; ++k) v[k] = total[k];
  __syncthreads();  // part and total may be reused by the next call
}

// Block-wide min and max of floats (exact, so the order does not matter).
__device__ inline void block_min_max(float& lo, float& hi) {
  __shared__ float plo[32], phi[32];
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int warps = int(blockDim.x) >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float a = __shfl_xor_sync(kFullMask, lo, o), b = __shfl_xor_sync(kFullMask, hi, o);
    lo = a < lo ? a : lo;
    hi = b > hi ? b : hi;
  }
  if (lane == 0) {
    plo[warp] = lo;
    phi[warp] = hi;
  }
  __syncthreads();
  lo = plo[0];
  hi = phi[0];
  for (int w = 1; w < warps; ++w) {
    lo = plo[w] < lo ? plo[w] : lo;
    hi = phi[w] > hi ? phi[w] : hi;
  }
  __syncthreads();
}

}  // namespace red
}  // namespace cuda
}  // namespace mghf
