#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#include "buffer.h"

namespace mghf {
namespace {

constexpr size_t kCacheMin = size_t(1) << 20;  // smaller blocks go straight to malloc
constexpr size_t kCacheMax = size_t(2) << 30;  // never hold more than 2 GiB idle

struct Cache {
  std::mutex m;
  std::multimap<size_t, void*> free_blocks;  // rounded size → block
  size_t held = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked: outlives any static Buffer
  return *c;
}

size_t rounded(size_t bytes) {
  const size_t page = bytes >= kCacheMin ? (size_t(1) << 16) : 64;
  return (bytes + page - 1) / page * page;
}

}  // namespace

void* block_alloc(size_t bytes, size_t* capacity) {
  const size_t size = rounded(bytes);
  *capacity = size;
  if (size >= kCacheMin) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.m);
    // Exact size first (shapes repeat call after call), else the smallest
    // block at most twice as large.
    auto it = c.free_blocks.lower_bound(size);
    if (it != c.free_blocks.end() && it->first <= 2 * size) {
      void* p = it->second;
      *capacity = it->first;
      c.held -= it->first;
      c.free_blocks.erase(it);
      return p;
    }
  }
  void* p = std::aligned_alloc(64, size);
  if (!p) {
    block_cache_clear();
    p = std::aligned_alloc(64, size);
    if (!p) throw std::bad_alloc();
  }
  return p;
}

void block_free(void* p, size_t size) {
  if (size >= kCacheMin) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.m);
    if (c.held + size <= kCacheMax) {
      c.free_blocks.emplace(size, p);
      c.held += size;
      return;
    }
  }
  std::free(p);
}

size_t block_cache_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.m);
  return c.held;
}

void block_cache_clear() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.m);
  for (auto& kv : c.free_blocks) std::free(kv.second);
  c.free_blocks.clear();
  c.held = 0;
}

}  // namespace mghf
