// The CUDA runtime calls of the backend, for the host emulator: device memory is the emulator's
// checked heap (emu_runtime.cpp), a stream runs its work at once (so synchronising is free),
// events read the host clock. Copies are checked like compute-sanitizer's memcheck would: each
// device range must lie inside one live allocation, and a copy to the host of bytes no kernel,
// copy or memset ever wrote is reported. EMU_MODE=olddriver | nodevice | noimage | invfn makes
// the status calls fail the way those machines would (for cuda_status's messages).
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "emu_internal.h"

namespace {

std::string mode() {
  const char* m = std::getenv("EMU_MODE");
  return m ? m : "";
}

int g_device = 0;

// A device range for a copy or memset: null when fine, else the error already reported.
bool check_range(const void* p, size_t n, const char* call, const char* role) {
  if (n == 0) return true;
  std::string why;
  if (emu::device_range_ok(p, n, &why)) return true;
  emu::report_host_error("out-of-bounds copy", std::string(call) + ": the " + role + " range of " +
                                                   std::to_string(n) + " byte(s) is not inside one allocation: " + why);
  return false;
}

enum class Side { Host, Device };
Side side(const void* p) { return emu::is_device_pointer(p) ? Side::Device : Side::Host; }

cudaError_t copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, const char* call) {
  if (n == 0) return cudaSuccess;
  const Side ds = side(dst), ss = side(src);
  const bool want_dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool want_src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind != cudaMemcpyDefault && ((ds == Side::Device) != want_dst_dev || (ss == Side::Device) != want_src_dev)) {
    emu::report_host_error("wrong cudaMemcpyKind", std::string(call) +
                                                       ": the pointers do not match the direction of the copy (kind " +
                                                       std::to_string(int(kind)) + ")");
    return cudaErrorInvalidValue;
  }
  if (ds == Side::Device && !check_range(dst, n, call, "destination")) return cudaErrorInvalidValue;
  if (ss == Side::Device && !check_range(src, n, call, "source")) return cudaErrorInvalidValue;
  if (ss == Side::Device && ds == Side::Host) {
    const long first = emu::device_first_uninitialised(src, n);
    if (first >= 0)
      emu::report_host_error("copy of uninitialised device memory",
                             std::string(call) + ": byte " + std::to_string(first) + " of the " + std::to_string(n) +
                                 " copied to the host was never written on the device");
  }
  std::memmove(dst, src, n);
  if (ds == Side::Device) {
    if (ss == Side::Device) emu::device_copy_state(dst, src, n);
    else emu::device_mark_initialised(dst, n);
  }
  return cudaSuccess;
}

}  // namespace

extern "C" {

cudaError_t cudaGetLastError(void) { return emu::take_last_error(); }
cudaError_t cudaPeekAtLastError(void) { return emu::peek_last_error(); }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaErrorLaunchFailure: return "the emulator found an error in the kernel (see the cuda-emu report above)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated device)";
    default: return "emulated error";
  }
}

cudaError_t cudaMalloc(void** p, size_t n) {
  *p = emu::device_malloc(n);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  if (!emu::device_free(p)) {
    emu::report_host_error("invalid cudaFree", "cudaFree of a pointer that is not a live device allocation");
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* f, size_t* t) {
  *f = emu::device_free_bytes();
  *t = emu::device_total_bytes();
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* d) {
  *d = g_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  g_device = d;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  if (mode() == "olddriver") return cudaErrorInsufficientDriver;
  if (mode() == "nodevice") return cudaErrorNoDevice;
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* p, int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  std::memset(p, 0, sizeof(*p));
  std::strcpy(p->name, "cuda-emu (host emulator)");
  p->major = 9;
  p->minor = 0;
  p->totalGlobalMem = emu::device_total_bytes();
  p->multiProcessorCount = 132;
  p->maxThreadsPerBlock = 1024;
  p->warpSize = 32;
  p->sharedMemPerBlock = 48 << 10;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, enum cudaDeviceAttr a, int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = 132; break;
    case cudaDevAttrClockRate: *v = 1755000; break;
    case cudaDevAttrMemoryClockRate: *v = 2619000; break;
    case cudaDevAttrGlobalMemoryBusWidth: *v = 5120; break;
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    default: *v = 0; break;
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, enum cudaMemcpyKind k, cudaStream_t) {
  return copy(d, s, n, k, "cudaMemcpyAsync");
}
cudaError_t cudaMemcpy(void* d, const void* s, size_t n, enum cudaMemcpyKind k) { return copy(d, s, n, k, "cudaMemcpy"); }
cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) {
  if (!check_range(d, n, "cudaMemsetAsync", "destination")) return cudaErrorInvalidValue;
  std::memset(d, v, n);
  emu::device_mark_initialised(d, n);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* d, int v, size_t n) { return cudaMemsetAsync(d, v, n, nullptr); }

cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = reinterpret_cast<cudaStream_t>(new int(0));
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<int*>(s);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = reinterpret_cast<cudaEvent_t>(new double(0));
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  *reinterpret_cast<double*>(e) =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = float(*reinterpret_cast<double*>(b) - *reinterpret_cast<double*>(a));
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<double*>(e);
  return cudaSuccess;
}
cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes* a, const void*) {
  if (mode() == "noimage") return cudaErrorNoKernelImageForDevice;
  if (mode() == "invfn") return cudaErrorInvalidDeviceFunction;
  std::memset(a, 0, sizeof(*a));
  a->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = mode() == "olddriver" ? 12040 : 13000;
  return cudaSuccess;
}

}  // extern "C"
