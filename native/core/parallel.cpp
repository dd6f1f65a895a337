#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mghf {
namespace {

struct Job {
  const std::function<void(int64_t)>* fn;
  int64_t n;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> remaining;
  std::mutex m;
  std::condition_variable done_cv;
  std::exception_ptr error;
  explicit Job(const std::function<void(int64_t)>* f, int64_t count)
      : fn(f), n(count), remaining(count) {}

  // Claims and runs tasks until none are left to claim. Returns when the queue
  // should move on to the next job.
  void work() {
    for (;;) {
      int64_t i = next.fetch_add(1);
      if (i >= n) return;
      try {
        (*fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m);
        if (!error) error = std::current_exception();
      }
      if (remaining.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(m);
        done_cv.notify_all();
      }
    }
  }
};

int threads_from_env() {
  if (const char* s = std::getenv("MGHF_NUM_THREADS")) {
    int v = std::atoi(s);
    if (v >= 1 && v <= 1024) return v;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int threads() const { return threads_; }

  void run(int64_t n, const std::function<void(int64_t)>& fn) {
    if (n <= 0) return;
    if (n == 1 || threads_ == 1) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    auto job = std::make_shared<Job>(&fn, n);
    {
      std::lock_guard<std::mutex> lock(m_);
      queue_.push_back(job);
    }
    cv_.notify_all();
    job->work();
    {
      std::unique_lock<std::mutex> lock(job->m);
      job->done_cv.wait(lock, [&] { return job->remaining.load() == 0; });
    }
    {
      std::lock_guard<std::mutex> lock(m_);
      auto it = std::find(queue_.begin(), queue_.end(), job);
      if (it != queue_.end()) queue_.erase(it);
    }
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  void loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return stop_ || has_claimable(); });
        if (stop_) return;
        for (auto& j : queue_)
          if (j->next.load() < j->n) {
            job = j;
            break;
          }
      }
      if (job) job->work();
    }
  }
  bool has_claimable() const {
    for (auto& j : queue_)
      if (j->next.load() < j->n) return true;
    return false;
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stop_ = false;
};

Pool& pool() {
  // Leaked on purpose: joining threads from a static destructor at process
  // exit (after Node tore down) can hang.
  static Pool* p = new Pool(threads_from_env());
  return *p;
}

}  // namespace

int num_threads() { return pool().threads(); }

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) { pool().run(n, fn); }

void parallel_range(int64_t n, int64_t grain,
                    const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, int64_t(num_threads()) * 4);
  chunks = std::max<int64_t>(chunks, 1);
  int64_t size = (n + chunks - 1) / chunks;
  chunks = (n + size - 1) / size;
  parallel_for(chunks, [&](int64_t c) {
    int64_t b = c * size, e = std::min(n, b + size);
    fn(b, e);
  });
}

}  // namespace mghf
