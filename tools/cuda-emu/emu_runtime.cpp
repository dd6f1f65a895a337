// The host emulator of the CUDA execution model (tools/cuda-emu/README.md).
//
// A launch runs its blocks one after another (process-wide one launch at a time); the threads
// of a block are fibers on the launching OS thread, switched only where CUDA threads would wait
// for each other: at __syncthreads and at warp collectives (shuffles, ballots, __syncwarp). So
// every kernel runs as written, deterministically, with warp intrinsics, atomics and shared
// memory, and the emulator sees every point where threads meet.
//
// The emulated sources are compiled with GCC's -fsanitize=thread *instrumentation* but without
// its runtime: every load and store calls a __tsan_* hook defined here. The hooks keep a shadow
// record per byte of device memory and of the block's shared memory, and report
//   - accesses outside any allocation (red zones around each cudaMalloc, guard gaps between
//     the __shared__ arrays of a block, freed memory),
//   - reads of bytes never written (device memory since cudaMalloc, shared memory since the
//     block started),
//   - races: two threads touching one byte, at least one writing, not both atomically, with no
//     __syncthreads (same block) or __syncwarp (same warp) between them; across blocks of one
//     launch nothing orders plain accesses,
//   - host code dereferencing device memory.
// The scheduler reports __syncthreads reached by only some threads or at different places,
// collectives whose masks name exited, absent or disagreeing lanes, and deadlocks.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <elf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "emu.h"
#include "emu_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

#define EMU_TLS __attribute__((tls_model("initial-exec")))

namespace emu {
namespace {

// ---- configuration ------------------------------------------------------------------------------

enum class Schedule { Forward, Reverse, Random };

struct Config {
  Schedule schedule = Schedule::Forward;
  uint64_t seed = 1;
  // Under ASan the loads and stores are ASan's, not the emulator's hooks, so the shadow never
  // sees a write: the shadow checks (uninitialised reads, races) would only report noise.
  bool checks = !EMU_ASAN;
  OnError on_error = OnError::Fail;
  size_t device_bytes = size_t(16) << 30;
  size_t stack_bytes = EMU_ASAN ? size_t(512) << 10 : size_t(64) << 10;
  std::string coverage_file;
  bool report = false;
};

Config read_config() {
  Config c;
  if (const char* s = std::getenv("EMU_SCHEDULE")) {
    const std::string v = s;
    if (v == "reverse") c.schedule = Schedule::Reverse;
    else if (v.rfind("random", 0) == 0) {
      c.schedule = Schedule::Random;
      if (v.size() > 7) c.seed = std::strtoull(v.c_str() + 7, nullptr, 10);
    }
  }
  if (const char* s = std::getenv("EMU_CHECKS")) c.checks = std::string(s) != "0";
  if (const char* s = std::getenv("EMU_ON_ERROR")) {
    const std::string v = s;
    if (v == "record") c.on_error = OnError::Record;
    else if (v == "abort") c.on_error = OnError::Abort;
  }
  if (const char* s = std::getenv("EMU_DEVICE_MEMORY")) c.device_bytes = std::strtoull(s, nullptr, 10);
  if (const char* s = std::getenv("EMU_COVERAGE")) c.coverage_file = s;
  if (const char* s = std::getenv("EMU_REPORT")) c.report = std::string(s) != "0";
  return c;
}

Config& config() {
  static Config c = read_config();
  return c;
}

// ---- errors -------------------------------------------------------------------------------------

std::mutex g_err_mu;
long g_errors = 0;
long g_printed = 0;
std::set<std::string> g_seen;        // one report per kind and place
std::vector<std::string> g_recorded;  // Record mode
constexpr long kMaxPrinted = 25;

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

// "file:line (function)" of a code address, innermost inlined frame first, from addr2line when
// it is installed; cached, since each lookup runs a process.
std::string symbolize(const void* pc) {
  if (!pc) return "?";
  static std::mutex mu;
  static std::map<const void*, std::string> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(pc);
    if (it != cache.end()) return it->second;
  }
  std::string out;
  Dl_info info;
  if (dladdr(pc, &info) && info.dli_fname) {
    uintptr_t addr = uintptr_t(pc) - 1;  // inside the call instruction
    const auto* eh = static_cast<const Elf64_Ehdr*>(info.dli_fbase);
    if (eh && eh->e_type == ET_DYN) addr -= uintptr_t(info.dli_fbase);
    const std::string cmd = format("addr2line -C -f -i -e '%s' 0x%" PRIxPTR " 2>/dev/null", info.dli_fname, addr);
    if (FILE* p = popen(cmd.c_str(), "r")) {
      char fn[4096], where[4096];
      if (fgets(fn, sizeof fn, p) && fgets(where, sizeof where, p)) {
        std::string f = fn, w = where;
        while (!f.empty() && (f.back() == '\n' || f.back() == '\r')) f.pop_back();
        while (!w.empty() && (w.back() == '\n' || w.back() == '\r')) w.pop_back();
        if (w.rfind("??", 0) != 0) out = w;
      }
      pclose(p);
    }
    if (out.empty()) out = info.dli_sname ? info.dli_sname : format("%p", pc);
  } else {
    out = format("%p", pc);
  }
  std::lock_guard<std::mutex> lock(mu);
  cache[pc] = out;
  return out;
}

struct BlockRun;
EMU_TLS thread_local BlockRun* tl_run = nullptr;

std::string context_text();

void print_error(const std::string& kind, const std::string& text) {
  if (g_printed < kMaxPrinted) std::fprintf(stderr, "cuda-emu: ERROR: %s: %s\n", kind.c_str(), text.c_str());
  else if (g_printed == kMaxPrinted) std::fprintf(stderr, "cuda-emu: (further errors are counted, not printed)\n");
  ++g_printed;
}

// `key` deduplicates (a race in a loop would otherwise be reported once per byte); `text` is
// built only for a report that will be shown or recorded (symbolizing runs addr2line).
inline std::string text_of(const std::string& s) { return s; }
inline std::string text_of(const char* s) { return s; }
template <class F, class = decltype(std::declval<F&>()())>
std::string text_of(F& f) {
  return f();
}

template <class Text>
void raise_error(const std::string& kind, const std::string& key, Text&& text) {
  std::unique_lock<std::mutex> lock(g_err_mu);
  ++g_errors;
  if (config().on_error == OnError::Record) {
    if (!g_seen.insert(kind + "|" + key).second) return;
    lock.unlock();
    std::string t = kind + ": " + text_of(text);
    lock.lock();
    g_recorded.push_back(std::move(t));
    return;
  }
  if (!g_seen.insert(kind + "|" + key).second || g_printed > kMaxPrinted) {
    ++g_printed;
    return;
  }
  lock.unlock();
  const std::string t = text_of(text);
  lock.lock();
  print_error(kind, t);
  if (config().on_error == OnError::Abort) {
    std::fflush(stderr);
    std::abort();
  }
}

// ---- coverage -------------------------------------------------------------------------------------

std::mutex g_cov_mu;
std::set<std::string> g_executed;
long g_launches = 0;

void at_exit() {
  std::set<std::string> executed;
  long launches, errors;
  {
    std::lock_guard<std::mutex> lock(g_cov_mu);
    executed = g_executed;
    launches = g_launches;
  }
  {
    std::lock_guard<std::mutex> lock(g_err_mu);
    errors = g_errors;
  }
  const Config& c = config();
  if (!c.coverage_file.empty()) {
    // Every kernel of the registry, "1 name file" when this process launched it, else "0 …": a
    // reader can take the union of several runs and still knows the total. Overwritten, so a
    // stale file from an earlier run never counts.
    if (FILE* f = std::fopen(c.coverage_file.c_str(), "w")) {
      for (int i = 0; i < kKernelCount; ++i)
        std::fprintf(f, "%d %s %s\n", executed.count(kKernels[i].name) ? 1 : 0, kKernels[i].name,
                     kKernels[i].file);
      std::fclose(f);
    }
  }
  if (c.report || errors > 0) {
    std::fprintf(stderr, "cuda-emu: %ld launches; %zu of %d kernels executed; %ld error(s)\n", launches,
                 executed.size(), kKernelCount, errors);
  }
  if (errors > 0 && c.on_error == OnError::Fail) {
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(86);  // an emulator error fails the process even if the caller swallowed the launch error
  }
}

void register_exit_report() {
  static bool registered = (std::atexit(at_exit), true);
  (void)registered;
}

// ---- device memory ------------------------------------------------------------------------------

enum State : uint8_t { kUnallocated = 0, kRedzone, kUninit, kInit };

// The shadow of one byte of device or shared memory: its state and the last write and read
// (thread, barrier epoch, warp epoch) in the launch (device) or block run (shared) `stamp`.
struct Shadow {
  uint32_t stamp;
  uint32_t w_tid, w_ep;
  uint32_t r_tid, r_ep;
  uint8_t w_wep, r_wep;
  uint8_t state;
  uint8_t flags;  // kWroteAtomic, kManyReaders
};
static_assert(sizeof(Shadow) == 24, "shadow entry size");
constexpr uint32_t kNoThread = 0xffffffffu;
constexpr uint8_t kWroteAtomic = 1, kManyReaders = 2;
constexpr size_t kRedzoneBytes = 256;

struct Allocation {
  size_t user, bytes;  // user bytes; block bytes (red zones and padding included)
};

class Heap {
 public:
  Heap() {
    size_ = config().device_bytes;
    const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    base_ = static_cast<char*>(mmap(nullptr, size_, PROT_READ | PROT_WRITE, flags, -1, 0));
    shadow_ = static_cast<Shadow*>(mmap(nullptr, size_ * sizeof(Shadow), PROT_READ | PROT_WRITE, flags, -1, 0));
    if (base_ == MAP_FAILED || shadow_ == MAP_FAILED) {
      std::fprintf(stderr, "cuda-emu: cannot reserve %zu bytes for the emulated device\n", size_);
      std::abort();
    }
    free_[0] = size_;
  }
  char* base() const { return base_; }
  size_t size() const { return size_; }
  Shadow* shadow(uintptr_t a) const { return shadow_ + (a - uintptr_t(base_)); }
  bool contains(uintptr_t a) const { return a - uintptr_t(base_) < size_; }

