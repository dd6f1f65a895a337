// Kernels with the bugs the emulator must catch (selftest.cpp checks each report), and correct
// ones it must pass. Each `case_*` runs one kernel on fresh device memory.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace {

constexpr unsigned kFull = 0xffffffffu;

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// Correct: a block sum through shuffles, shared memory and barriers.
__global__ void block_sum_kernel(const float* x, int n, float* out) {
  __shared__ float part[32];
  const int t = int(threadIdx.x);
  float v = 0;
  for (int i = t; i < n; i += blockDim.x) v += x[i];
  v = warp_sum(v);
  if (t % 32 == 0) part[t / 32] = v;
  __syncthreads();
  if (t < 32) {
    v = t < int(blockDim.x) / 32 ? part[t] : 0.f;
    v = warp_sum(v);
    if (t == 0) out[blockIdx.x] = v;
  }
}

// Correct: a shared histogram with atomics between barriers.
__global__ void histogram_kernel(const int* x, int n, unsigned* out) {
  __shared__ unsigned count[16];
  const int t = int(threadIdx.x);
  if (t < 16) count[t] = 0;
  __syncthreads();
  for (int i = t; i < n; i += blockDim.x) atomicAdd(&count[x[i] & 15], 1u);
  __syncthreads();
  if (t < 16) out[t] = count[t];
}

// Bug: the loop bound lets the last thread write one element past the end.
__global__ void off_by_one_kernel(const float* x, int n, float* y) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i <= n - 1) y[i + 1] = x[i];
}

// Bug: no __syncthreads between the shared writes and the neighbour's read.
__global__ void missing_barrier_kernel(const float* x, float* y) {
  __shared__ float s[64];
  const int t = int(threadIdx.x);
  s[t] = x[t];
  y[t] = s[(t + 1) % 64];
}

// Bug: a shared array read before anything was written to it.
__global__ void uninitialised_shared_kernel(float* y) {
  __shared__ float s[64];
  __syncthreads();
  y[threadIdx.x] = s[threadIdx.x];
}

// Bug: a half-warp shuffle whose xor offset (16) leaves the mask (0x0000ffff).
__global__ void wrong_shuffle_offset_kernel(const float* x, float* y) {
  float v = x[threadIdx.x];
  if (threadIdx.x < 16) v += __shfl_xor_sync(0x0000ffffu, v, 16);
  y[threadIdx.x] = v;
}

// Bug: a full-warp mask in a block of 48 threads (the second warp has only 16 lanes).
__global__ void partial_warp_kernel(const float* x, float* y) {
  y[threadIdx.x] = warp_sum(x[threadIdx.x]);
}

// Bug: __syncthreads inside a branch only half the block takes.
__global__ void divergent_barrier_kernel(float* y) {
  __shared__ float s[64];
  s[threadIdx.x] = float(threadIdx.x);
  if (threadIdx.x < 32) __syncthreads();
  else __syncthreads();
  y[threadIdx.x] = s[63 - threadIdx.x];
}

// Bug: threads that return early never reach the barrier the others wait at.
__global__ void early_exit_barrier_kernel(const float* x, int n, float* y) {
  __shared__ float s[64];
  const int t = int(threadIdx.x);
  if (t >= n) return;
  s[t] = x[t];
  __syncthreads();
  y[t] = s[n - 1 - t];
}

// Bug: lane 0 waits in a shuffle for lanes that wait at a barrier for it.
__global__ void deadlock_kernel(float* y) {
  float v = float(threadIdx.x);
  if (threadIdx.x == 0) v = __shfl_sync(kFull, v, 1);
  else __syncthreads();
  y[threadIdx.x] = v;
}

// Bug: every block writes the same element.
__global__ void global_race_kernel(float* y) {
  if (threadIdx.x == 0) y[0] = float(blockIdx.x);
}

// Bug: every thread of a block writes one shared word in the same interval.
__global__ void shared_race_kernel(float* y) {
  __shared__ float s;
  s = float(threadIdx.x);
  __syncthreads();
  y[threadIdx.x] = s;
}

// Bug: the clearing write and the atomics are not separated by a barrier.
__global__ void atomic_without_barrier_kernel(const int* x, int n, unsigned* out) {
  __shared__ unsigned count[16];
  const int t = int(threadIdx.x);
  if (t < 16) count[t] = 0;
  for (int i = t; i < n; i += blockDim.x) atomicAdd(&count[x[i] & 15], 1u);
  __syncthreads();
  if (t < 16) out[t] = count[t];
}

// Bug: device memory read before any kernel, copy or memset wrote it.
__global__ void uninitialised_device_kernel(const float* x, float* y) { y[threadIdx.x] = x[threadIdx.x] + 1; }

// Launched with more threads than its bound.
__global__ void __launch_bounds__(64) bounded_kernel(float* y) { y[threadIdx.x] = 1; }

