// A small shared thread pool. Several callers (concurrent loss calls from Node's
// libuv workers) may submit at once, and a caller always works on its own job,
// so nested or concurrent parallel_for calls cannot deadlock.
#pragma once
#include <cstdint>
#include <functional>

namespace mghf {

// Number of threads the pool uses (MGHF_NUM_THREADS, else the hardware's).
int num_threads();

// Runs fn(i) for every i in [0, n). Blocks until all are done; rethrows the
// first exception a task threw.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

// Runs fn(begin, end) over [0, n) split into contiguous ranges of at least
// `grain` items, about 4 ranges per thread for load balance.
void parallel_range(int64_t n, int64_t grain,
                    const std::function<void(int64_t, int64_t)>& fn);

}  // namespace mghf
