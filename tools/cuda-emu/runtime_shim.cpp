// Host stand-ins for the CUDA runtime calls the backend makes: "device"
// memory is host memory, streams and events are dummies. EMU_MODE=olddriver,
// nodevice, noimage or invfn makes the status calls fail as those machines would.
#include <cuda_runtime_api.h>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
static std::string mode() { const char* m = std::getenv("EMU_MODE"); return m ? m : ""; }
extern "C" {
size_t emu_malloc_calls = 0, emu_free_calls = 0;
size_t emu_fail_above = size_t(-1);  // cudaMalloc of more fails (OOM tests)
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char* cudaGetErrorName(cudaError_t e) { return e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaErrorX"; }
const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
cudaError_t cudaMalloc(void** p, size_t n) {
  if (n > emu_fail_above) return cudaErrorMemoryAllocation;
  ++emu_malloc_calls;
  *p = std::aligned_alloc(256, (n + 255) / 256 * 256);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) { ++emu_free_calls; std::free(p); return cudaSuccess; }
static int current = 0;
cudaError_t cudaGetDevice(int* d) { *d = current; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { current = d; return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t* f, size_t* t) { *f = *t = size_t(80) << 30; return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, enum cudaMemcpyKind, cudaStream_t) { std::memcpy(d, s, n); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) { std::memset(d, v, n); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { *s = reinterpret_cast<cudaStream_t>(new int(0)); return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { delete reinterpret_cast<int*>(s); return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = reinterpret_cast<cudaEvent_t>(new double(0)); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  *reinterpret_cast<double*>(e) = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) { *ms = float(*reinterpret_cast<double*>(b) - *reinterpret_cast<double*>(a)); return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete reinterpret_cast<double*>(e); return cudaSuccess; }
cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes*, const void*) { return mode() == "noimage" ? cudaErrorNoKernelImageForDevice : mode() == "invfn" ? cudaErrorInvalidDeviceFunction : cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int* v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int* v) { *v = mode() == "olddriver" ? 12040 : 13000; return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int* n) { if (mode() == "olddriver") return cudaErrorInsufficientDriver; if (mode() == "nodevice") return cudaErrorNoDevice; *n = 1; return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof(*p)); std::strcpy(p->name, "Emulated H100"); p->major = 9; p->minor = 0; return cudaSuccess;
}
}