  void* alloc(size_t n) {
    if (n == 0) n = 1;
    const size_t user = (n + 255) / 256 * 256;
    const size_t bytes = user + 2 * kRedzoneBytes;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < bytes) continue;
      const size_t off = it->first, len = it->second;
      free_.erase(it);
      if (len > bytes) free_[off + bytes] = len - bytes;
      char* p = base_ + off + kRedzoneBytes;
      live_[p] = Allocation{n, bytes};
      used_ += bytes;
      set_state(base_ + off, kRedzoneBytes, kRedzone);
      set_state(p, n, kUninit);
      set_state(p + n, bytes - kRedzoneBytes - n, kRedzone);
      std::memset(p, 0xff, n);  // NaN in every float and double, −1 in every integer
#if EMU_ASAN
      ASAN_POISON_MEMORY_REGION(base_ + off, kRedzoneBytes);
      ASAN_POISON_MEMORY_REGION(p + n, bytes - kRedzoneBytes - n);
#endif
      return p;
    }
    return nullptr;
  }

  bool release(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(static_cast<char*>(p));
    if (it == live_.end()) return false;
    const size_t off = size_t(static_cast<char*>(p) - base_) - kRedzoneBytes, bytes = it->second.bytes;
    live_.erase(it);
    used_ -= bytes;
#if EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(base_ + off, bytes);
#endif
    // Give the pages back; whatever remains of the shadow says "unallocated".
    discard(base_ + off, bytes, 1);
    discard(reinterpret_cast<char*>(shadow_ + off), bytes * sizeof(Shadow), 0);
    set_state(base_ + off, bytes, kUnallocated);
    auto next = free_.lower_bound(off);
    size_t start = off, len = bytes;
    if (next != free_.end() && next->first == off + bytes) {
      len += next->second;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == start) {
        start = prev->first;
        len += prev->second;
        free_.erase(prev);
      }
    }
    free_[start] = len;
    return true;
  }

  // The live allocation holding a, or null (with `near` the closest one below, for messages).
  const Allocation* find(uintptr_t a, char** start) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.upper_bound(reinterpret_cast<char*>(a));
    if (it == live_.begin()) return nullptr;
    --it;
    *start = it->first;
    return &it->second;
  }
  size_t used() const { return used_; }

  void set_state(void* p, size_t n, uint8_t st) {
    Shadow* s = shadow(uintptr_t(p));
    for (size_t i = 0; i < n; ++i) {
      s[i].state = st;
      s[i].stamp = 0;
    }
  }

 private:
  static void discard(char* p, size_t n, int) {
    const uintptr_t page = 4096;
    const uintptr_t lo = (uintptr_t(p) + page - 1) & ~(page - 1), hi = (uintptr_t(p) + n) & ~(page - 1);
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
  }
  char* base_ = nullptr;
  Shadow* shadow_ = nullptr;
  size_t size_ = 0, used_ = 0;
  std::map<size_t, size_t> free_;      // offset → length, coalesced
  std::map<char*, Allocation> live_;   // user start → allocation
  mutable std::mutex mu_;
};

// The hooks below read g_heap without a static-local guard: inline library code shared with the
// instrumented files may call them while the heap itself is being constructed.
Heap* g_heap = nullptr;
bool g_checks = true;

Heap& heap() {
  static Heap* h = [] {
    auto* made = new Heap();  // never destroyed: device memory may be freed during exit
    g_checks = config().checks;
    g_heap = made;
    return made;
  }();
  return *h;
}

