// A 64-byte aligned array: full cache lines for the SIMD kernels. Large blocks
// come from a process-wide cache (block_cache.cpp), so repeated loss calls do
// not pay the kernel's page faults and zeroing again for every activation.
// Contents start uninitialised unless zeroed: every kernel writes its output.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace mghf {

// 64-byte aligned memory; blocks of 1 MiB and more are cached for reuse.
// block_alloc stores the block's real size in *capacity; pass that to block_free.
void* block_alloc(size_t bytes, size_t* capacity);
void block_free(void* p, size_t capacity);
// Bytes held in the cache, and a way to give them back (tests, low memory).
size_t block_cache_bytes();
void block_cache_clear();

template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) { resize(n); }
  Buffer(size_t n, T value) {
    resize(n);
    for (size_t i = 0; i < n; ++i) p_[i] = value;
  }
  Buffer(const Buffer& o) { *this = o; }
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(const Buffer& o) {
    if (this != &o) {
      resize(o.n_);
      if (n_) std::memcpy(p_, o.p_, n_ * sizeof(T));
    }
    return *this;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    swap(o);
    return *this;
  }
  ~Buffer() { release(); }

  // Contents after a resize are unspecified.
  void resize(size_t n) {
    if (n == n_) return;
    release();
    if (n == 0) return;
    p_ = static_cast<T*>(block_alloc(n * sizeof(T), &cap_));
    n_ = n;
  }
  void zero() {
    if (n_) std::memset(static_cast<void*>(p_), 0, n_ * sizeof(T));
  }
  void release() {
    if (p_) block_free(p_, cap_);
    p_ = nullptr;
    n_ = 0;
  }
  void swap(Buffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(cap_, o.cap_);
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
  size_t cap_ = 0;  // bytes actually held
};

}  // namespace mghf
