// CUDA error handling for the core: every runtime call goes through
// MGHF_CUDA_CHECK, which throws mghf::Error("E_CUDA", ...) naming the call and
// the CUDA error, so a failing call (out of memory included) reaches
// JavaScript as a typed error and leaves the process usable.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "../error.h"

namespace mghf {
namespace cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  // Clear the sticky-free error state so the next call starts clean.
  (void)cudaGetLastError();
  const std::string code = e == cudaErrorMemoryAllocation ? "E_CUDA_OOM" : "E_CUDA";
  throw Error(code, std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                        "): " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

}  // namespace cuda
}  // namespace mghf

#define MGHF_CUDA_CHECK(call)                                                   \
  do {                                                                          \
    cudaError_t mghf_err_ = (call);                                             \
    if (mghf_err_ != cudaSuccess) ::mghf::cuda::throw_cuda(mghf_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: catches launch-configuration errors at once.
#define MGHF_CUDA_LAUNCH_CHECK() MGHF_CUDA_CHECK(cudaGetLastError())

namespace mghf {
namespace cuda {

// Makes `device` current for a call and restores the caller's afterwards.
class DeviceScope {
 public:
  explicit DeviceScope(int device) : device_(device) {
    MGHF_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device_) MGHF_CUDA_CHECK(cudaSetDevice(device_));
  }
  ~DeviceScope() {
    if (prev_ != device_) (void)cudaSetDevice(prev_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int device_, prev_ = 0;
};

}  // namespace cuda
}  // namespace mghf