std::string describe_device_address(uintptr_t a) {
  char* start = nullptr;
  const Allocation* al = heap().find(a, &start);
  if (al) {
    const intptr_t off = intptr_t(a - uintptr_t(start));
    if (off >= 0 && size_t(off) < al->user) return format("byte %td of a %zu-byte allocation", off, al->user);
    if (off >= 0) return format("byte %td of a %zu-byte allocation, past its end", off, al->user);
  }
  return format("device address %#" PRIxPTR " (no allocation there: out of bounds, or freed)", a);
}

// ---- fibers ---------------------------------------------------------------------------------------

extern "C" void emu_switch(void** save_sp, void* to_sp);
#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, swaps stacks, restores.
asm(R"(
  .text
  .globl emu_switch
  .hidden emu_switch
  .type emu_switch,@function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch,.-emu_switch
)");
#else
#error "tools/cuda-emu: the fiber switch is written for x86-64 only"
#endif

enum class FState : uint8_t { Ready, Running, WaitBarrier, WaitWarp, Done };

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // lowest usable byte
  FState state = FState::Done;
  ThreadCtx ctx{};
  uint32_t linear = 0;
  std::source_location where;
  uint64_t warp_result = 0;
  int barrier_result = 0;
  void* asan_fake = nullptr;
};

struct Group {
  unsigned mask = 0, arrived = 0;
  WarpOp op = WarpOp::Shfl;
  std::source_location where;
  uint64_t val[32];
  int arg[32], width[32];
};

struct Warp {
  unsigned exists = 0, exited = 0;
  uint8_t wepoch = 0;
  std::vector<Group> groups;
};

struct BlockRun {
  const LaunchSite* site;
  void (*body)(void*);
  void* ctx;
  BlockCtx bctx;
  uint32_t n = 0, linear = 0, launch = 0, serial = 0;
  uint32_t epoch = 0;
  uint32_t arrived = 0, done = 0;
  BarrierKind bkind = BarrierKind::Plain;
  int bacc = 0;
  bool aborted = false;
  std::vector<Warp> warps;
};

struct Pool {
  std::vector<Fiber> fibers;
  char* stacks = nullptr;
  size_t count = 0, stride = 0;
  void* sched_sp = nullptr;
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
  void* sched_fake = nullptr;
};

EMU_TLS thread_local Fiber* tl_fiber = nullptr;
thread_local Pool tl_pool;

constexpr uint32_t kMaxThreads = 1024;

void ensure_pool(uint32_t n) {
  Pool& p = tl_pool;
  if (p.count >= n) return;
  // One reservation for the most threads a block can have: a guard page below each stack.
  const size_t page = 4096;
  p.stride = config().stack_bytes + page;
  p.stacks = static_cast<char*>(mmap(nullptr, p.stride * kMaxThreads, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (p.stacks == MAP_FAILED) {
    std::fprintf(stderr, "cuda-emu: cannot reserve fiber stacks\n");
    std::abort();
  }
  for (uint32_t i = 0; i < kMaxThreads; ++i) mprotect(p.stacks + i * p.stride, page, PROT_NONE);
  p.fibers.resize(kMaxThreads);
  for (uint32_t i = 0; i < kMaxThreads; ++i) p.fibers[i].stack = p.stacks + i * p.stride + page;
  p.count = kMaxThreads;
}

void switch_to_scheduler(Fiber& f, bool finished) {
#if EMU_ASAN
  __sanitizer_start_switch_fiber(finished ? nullptr : &f.asan_fake, tl_pool.sched_bottom, tl_pool.sched_size);
#else
  (void)finished;
#endif
  emu_switch(&f.sp, tl_pool.sched_sp);
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake, nullptr, nullptr);
#endif
}

void fiber_finished(Fiber& f);

[[noreturn]] void fiber_entry() {
  Fiber& f = *tl_fiber;
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &tl_pool.sched_bottom, &tl_pool.sched_size);
#endif
  tl_run->body(tl_run->ctx);
  fiber_finished(f);
  switch_to_scheduler(f, true);
  __builtin_unreachable();
}

void start_fiber(Fiber& f) {
  char* top = f.stack + config().stack_bytes;
  void** sp = reinterpret_cast<void**>(uintptr_t(top) & ~uintptr_t(15));
  *--sp = nullptr;                                 // fiber_entry's (never used) return address
  *--sp = reinterpret_cast<void*>(&fiber_entry);  // where emu_switch's ret lands
  for (int r = 0; r < 6; ++r) *--sp = nullptr;    // rbp rbx r12 r13 r14 r15
  f.sp = sp;
  f.state = FState::Ready;
}

void resume(Fiber& f) {
  tl_fiber = &f;
  tl_thread = &f.ctx;
  f.state = FState::Running;
#if EMU_ASAN
  __sanitizer_start_switch_fiber(&tl_pool.sched_fake, f.stack, config().stack_bytes);
#endif
  emu_switch(&tl_pool.sched_sp, f.sp);
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(tl_pool.sched_fake, nullptr, nullptr);
#endif
  tl_thread = nullptr;
  tl_fiber = nullptr;
}

void yield_fiber() { switch_to_scheduler(*tl_fiber, false); }

// ---- context for messages -----------------------------------------------------------------------

std::string dims(uint3 v) { return format("(%u,%u,%u)", v.x, v.y, v.z); }

std::string thread_text(const BlockRun& b, uint32_t t) {
  const dim3 d = b.bctx.dim;
  const uint3 v{t % d.x, t / d.x % d.y, t / (d.x * d.y)};
  return format("thread %s (%u)", dims(v).c_str(), t);
}

std::string context_text() {
  const BlockRun* b = tl_run;
  if (!b) return "outside any kernel";
  std::string s = format("kernel %s (launched at %s:%d), block %s", b->site->kernel, b->site->file, b->site->line,
                         dims(b->bctx.idx).c_str());
  if (tl_fiber) s += ", " + thread_text(*b, tl_fiber->linear);
  return s;
}

