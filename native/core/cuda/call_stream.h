// The call's own stream, for every host function that launches kernels for one call
// (the CUDA ops, CudaBackend). Destroying it first drains it, so device memory
// declared before it goes back to the cache only once no kernel uses it, on the
// error paths too. Host code only: shared by the nvcc build and the emulator.
#pragma once
#include <cuda_runtime.h>

#include "cuda_check.h"

namespace mghf {
namespace cuda {

class Stream {
 public:
  Stream() { MGHF_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() {
    (void)cudaStreamSynchronize(s_);
    (void)cudaStreamDestroy(s_);
    (void)cudaGetLastError();
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  operator cudaStream_t() const { return s_; }
  void sync() { MGHF_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

}  // namespace cuda
}  // namespace mghf
