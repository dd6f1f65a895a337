// Host emulator for the CUDA kernels: blocks run one after another, the
// threads of a block as std::threads, __syncthreads as a std::barrier.
#pragma once
#define __device__
#define __global__
#define __host__
#define __shared__ static
#include <cuda_runtime.h>
#define __launch_bounds__(...)
template <class T>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, T* f) { return cudaFuncGetAttributes(a, reinterpret_cast<const void*>(f)); }
#include <algorithm>
#include <barrier>
#include <cmath>
#include <functional>
#include <memory>
#include <thread>
#include <vector>
using std::max;
using std::min;
using std::isfinite;
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
namespace emu {
inline std::barrier<>* bar = nullptr;
inline long launches = 0;
inline void launch(dim3 grid, dim3 block, size_t, cudaStream_t, const std::function<void()>& f) {
  ++launches;
  const unsigned nt = block.x * block.y * block.z;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        std::barrier<> b(nt);
        bar = &b;
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < nt; ++t)
          ts.emplace_back([&, t] {
            threadIdx = uint3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
            blockIdx = uint3{x, y, z};
            blockDim = block;
            gridDim = grid;
            f();
            b.arrive_and_drop();
          });
        for (auto& th : ts) th.join();
      }
}
inline void launch(dim3 grid, int block, size_t s, cudaStream_t st, const std::function<void()>& f) {
  launch(grid, dim3(unsigned(block)), s, st, f);
}
inline void launch(int grid, int block, size_t s, cudaStream_t st, const std::function<void()>& f) {
  launch(dim3(unsigned(grid)), dim3(unsigned(block)), s, st, f);
}
}  // namespace emu
inline void __syncthreads() { emu::bar->arrive_and_wait(); }