// "0-31, 64" for a sorted list of thread numbers.
std::string ranges(const std::vector<uint32_t>& ts) {
  std::string s;
  for (size_t i = 0; i < ts.size();) {
    size_t j = i;
    while (j + 1 < ts.size() && ts[j + 1] == ts[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += j == i ? format("%u", ts[i]) : format("%u-%u", ts[i], ts[j]);
    i = j + 1;
  }
  return s;
}

std::string where_text(const std::source_location& w) { return format("%s:%u", w.file_name(), unsigned(w.line())); }

template <class Text>
void kernel_error(const std::string& kind, const std::string& key, Text&& text, bool fatal) {
  raise_error(kind, key, [&] { return text_of(text) + " [" + context_text() + "]"; });
  if (fatal && tl_run) tl_run->aborted = true;
}

// ---- shared memory --------------------------------------------------------------------------------

constexpr size_t kArenaBytes = size_t(256) << 10;
constexpr size_t kStaticSharedLimit = size_t(48) << 10;  // without the opt-in attribute
constexpr size_t kSharedGuard = 64;

struct SiteAlloc {
  const SharedSite* site;
  size_t off, bytes;
};

struct Arena {
  char* mem = nullptr;
  Shadow* shadow = nullptr;
  size_t used = 0, highwater = 0, static_bytes = 0, dyn_off = 0, dyn_bytes = 0;
  std::vector<SiteAlloc> sites;
};
EMU_TLS thread_local Arena* tl_arena = nullptr;

Arena& arena() {
  if (!tl_arena) {
    auto* a = new Arena();  // one per OS thread, kept for the thread's life
    a->mem = static_cast<char*>(std::aligned_alloc(4096, kArenaBytes));
    a->shadow = static_cast<Shadow*>(std::calloc(kArenaBytes, sizeof(Shadow)));
    tl_arena = a;
  }
  return *tl_arena;
}

void arena_mark(Arena& a, size_t off, size_t n, uint8_t st, uint32_t stamp) {
  for (size_t i = 0; i < n; ++i) {
    Shadow& s = a.shadow[off + i];
    s = Shadow{};
    s.state = st;
    s.stamp = stamp;
    s.w_tid = s.r_tid = kNoThread;
  }
}

void arena_start_block(Arena& a, size_t dyn_bytes, uint32_t serial) {
  std::memset(a.shadow, 0, a.highwater * sizeof(Shadow));
#if EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(a.mem, kArenaBytes);
  ASAN_POISON_MEMORY_REGION(a.mem, kArenaBytes);
#endif
  a.sites.clear();
  a.static_bytes = 0;
  a.dyn_off = kSharedGuard;
  a.dyn_bytes = dyn_bytes;
  a.used = a.dyn_off + dyn_bytes;
  a.highwater = std::max(a.highwater, a.used);
  if (dyn_bytes) {
#if EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(a.mem + a.dyn_off, dyn_bytes);  // before the fill below writes it
#endif
    std::memset(a.mem + a.dyn_off, 0xff, dyn_bytes);
    arena_mark(a, a.dyn_off, dyn_bytes, kUninit, serial);
  }
}

std::string describe_shared_address(const Arena& a, size_t off) {
  const SiteAlloc* best = nullptr;
  for (const auto& s : a.sites)
    if (off >= s.off - kSharedGuard && off < s.off + s.bytes + kSharedGuard) best = &s;
  if (!best) {
    if (a.dyn_bytes && off >= a.dyn_off - kSharedGuard && off < a.dyn_off + a.dyn_bytes + kSharedGuard)
      return format("byte %td of the %zu bytes of dynamic shared memory", ptrdiff_t(off) - ptrdiff_t(a.dyn_off), a.dyn_bytes);
    return format("shared memory offset %zu, outside every __shared__ array", off);
  }
  const ptrdiff_t rel = ptrdiff_t(off) - ptrdiff_t(best->off);
  const std::string name = format("__shared__ %s (%s:%d, %zu bytes)", best->site->name, best->site->file,
                                  best->site->line, best->bytes);
  if (rel < 0) return format("%td byte(s) before %s", -rel, name.c_str());
  if (size_t(rel) >= best->bytes) return format("byte %td of %s, past its end", rel, name.c_str());
  return format("byte %td of %s", rel, name.c_str());
}

// ---- the shadow checks ----------------------------------------------------------------------------

// Is the recorded access (tid, ep, wep) ordered before the current one by a barrier?
inline bool ordered(const BlockRun& b, uint32_t tid, uint32_t ep, uint8_t wep, uint32_t me) {
  if (tid / b.n != me / b.n) return false;  // another block of the launch: nothing orders them
  if (ep != b.epoch) return true;           // a __syncthreads between
  const uint32_t w = (tid % b.n) / 32, mw = (me % b.n) / 32;
  return w == mw && wep != b.warps[w].wepoch;  // a __syncwarp between, in the same warp
}

std::string other_thread(const BlockRun& b, uint32_t tid) {
  if (tid / b.n != b.linear) {
    const uint32_t ob = tid / b.n;
    const dim3 g = b.bctx.grid;
    return format("%s of block (%u,%u,%u)", thread_text(b, tid % b.n).c_str(), ob % g.x, ob / g.x % g.y,
                  ob / (g.x * g.y));
  }
  return thread_text(b, tid % b.n);
}

inline bool same_shadow(const Shadow& a, const Shadow& b) {
  uint64_t x[3], y[3];
  std::memcpy(x, &a, sizeof x);
  std::memcpy(y, &b, sizeof y);
  return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2])) == 0;
}

// The per-byte state and race checks for one access of the current CUDA thread. `what` names
// the memory for messages ("shared" / "device").
template <class Describe>
bool check_byte(Shadow& s, size_t i, size_t n, bool write, bool atomic, const void* pc, uint32_t stamp,
                const char* what, Describe& describe, const BlockRun& b, uint32_t me, uint8_t wep) {
  if (s.state == kUnallocated || s.state == kRedzone) {
    kernel_error(format("out-of-bounds %s %s", what, write ? "write" : "read"), format("%p", pc), [&] {
      return format("%zu-byte %s at %s, by %s", n, write ? "write" : "read", describe(i).c_str(),
                    symbolize(pc).c_str());
    }, false);
    return false;
  }
  if ((!write || atomic) && s.state == kUninit) {
    kernel_error(format("uninitialised %s read", what), format("%p", pc), [&] {
      return format("%zu-byte read of %s, never written, by %s", n, describe(i).c_str(), symbolize(pc).c_str());
    }, false);
    s.state = kInit;  // once per byte
  }
  if (s.stamp != stamp) {
    s.stamp = stamp;
    s.w_tid = s.r_tid = kNoThread;
    s.flags = 0;
  }
  const bool race_w = s.w_tid != kNoThread && s.w_tid != me && !ordered(b, s.w_tid, s.w_ep, s.w_wep, me) &&
                      !(atomic && (s.flags & kWroteAtomic));
  const bool race_r = write && s.r_tid != kNoThread && (s.r_tid != me || (s.flags & kManyReaders)) &&
                      !ordered(b, s.r_tid, s.r_ep, s.r_wep, me);
  if (race_w || race_r) {
    const uint32_t other = race_w ? s.w_tid : s.r_tid;
    const char* theirs = race_w ? ((s.flags & kWroteAtomic) ? "atomic write" : "write") : "read";
    kernel_error(format("race on %s memory", what), format("%p", pc), [&] {
      return format("%s of %s by %s races with a %s by %s, with no barrier between", write ? "write" : "read",
                    describe(i).c_str(), symbolize(pc).c_str(), theirs, other_thread(b, other).c_str());
    }, false);
    return false;
  }
  if (write) {
    s.state = kInit;
    s.w_tid = me;
    s.w_ep = b.epoch;
    s.w_wep = wep;
    s.flags = atomic ? kWroteAtomic : 0;
    s.r_tid = kNoThread;
  } else if (s.r_tid == kNoThread || ordered(b, s.r_tid, s.r_ep, s.r_wep, me)) {
    s.r_tid = me;
    s.r_ep = b.epoch;
    s.r_wep = wep;
    s.flags &= uint8_t(~kManyReaders);
  } else if (s.r_tid != me) {
    s.flags |= kManyReaders;
  }
  return true;
}

