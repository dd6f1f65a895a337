// The per-device caching allocator behind DeviceBuffer (device_buffer.h), the
// GPU twin of block_cache.cpp: cudaMalloc and cudaFree synchronise the device
// and cost far more than a loss call's kernels, so idle blocks are kept per
// device, keyed by size, and reused by later calls of the same shape.
#include <algorithm>
#include <map>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>

#include "cuda_check.h"
#include "device_buffer.h"

namespace mghf {
namespace cuda {
namespace {

constexpr size_t kSmall = size_t(1) << 20;         // below: 512-byte granules
constexpr size_t kLargeGranule = size_t(2) << 20;  // at and above: 2 MiB (the GPU page)
constexpr size_t kIdleCapMax = size_t(4) << 30;    // never hold more than 4 GiB idle

struct DeviceCache {
  std::multimap<size_t, void*> idle;  // rounded size → block
  size_t held = 0;                    // bytes in `idle`
  size_t cap = 0;                     // min(4 GiB, device memory / 4), set on first use
};

struct Allocator {
  std::mutex m;
  std::map<int, DeviceCache> devices;
  std::unordered_map<void*, int> owner;  // every block we hold or lent → its device
};

Allocator& allocator() {
  static Allocator* a = new Allocator();  // leaked: outlives any static DeviceBuffer
  return *a;
}

// MGHF_CUDA_NO_CACHE=1: exact-size blocks, freed at once, so compute-sanitizer
// memcheck sees every overrun that a rounded or reused block would hide.
bool no_cache() {
  static const bool off = [] {
    const char* v = std::getenv("MGHF_CUDA_NO_CACHE");
    return v && *v && *v != '0';
  }();
  return off;
}

size_t rounded(size_t bytes) {
  if (no_cache()) return bytes;
  const size_t g = bytes >= kSmall ? kLargeGranule : 512;
  return (bytes + g - 1) / g * g;
}

// Runs fn with `device` current, then restores the caller's device. Never
// throws: it runs on the free paths (destructors).
template <class F>
void on_device(int device, F&& fn) {
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
  if (prev != device) (void)cudaSetDevice(device);
  fn();
  if (prev >= 0 && prev != device) (void)cudaSetDevice(prev);
  (void)cudaGetLastError();
}

// Gives every idle block of one device back to the driver. Caller holds the lock.
void release_idle(Allocator& a, int device, DeviceCache& dc) {
  if (dc.idle.empty()) return;
  on_device(device, [&] {
    for (auto& kv : dc.idle) {
      (void)cudaFree(kv.second);
      a.owner.erase(kv.second);
    }
  });
  dc.idle.clear();
  dc.held = 0;
}

}  // namespace

void* device_alloc(size_t bytes, size_t* capacity) {
  *capacity = 0;
  if (bytes == 0) return nullptr;
  const size_t size = rounded(bytes);
  int device = 0;
  MGHF_CUDA_CHECK(cudaGetDevice(&device));
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.m);
  DeviceCache& dc = a.devices[device];
  if (dc.cap == 0) {
    size_t free_bytes = 0, total = 0;
    MGHF_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    dc.cap = std::max<size_t>(1, std::min(kIdleCapMax, total / 4));
  }
  // Exact size first (shapes repeat call after call), else the smallest block
  // at most twice as large.
  auto it = dc.idle.lower_bound(size);
  if (it != dc.idle.end() && it->first <= 2 * size) {
    void* p = it->second;
    *capacity = it->first;
    dc.held -= it->first;
    dc.idle.erase(it);
    return p;
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, size);
  if (e == cudaErrorMemoryAllocation) {
    // Out of memory: what we hold idle may be what is missing.
    (void)cudaGetLastError();
    release_idle(a, device, dc);
    e = cudaMalloc(&p, size);
  }
  if (e != cudaSuccess) {
    try {
      throw_cuda(e, "cudaMalloc", __FILE__, __LINE__);  // MGHF_CUDA_CHECK's error, plus the size
    } catch (const Error& err) {
      const std::string amount = size >= kSmall ? std::to_string(size >> 20) + " MiB"
                                                : std::to_string(size) + " bytes";
      throw Error(err.code(), std::string(err.what()) + " (" + amount + " on device " +
                                  std::to_string(device) + ")");
    }
  }
  a.owner[p] = device;
  *capacity = size;
  return p;
}

void device_free(void* p, size_t capacity) {
  if (!p) return;
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.m);
  auto own = a.owner.find(p);
  const int device = own != a.owner.end() ? own->second : -1;
  if (device >= 0) {
    DeviceCache& dc = a.devices[device];
    if (!no_cache() && dc.held + capacity <= dc.cap) {
      dc.idle.emplace(capacity, p);
      dc.held += capacity;
      return;
    }
    a.owner.erase(own);
    on_device(device, [&] { (void)cudaFree(p); });
    return;
  }
  (void)cudaFree(p);  // not ours (cannot happen through DeviceBuffer)
  (void)cudaGetLastError();
}

size_t device_cache_bytes() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.m);
  size_t total = 0;
  for (auto& kv : a.devices) total += kv.second.held;
  return total;
}

void device_cache_clear() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lock(a.m);
  for (auto& kv : a.devices) release_idle(a, kv.first, kv.second);
}

}  // namespace cuda
}  // namespace mghf
