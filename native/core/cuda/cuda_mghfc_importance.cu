// Channel importance on the GPU (SPEC §4), mirroring entropy.h:
// map_entropy and channel_importance. One block per (map, G/S): the map's
// min–max, a 256-bin shared-memory histogram with the float32 binning of
// SPEC §4, and the normalised entropy in double. Counts are integers, so the
// histogram (and hence Ĥ) does not depend on the order of the atomics.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "cuda_check.h"
#include "cuda_mghfc.h"
#include "cuda_mghfc_reduce.cuh"
#include "device_buffer.h"

namespace mghf {
namespace cuda {
namespace {

constexpr int kBins = 256;
constexpr int kEntropyThreads = kBins;  // one thread per bin for the clear and the sum

// ent[which·maps + map] = Ĥ of map `map` of G (which = 0) or S (which = 1).
// Mirrors map_entropy (entropy.h) with ReferenceKernels::histogram256.
__global__ void __launch_bounds__(kEntropyThreads)
    map_entropy_kernel(const float* G, const float* S, int64_t P, int64_t maps, double* ent) {
  __shared__ unsigned int count[kBins];
  const int tid = int(threadIdx.x);
  const int64_t map = blockIdx.x;
  const int which = int(blockIdx.y);
  const float* x = (which == 0 ? G : S) + map * P;
  // lo, hi start from x[0] as the CPU loop does; min and max are exact, so
  // the block's order of comparisons gives the CPU's values.
  float lo = x[0], hi = x[0];
  for (int64_t p = tid; p < P; p += blockDim.x) {
    const float v = x[p];
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  red::block_min_max(lo, hi);
  if (!(hi > lo)) {  // a constant map carries no information (block-uniform branch)
    if (tid == 0) ent[which * maps + map] = 1.0;
    return;
  }
  count[tid] = 0;
  __syncthreads();
  // SPEC §4 binning in float32 with IEEE rounding: t = (x − lo) / (hi − lo),
  // bin = min(255, floor(256·t)). The _rn intrinsics pin each step to one
  // correctly rounded float operation (no contraction, no approximate divide).
  const float range = __fsub_rn(hi, lo);
  for (int64_t p = tid; p < P; p += blockDim.x) {
    const float t = __fdiv_rn(__fsub_rn(x[p], lo), range);
    const int bin = min(kBins - 1, int(floorf(__fmul_rn(256.0f, t))));
    atomicAdd(&count[bin], 1u);
  }
  __syncthreads();
  if (tid == 0) {
    // The CPU's loop, bin by bin in order, in double.
    double h = 0;
    for (int k = 0; k < kBins; ++k)
      if (count[k] > 0) {
        const double p = double(count[k]) / double(P);
        h -= p * log(p);
      }
    ent[which * maps + map] = h / log(256.0);
  }
}

}  // namespace

// SPEC §4, channel_importance (entropy.h): I = ((1 − Ĥ_G) + (1 − Ĥ_S)) / 2,
// combined on the host from the 2·B·N entropies, in the CPU's expression.
std::vector<double> importance(const float* G, const float* S, int B, int N, int64_t P,
                               cudaStream_t stream) {
  const int64_t maps = int64_t(B) * N;
  std::vector<double> imp(size_t(maps > 0 ? maps : 0));
  if (maps <= 0 || P <= 0) return imp;
  DeviceBuffer<double> ent(size_t(2 * maps));
  map_entropy_kernel<<<dim3(unsigned(maps), 2), kEntropyThreads, 0, stream>>>(G, S, P, maps,
                                                                                ent.data());
  MGHF_CUDA_LAUNCH_CHECK();
  std::vector<double> h(size_t(2 * maps));
  MGHF_CUDA_CHECK(cudaMemcpyAsync(h.data(), ent.data(), h.size() * sizeof(double),
                                  cudaMemcpyDeviceToHost, stream));
  MGHF_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (int64_t i = 0; i < maps; ++i)
    imp[size_t(i)] = ((1.0 - h[size_t(i)]) + (1.0 - h[size_t(maps + i)])) / 2.0;
  return imp;
}

}  // namespace cuda
}  // namespace mghf