// The per-byte state and race checks for one access of the current CUDA thread. `what` names
// the memory for messages ("shared" / "device"). The bytes of one access almost always share
// their history, so the first is checked in full and each later byte that had the same shadow
// takes the first one's new shadow.
template <class Describe>
void check_bytes(Shadow* sh, size_t n, bool write, bool atomic, const void* pc, uint32_t stamp,
                 const char* what, Describe&& describe) {
  const BlockRun& b = *tl_run;
  const uint32_t me = b.linear * b.n + tl_fiber->linear;
  const uint8_t wep = b.warps[tl_fiber->linear / 32].wepoch;
  const Shadow before = sh[0];
  if (!check_byte(sh[0], 0, n, write, atomic, pc, stamp, what, describe, b, me, wep)) return;
  for (size_t i = 1; i < n; ++i) {
    if (same_shadow(sh[i], before)) {
      sh[i] = sh[0];
    } else if (!check_byte(sh[i], i, n, write, atomic, pc, stamp, what, describe, b, me, wep)) {
      return;
    }
  }
}

void host_deref(uintptr_t a, size_t n, bool write, const void* pc) {
  raise_error("host access to device memory", format("%p", pc), [&] {
    return format("host code %s %zu byte(s) at %s, by %s (on a GPU this address is not host memory)",
                  write ? "writes" : "reads", n, describe_device_address(a).c_str(), symbolize(pc).c_str());
  });
}

inline void on_access(const void* p, size_t n, bool write, bool atomic, const void* pc) {
  const uintptr_t a = uintptr_t(p);
  if (!g_heap || !g_checks) return;  // no device memory yet: nothing to check
  Heap& h = *g_heap;
  if (!tl_thread) {
    if (h.contains(a)) host_deref(a, n, write, pc);
    return;
  }
  Arena& ar = *tl_arena;
  if (a - uintptr_t(ar.mem) < kArenaBytes) {
    const size_t off = a - uintptr_t(ar.mem);
    check_bytes(ar.shadow + off, std::min(n, kArenaBytes - off), write, atomic, pc, tl_run->serial, "shared",
                [&](size_t i) { return describe_shared_address(ar, off + i); });
  } else if (h.contains(a)) {
    check_bytes(h.shadow(a), n, write, atomic, pc, tl_run->launch, "device",
                [&](size_t i) { return describe_device_address(a + i); });
  }
}

// ---- barriers and warp collectives ------------------------------------------------------------------

bool same_place(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

void complete_barrier(BlockRun& b) {
  Pool& p = tl_pool;
  std::vector<uint32_t> waiting;
  const std::source_location* first = nullptr;
  bool diverged = false;
  for (uint32_t t = 0; t < b.n; ++t) {
    Fiber& f = p.fibers[t];
    if (f.state != FState::WaitBarrier) continue;
    waiting.push_back(t);
    if (!first) first = &f.where;
    else diverged = diverged || !same_place(*first, f.where);
  }
  std::map<std::string, std::vector<uint32_t>> sites;
  if (diverged || b.done > 0)
    for (uint32_t t : waiting) sites[where_text(p.fibers[t].where)].push_back(t);
  if (diverged) {
    std::string s;
    for (const auto& e : sites) s += format("; threads %s at %s", ranges(e.second).c_str(), e.first.c_str());
    kernel_error("divergent __syncthreads", "div|" + sites.begin()->first,
                 "the threads of a block wait at different __syncthreads" + s, false);
  }
  if (b.done > 0) {
    std::vector<uint32_t> exited;
    for (uint32_t t = 0; t < b.n; ++t)
      if (p.fibers[t].state == FState::Done) exited.push_back(t);
    kernel_error("__syncthreads not reached by every thread", "exit|" + (sites.empty() ? "" : sites.begin()->first),
                 format("threads %s wait at %s, but threads %s exited without reaching it", ranges(waiting).c_str(),
                        sites.empty() ? "?" : sites.begin()->first.c_str(), ranges(exited).c_str()),
                 false);
  }
  int result = 0;
  if (b.bkind == BarrierKind::Count || b.bkind == BarrierKind::And || b.bkind == BarrierKind::Or) result = b.bacc;
  ++b.epoch;
  b.arrived = 0;
  for (uint32_t t : waiting) {
    Fiber& f = p.fibers[t];
    f.barrier_result = result;
    f.state = &f == tl_fiber ? FState::Running : FState::Ready;
  }
}

Warp& my_warp(BlockRun& b, uint32_t t) { return b.warps[t / 32]; }

uint64_t compute_lane(const Group& g, WarpOp op, unsigned lane, unsigned ballot, bool* bad_src, unsigned* src_out) {
  const int width = g.width[lane];
  const unsigned seg = lane & ~unsigned(width - 1);
  unsigned src = lane;
  switch (op) {
    case WarpOp::Shfl: src = seg + (unsigned(g.arg[lane]) & unsigned(width - 1)); break;
    case WarpOp::ShflUp: src = (lane - seg) >= unsigned(g.arg[lane]) ? lane - unsigned(g.arg[lane]) : lane; break;
    case WarpOp::ShflDown: src = (lane - seg) + unsigned(g.arg[lane]) < unsigned(width) ? lane + unsigned(g.arg[lane]) : lane; break;
    case WarpOp::ShflXor: {
      const unsigned s = lane ^ unsigned(g.arg[lane]);
      src = (s & ~unsigned(width - 1)) == seg && s < 32 ? s : lane;
      break;
    }
    case WarpOp::Ballot: return ballot;
    case WarpOp::Any: return ballot != 0;
    case WarpOp::All: return ballot == g.mask;
    case WarpOp::SyncWarp: return 0;
  }
  *src_out = src;
  *bad_src = !(g.mask & (1u << src));
  return g.val[src];
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Shfl: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::SyncWarp: return "__syncwarp";
  }
  return "?";
}

void complete_group(BlockRun& b, Warp& w, size_t gi, uint32_t warp_index) {
  Group g = w.groups[gi];
  w.groups.erase(w.groups.begin() + ptrdiff_t(gi));
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((g.mask >> l & 1) && g.val[l]) ballot |= 1u << l;
  Pool& p = tl_pool;
  for (unsigned l = 0; l < 32; ++l) {
    if (!(g.mask >> l & 1)) continue;
    bool bad = false;
    unsigned src = l;
    const uint64_t r = compute_lane(g, g.op, l, ballot, &bad, &src);
    if (bad) {
      kernel_error("shuffle from a lane outside the mask", format("%s|%s", op_name(g.op), where_text(g.where).c_str()),
                   format("%s at %s: lane %u reads lane %u, which is not in the mask %#x (undefined on a GPU)",
                          op_name(g.op), where_text(g.where).c_str(), l, src, g.mask),
                   false);
    }
    Fiber& f = p.fibers[warp_index * 32 + l];
    f.warp_result = r;
    if (&f != tl_fiber) f.state = FState::Ready;
  }
  if (g.op == WarpOp::SyncWarp) ++w.wepoch;
}