template <class T>
T* device(size_t n) {
  void* p = nullptr;
  cudaMalloc(&p, n * sizeof(T));
  return static_cast<T*>(p);
}
template <class T>
T* upload(const std::vector<T>& h) {
  T* d = device<T>(h.size());
  cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}
template <class T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

}  // namespace

// Each returns a value the self-test checks where the kernel is correct, and leaves the
// emulator's reports to be checked otherwise. The launch error (cudaGetLastError) is returned
// through *err.
float case_block_sum(cudaError_t* err) {
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7);
  float* dx = upload(x);
  float* dy = device<float>(1);
  block_sum_kernel<<<1, 256>>>(dx, 1000, dy);
  *err = cudaGetLastError();
  const float r = download(dy, 1)[0];
  cudaFree(dx);
  cudaFree(dy);
  return r;
}

unsigned case_histogram(cudaError_t* err, bool with_barrier) {
  std::vector<int> x(500);
  for (size_t i = 0; i < x.size(); ++i) x[i] = int(i * 7 % 16);
  int* dx = upload(x);
  unsigned* dy = device<unsigned>(16);
  if (with_barrier) histogram_kernel<<<1, 128>>>(dx, 500, dy);
  else atomic_without_barrier_kernel<<<1, 128>>>(dx, 500, dy);
  *err = cudaGetLastError();
  unsigned total = 0;
  for (unsigned c : download(dy, 16)) total += c;
  cudaFree(dx);
  cudaFree(dy);
  return total;
}

void case_off_by_one(cudaError_t* err) {
  float* dx = upload(std::vector<float>(100, 1.f));
  float* dy = device<float>(100);
  off_by_one_kernel<<<4, 32>>>(dx, 100, dy);
  *err = cudaGetLastError();
  cudaFree(dx);
  cudaFree(dy);
}

void case_missing_barrier(cudaError_t* err) {
  float* dx = upload(std::vector<float>(64, 2.f));
  float* dy = device<float>(64);
  missing_barrier_kernel<<<1, 64>>>(dx, dy);
  *err = cudaGetLastError();
  cudaFree(dx);
  cudaFree(dy);
}

void case_uninitialised_shared(cudaError_t* err) {
  float* dy = device<float>(64);
  uninitialised_shared_kernel<<<1, 64>>>(dy);
  *err = cudaGetLastError();
  cudaFree(dy);
}

void case_wrong_shuffle(cudaError_t* err) {
  float* dx = upload(std::vector<float>(32, 1.f));
  float* dy = device<float>(32);
  wrong_shuffle_offset_kernel<<<1, 32>>>(dx, dy);
  *err = cudaGetLastError();
  cudaFree(dx);
  cudaFree(dy);
}

void case_partial_warp(cudaError_t* err) {
  float* dx = upload(std::vector<float>(48, 1.f));
  float* dy = device<float>(48);
  partial_warp_kernel<<<1, 48>>>(dx, dy);
  *err = cudaGetLastError();
  cudaFree(dx);
  cudaFree(dy);
}

void case_divergent_barrier(cudaError_t* err) {
  float* dy = device<float>(64);
  divergent_barrier_kernel<<<1, 64>>>(dy);
  *err = cudaGetLastError();
  cudaFree(dy);
}

void case_early_exit_barrier(cudaError_t* err) {
  float* dx = upload(std::vector<float>(64, 1.f));
  float* dy = device<float>(64);
  early_exit_barrier_kernel<<<1, 64>>>(dx, 40, dy);
  *err = cudaGetLastError();
  cudaFree(dx);
  cudaFree(dy);
}

void case_deadlock(cudaError_t* err) {
  float* dy = device<float>(32);
  deadlock_kernel<<<1, 32>>>(dy);
  *err = cudaGetLastError();
  cudaFree(dy);
}

void case_global_race(cudaError_t* err) {
  float* dy = device<float>(1);
  global_race_kernel<<<4, 32>>>(dy);
  *err = cudaGetLastError();
  cudaFree(dy);
}

void case_shared_race(cudaError_t* err) {
  float* dy = device<float>(64);
  shared_race_kernel<<<1, 64>>>(dy);
  *err = cudaGetLastError();
  cudaFree(dy);
}

void case_uninitialised_device(cudaError_t* err) {
  float* dx = device<float>(32);
  float* dy = device<float>(32);
  uninitialised_device_kernel<<<1, 32>>>(dx, dy);
  *err = cudaGetLastError();
  cudaFree(dx);
  cudaFree(dy);
}

void case_launch_bounds(cudaError_t* err) {
  float* dy = device<float>(128);
  bounded_kernel<<<1, 128>>>(dy);
  *err = cudaGetLastError();
  cudaFree(dy);
}

float case_host_dereference() {
  float* dy = upload(std::vector<float>(4, 3.f));
  const float v = *dy;  // host code reading device memory
  cudaFree(dy);
  return v;
}

void case_copy_uninitialised() {
  float* dy = device<float>(8);
  download(dy, 8);
  cudaFree(dy);
}
