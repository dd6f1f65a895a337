// Device memory for one call: DeviceBuffer<T> takes blocks from a per-device
// caching allocator (device_buffer.cu) and gives them back when destroyed.
// A block is only reused by a later call after the stream that used it has
// been synchronised (CudaBackend synchronises at the end of every call), so
// concurrent calls on their own streams never share live memory.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

namespace mghf {
namespace cuda {

// Raw blocks (256-byte aligned) from the current device's cache.
void* device_alloc(size_t bytes, size_t* capacity);
void device_free(void* p, size_t capacity);
size_t device_cache_bytes();  // held idle, all devices
void device_cache_clear();    // return idle blocks to the driver

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { resize(n); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { swap(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    swap(o);
    return *this;
  }
  ~DeviceBuffer() { release(); }
  void resize(size_t n) {
    if (n == n_) return;
    release();
    if (n) p_ = static_cast<T*>(device_alloc(n * sizeof(T), &cap_));
    n_ = n;
  }
  void release() {
    if (p_) device_free(p_, cap_);
    p_ = nullptr;
    n_ = cap_ = 0;
  }
  void swap(DeviceBuffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(cap_, o.cap_);
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

}  // namespace cuda
}  // namespace mghf