// ---- the block scheduler ----------------------------------------------------------------------------

void fiber_finished(Fiber& f) {
  BlockRun& b = *tl_run;
  f.state = FState::Done;
  ++b.done;
  Warp& w = my_warp(b, f.linear);
  const unsigned bit = 1u << (f.linear % 32);
  w.exited |= bit;
  for (const Group& g : w.groups)
    if (g.mask & bit) {
      kernel_error("lane exited during a warp collective", "exit|" + where_text(g.where),
                   format("lane %u exited, but lanes of mask %#x wait for it in %s at %s", f.linear % 32, g.mask,
                          op_name(g.op), where_text(g.where).c_str()),
                   true);
      return;
    }
  if (b.arrived > 0 && b.arrived + b.done == b.n) complete_barrier(b);
}

void deadlock(BlockRun& b) {
  Pool& p = tl_pool;
  std::map<std::string, std::vector<uint32_t>> waits;
  for (uint32_t t = 0; t < b.n; ++t) {
    const Fiber& f = p.fibers[t];
    if (f.state == FState::WaitBarrier) waits["__syncthreads at " + where_text(f.where)].push_back(t);
    if (f.state == FState::WaitWarp) waits["a warp collective at " + where_text(f.where)].push_back(t);
  }
  std::string s;
  for (const auto& e : waits) s += format("; threads %s wait in %s", ranges(e.second).c_str(), e.first.c_str());
  kernel_error("deadlock", "deadlock|" + (waits.empty() ? std::string() : waits.begin()->first),
               "no thread of the block can make progress" + s, true);
}

uint32_t g_block_serial = 0;

void run_block(BlockRun& b) {
  Pool& p = tl_pool;
  ensure_pool(b.n);
  for (uint32_t t = 0; t < b.n; ++t) {
    Fiber& f = p.fibers[t];
    const dim3 d = b.bctx.dim;
    f.ctx.idx = uint3{t % d.x, t / d.x % d.y, t / (d.x * d.y)};
    f.linear = t;
    f.where = std::source_location();
    start_fiber(f);
  }
  const uint32_t nwarps = (b.n + 31) / 32;
  b.warps.assign(nwarps, Warp{});
  for (uint32_t w = 0; w < nwarps; ++w) {
    const uint32_t lanes = std::min<uint32_t>(32, b.n - w * 32);
    b.warps[w].exists = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
  }
  std::vector<uint32_t> order(b.n);
  for (uint32_t t = 0; t < b.n; ++t) order[t] = config().schedule == Schedule::Reverse ? b.n - 1 - t : t;
  std::mt19937_64 rng(config().seed ^ (uint64_t(b.launch) << 32) ^ b.linear);
  while (!b.aborted && b.done < b.n) {
    if (config().schedule == Schedule::Random) std::shuffle(order.begin(), order.end(), rng);
    bool ran = false;
    for (uint32_t t : order) {
      Fiber& f = p.fibers[t];
      if (f.state != FState::Ready) continue;
      resume(f);
      ran = true;
      if (b.aborted) break;
    }
    if (!ran && !b.aborted) {
      deadlock(b);
      break;
    }
  }
}

std::mutex g_launch_mu;
uint32_t g_launch_id = 0;

}  // namespace

// ---- the public entry points (emu.h) ------------------------------------------------------------

void launch_raw(const LaunchSite& site, void (*body)(void*), void* ctx, dim3 grid, dim3 block,
                size_t shared_bytes, cudaStream_t) {
  register_exit_report();
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  std::string bad;
  if (threads == 0 || blocks == 0) bad = "a zero grid or block dimension";
  else if (threads > kMaxThreads || block.z > 64) bad = format("%" PRIu64 " threads per block (at most 1024, z ≤ 64)", threads);
  else if (grid.y > 65535 || grid.z > 65535) bad = format("grid (%u,%u,%u): y and z must be ≤ 65535", grid.x, grid.y, grid.z);
  else if (shared_bytes > kArenaBytes - 2 * kSharedGuard - kStaticSharedLimit) bad = format("%zu bytes of dynamic shared memory", shared_bytes);
  if (!bad.empty()) {
    raise_error("invalid launch configuration", format("%s:%d", site.file, site.line),
                format("kernel %s launched at %s:%d with %s", site.kernel, site.file, site.line, bad.c_str()));
    set_last_error(cudaErrorInvalidConfiguration);
    return;
  }
  if (site.bound > 0 && threads > uint64_t(site.bound)) {
    raise_error("launch exceeds __launch_bounds__", format("%s:%d", site.file, site.line),
                format("kernel %s launched at %s:%d with %" PRIu64 " threads per block; it was compiled for at most %d",
                       site.kernel, site.file, site.line, threads, site.bound));
    set_last_error(cudaErrorLaunchOutOfResources);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(g_cov_mu);
    g_executed.insert(site.kernel);
    ++g_launches;
  }
  std::lock_guard<std::mutex> lock(g_launch_mu);
  const long errors_before = error_count();
  const uint32_t launch = ++g_launch_id;
  Arena& ar = arena();
  std::vector<uint32_t> order(static_cast<size_t>(blocks));
  for (uint32_t i = 0; i < blocks; ++i) order[i] = config().schedule == Schedule::Reverse ? uint32_t(blocks) - 1 - i : i;
  if (config().schedule == Schedule::Random) {
    std::mt19937_64 rng(config().seed + launch);
    std::shuffle(order.begin(), order.end(), rng);
  }
  bool aborted = false;
  for (uint32_t lin : order) {
    BlockRun b;
    b.site = &site;
    b.body = body;
    b.ctx = ctx;
    b.bctx.idx = uint3{lin % grid.x, lin / grid.x % grid.y, lin / (grid.x * grid.y)};
    b.bctx.dim = block;
    b.bctx.grid = grid;
    b.n = uint32_t(threads);
    b.linear = lin;
    b.launch = launch;
    b.serial = ++g_block_serial;
    arena_start_block(ar, shared_bytes, b.serial);
    tl_run = &b;
    tl_block = &b.bctx;
    run_block(b);
    tl_run = nullptr;
    tl_block = nullptr;
    if (b.aborted) {
      aborted = true;
      break;
    }
  }
  if (aborted || error_count() > errors_before)
    set_last_error(cudaErrorLaunchFailure);
}

void* shared_alloc(const SharedSite& site, size_t bytes, size_t align) {
  Arena& a = arena();
  for (const SiteAlloc& s : a.sites)
    if (s.site == &site) return a.mem + s.off;
  if (!tl_run) {
    raise_error("__shared__ outside a kernel", site.name, format("__shared__ %s (%s:%d) declared outside a kernel",
                                                                 site.name, site.file, site.line));
    std::abort();
  }
  align = std::max<size_t>(align, 16);
  const size_t off = (a.used + kSharedGuard + align - 1) / align * align;
  if (a.static_bytes + bytes > kStaticSharedLimit || off + bytes + kSharedGuard > kArenaBytes) {
    kernel_error("too much shared memory", site.name,
                 format("__shared__ %s (%s:%d) brings the block's static shared memory to %zu bytes (the limit is %zu)",
                        site.name, site.file, site.line, a.static_bytes + bytes, kStaticSharedLimit),
                 true);
    static char sink[kArenaBytes];
    return sink;
  }
  a.sites.push_back(SiteAlloc{&site, off, bytes});
  a.used = off + bytes;
  a.static_bytes += bytes;
  a.highwater = std::max(a.highwater, a.used + kSharedGuard);
#if EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(a.mem + off, bytes);  // before the fill below writes it
#endif
  std::memset(a.mem + off, 0xff, bytes);  // NaN / −1: a read before any write shows up in the results too
  arena_mark(a, off, bytes, kUninit, tl_run->serial);
  return a.mem + off;
}

void* dynamic_shared(size_t align) {
  Arena& a = arena();
  if (a.dyn_off % align) {
    kernel_error("misaligned dynamic shared memory", "dyn", "extern __shared__ array needs a larger alignment", true);
  }
  return a.mem + a.dyn_off;
}

int barrier(BarrierKind kind, int predicate, const std::source_location& where) {
  Fiber* f = tl_fiber;
  BlockRun* b = tl_run;
  if (!f || !b) {
    raise_error("__syncthreads outside a kernel", where_text(where), "__syncthreads called at " + where_text(where));
    return 0;
  }
  f->where = where;
  if (b->arrived == 0) {
    b->bkind = kind;
    b->bacc = kind == BarrierKind::And ? 1 : 0;
  }
  if (kind == BarrierKind::Count) b->bacc += predicate != 0;
  if (kind == BarrierKind::And) b->bacc = b->bacc && predicate != 0;
  if (kind == BarrierKind::Or) b->bacc = b->bacc || predicate != 0;
  ++b->arrived;
  f->state = FState::WaitBarrier;
  if (b->arrived + b->done == b->n) complete_barrier(*b);
  else yield_fiber();
  return f->barrier_result;
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const std::source_location& where) {
  Fiber* f = tl_fiber;
  BlockRun* b = tl_run;
  if (!f || !b) {
    raise_error("warp intrinsic outside a kernel", where_text(where), std::string(op_name(op)) + " called at " + where_text(where));
    return value;
  }
  const uint32_t wi = f->linear / 32;
  const unsigned lane = f->linear % 32, bit = 1u << lane;
  Warp& w = b->warps[wi];
  const bool bad_width = width < 1 || width > 32 || (width & (width - 1));
  if (!(mask & bit) || (mask & ~w.exists) || (mask & w.exited) || bad_width) {
    const std::string site = format("%s at %s", op_name(op), where_text(where).c_str());
    if (!(mask & bit)) {
      kernel_error("warp collective mask excludes the caller", site,
                   format("%s: lane %u calls it with mask %#x, which does not include the lane", site.c_str(), lane, mask), true);
    } else if (mask & ~w.exists) {
      kernel_error("warp collective mask names absent lanes", site,
                   format("%s: mask %#x names lanes %#x that do not exist (the block has %u threads, so warp %u has only "
                          "lanes %#x)", site.c_str(), mask, mask & ~w.exists, b->n, wi, w.exists),
                   true);
    } else if (mask & w.exited) {
      kernel_error("warp collective mask names exited lanes", site,
                   format("%s: mask %#x names lanes %#x that have already exited", site.c_str(), mask, mask & w.exited), true);
    } else {
      kernel_error("bad shuffle width", site, format("%s: width %d is not a power of two in [1, 32]", site.c_str(), width), true);
    }
  }
  if (b->aborted) {
    yield_fiber();  // never resumed: the block is abandoned
    return value;
  }
  size_t gi = w.groups.size();
  for (size_t i = 0; i < w.groups.size(); ++i)
    if (w.groups[i].mask & mask) gi = i;
  if (gi < w.groups.size()) {
    Group& g = w.groups[gi];
    if (g.mask != mask || g.op != op) {
      const std::string site = format("%s at %s", op_name(op), where_text(where).c_str());
      kernel_error("warp collective mismatch", site,
                   format("lane %u calls %s with mask %#x while lanes %#x wait in %s at %s with mask %#x", lane,
                          site.c_str(), mask, g.arrived, op_name(g.op), where_text(g.where).c_str(), g.mask),
                   true);
      yield_fiber();
      return value;
    }
  } else {
    Group g;
    g.mask = mask;
    g.op = op;
    g.where = where;
    w.groups.push_back(g);
  }
  Group& g = w.groups[gi];
  g.val[lane] = value;
  g.arg[lane] = arg;
  g.width[lane] = width;
  g.arrived |= bit;
  f->where = where;
  if (g.arrived == g.mask) {
    complete_group(*b, w, gi, wi);
    return f->warp_result;
  }
  f->state = FState::WaitWarp;
  yield_fiber();
  return f->warp_result;
}

unsigned active_mask() {
  Fiber* f = tl_fiber;
  BlockRun* b = tl_run;
  if (!f || !b) return 0;
  const Warp& w = b->warps[f->linear / 32];
  return w.exists & ~w.exited;
}

// ---- atomics ---------------------------------------------------------------------------------------

namespace {
template <class T>
T rmw(AtomicOp op, T old, T v, T cmp) {
  switch (op) {
    case AtomicOp::Add: return T(old + v);
    case AtomicOp::Sub: return T(old - v);
    case AtomicOp::Max: return old > v ? old : v;
    case AtomicOp::Min: return old < v ? old : v;
    case AtomicOp::Exch: return v;
    case AtomicOp::Cas: return old == cmp ? v : old;
    case AtomicOp::And: return T(old & v);
    case AtomicOp::Or: return T(old | v);
    case AtomicOp::Xor: return T(old ^ v);
    case AtomicOp::Inc: return old >= v ? T(0) : T(old + 1);
    case AtomicOp::Dec: return (old == 0 || old > v) ? v : T(old - 1);
  }
  return old;
}
}  // namespace

uint32_t atomic_u32(AtomicOp op, void* p, uint32_t v, uint32_t cmp, bool is_signed) {
  on_access(p, 4, true, true, __builtin_return_address(0));
  if (is_signed) {
    int32_t* q = static_cast<int32_t*>(p);
    const int32_t old = *q;
    *q = rmw<int32_t>(op, old, int32_t(v), int32_t(cmp));
    return uint32_t(old);
  }
  uint32_t* q = static_cast<uint32_t*>(p);
  const uint32_t old = *q;
  *q = rmw<uint32_t>(op, old, v, cmp);
  return old;
}

uint64_t atomic_u64(AtomicOp op, void* p, uint64_t v, uint64_t cmp, bool is_signed) {
  on_access(p, 8, true, true, __builtin_return_address(0));
  if (is_signed) {
    int64_t* q = static_cast<int64_t*>(p);
    const int64_t old = *q;
    *q = rmw<int64_t>(op, old, int64_t(v), int64_t(cmp));
    return uint64_t(old);
  }
  uint64_t* q = static_cast<uint64_t*>(p);
  const uint64_t old = *q;
  *q = rmw<uint64_t>(op, old, v, cmp);
  return old;
}

float atomic_f32(AtomicOp op, float* p, float v) {
  on_access(p, 4, true, true, __builtin_return_address(0));
  const float old = *p;
  *p = op == AtomicOp::Add ? old + v : op == AtomicOp::Exch ? v : op == AtomicOp::Max ? std::fmax(old, v)
       : op == AtomicOp::Min ? std::fmin(old, v) : old;
  return old;
}

double atomic_f64(AtomicOp op, double* p, double v) {
  on_access(p, 8, true, true, __builtin_return_address(0));
  const double old = *p;
  *p = op == AtomicOp::Add ? old + v : op == AtomicOp::Exch ? v : op == AtomicOp::Max ? std::fmax(old, v)
       : op == AtomicOp::Min ? std::fmin(old, v) : old;
  return old;
}

// ---- emu_internal.h ---------------------------------------------------------------------------------

void* device_malloc(size_t bytes) {
  register_exit_report();
  return heap().alloc(bytes);
}
bool device_free(void* p) { return heap().release(p); }
size_t device_total_bytes() { return heap().size(); }
size_t device_free_bytes() { return heap().size() - heap().used(); }
bool is_device_pointer(const void* p) { return heap().contains(uintptr_t(p)); }

bool device_range_ok(const void* p, size_t n, std::string* why) {
  char* start = nullptr;
  const Allocation* al = heap().find(uintptr_t(p), &start);
  if (!al || static_cast<const char*>(p) < start) {
    *why = describe_device_address(uintptr_t(p));
    return false;
  }
  const size_t off = size_t(static_cast<const char*>(p) - start);
  if (off + n > al->user) {
    *why = format("bytes [%zu, %zu) of a %zu-byte allocation", off, off + n, al->user);
    return false;
  }
  return true;
}

void device_mark_initialised(void* p, size_t n) { heap().set_state(p, n, kInit); }

void device_copy_state(void* dst, const void* src, size_t n) {
  Heap& h = heap();
  const Shadow* s = h.shadow(uintptr_t(src));
  Shadow* d = h.shadow(uintptr_t(dst));
  for (size_t i = 0; i < n; ++i) {
    d[i].state = s[i].state == kUninit ? kUninit : kInit;
    d[i].stamp = 0;
  }
}

long device_first_uninitialised(const void* p, size_t n) {
  if (!g_checks) return -1;
  const Shadow* s = heap().shadow(uintptr_t(p));
  for (size_t i = 0; i < n; ++i)
    if (s[i].state == kUninit) return long(i);
  return -1;
}

void report_host_error(const char* kind, const std::string& message) { raise_error(kind, message, message); }

namespace {
thread_local cudaError_t tl_last_error = cudaSuccess;
}
cudaError_t take_last_error() {
  const cudaError_t e = tl_last_error;
  tl_last_error = cudaSuccess;
  return e;
}
cudaError_t peek_last_error() { return tl_last_error; }
void set_last_error(cudaError_t e) {
  if (tl_last_error == cudaSuccess) tl_last_error = e;
}

void set_on_error(OnError mode) { config().on_error = mode; }
long error_count() {
  std::lock_guard<std::mutex> lock(g_err_mu);
  return g_errors;
}
std::vector<std::string> take_errors() {
  std::lock_guard<std::mutex> lock(g_err_mu);
  std::vector<std::string> out;
  out.swap(g_recorded);
  g_errors = 0;
  g_seen.clear();
  return out;
}

}  // namespace emu

// ---- the -fsanitize=thread instrumentation hooks -------------------------------------------------------
// GCC calls these before every load and store of the emulated sources; no TSan runtime is linked.

#define EMU_HOOK_RW(N)                                                                            \
  extern "C" void __tsan_read##N(void* p) { emu::on_access(p, N, false, false, __builtin_return_address(0)); } \
  extern "C" void __tsan_write##N(void* p) { emu::on_access(p, N, true, false, __builtin_return_address(0)); } \
  extern "C" void __tsan_unaligned_read##N(void* p) { emu::on_access(p, N, false, false, __builtin_return_address(0)); } \
  extern "C" void __tsan_unaligned_write##N(void* p) { emu::on_access(p, N, true, false, __builtin_return_address(0)); } \
  extern "C" void __tsan_volatile_read##N(void* p) { emu::on_access(p, N, false, false, __builtin_return_address(0)); } \
  extern "C" void __tsan_volatile_write##N(void* p) { emu::on_access(p, N, true, false, __builtin_return_address(0)); }
EMU_HOOK_RW(1)
EMU_HOOK_RW(2)
EMU_HOOK_RW(4)
EMU_HOOK_RW(8)
EMU_HOOK_RW(16)
extern "C" void __tsan_read_range(void* p, unsigned long n) { emu::on_access(p, n, false, false, __builtin_return_address(0)); }
extern "C" void __tsan_write_range(void* p, unsigned long n) { emu::on_access(p, n, true, false, __builtin_return_address(0)); }
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}

// Atomics in instrumented host code (static-local guards, std::atomic): performed for real, not
// checked (kernel atomics go through emu::atomic_* instead).
#define EMU_HOOK_ATOMIC(N, T)                                                                          \
  extern "C" T __tsan_atomic##N##_load(const volatile T* a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); } \
  extern "C" void __tsan_atomic##N##_store(volatile T* a, T v, int) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##N##_exchange(volatile T* a, T v, int) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##N##_fetch_add(volatile T* a, T v, int) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##N##_fetch_sub(volatile T* a, T v, int) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##N##_fetch_and(volatile T* a, T v, int) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##N##_fetch_or(volatile T* a, T v, int) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##N##_fetch_xor(volatile T* a, T v, int) { return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##N##_fetch_nand(volatile T* a, T v, int) { return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" int __tsan_atomic##N##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {      \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);              \
  }                                                                                                     \
  extern "C" int __tsan_atomic##N##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {        \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);               \
  }                                                                                                     \
  extern "C" T __tsan_atomic##N##_compare_exchange_val(volatile T* a, T c, T v, int, int) {            \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                    \
    return c;                                                                                           \
  }
EMU_HOOK_ATOMIC(8, char)
EMU_HOOK_ATOMIC(16, short)
EMU_HOOK_ATOMIC(32, int)
EMU_HOOK_ATOMIC(64, long)
extern "C" void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
extern "C" void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
