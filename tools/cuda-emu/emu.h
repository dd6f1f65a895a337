// The host emulator's view of CUDA, force-included (g++ -include emu.h) into every .cu / .cuh
// file after transform.py has rewritten its launches and __shared__ declarations. It declares
// only what the kernels of this project use or are likely to use: anything else (an intrinsic
// the emulator does not model) is an undeclared identifier, so the build fails loudly instead
// of falling back to something else. The implementations are in emu_runtime.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <source_location>
#include <type_traits>

#include "emu_registry.h"

// cuda_runtime.h defines these for the host compiler; the emulator's meanings replace them.
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __shared__
#undef __constant__
#undef __managed__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
// transform.py rewrites every __shared__ declaration; one left here is a build error.
#define __shared__ EMU_SHARED_DECLARATION_NOT_TRANSFORMED
#define __constant__ EMU_CONSTANT_MEMORY_NOT_EMULATED
#define __managed__ EMU_MANAGED_MEMORY_NOT_EMULATED

namespace emu {

// The executing CUDA thread and block (null outside a kernel). Set by the scheduler before it
// resumes a thread.
struct ThreadCtx {
  uint3 idx;
};
struct BlockCtx {
  uint3 idx;
  dim3 dim, grid;
};
inline thread_local ThreadCtx* tl_thread = nullptr;
inline thread_local BlockCtx* tl_block = nullptr;

// ---- launches (transform.py emits these) -------------------------------------------------------
struct LaunchSite {
  const char* kernel;
  const char* file;
  int line;
  int bound;  // __launch_bounds__ maximum threads per block, 0 when none
};
void launch_raw(const LaunchSite& site, void (*body)(void*), void* ctx, dim3 grid, dim3 block,
                size_t shared_bytes, cudaStream_t stream);
inline dim3 to_dim3(dim3 d) { return d; }
inline dim3 to_dim3(unsigned v) { return dim3(v); }
inline dim3 to_dim3(int v) { return dim3(unsigned(v)); }
inline dim3 to_dim3(long v) { return dim3(unsigned(v)); }
inline dim3 to_dim3(long long v) { return dim3(unsigned(v)); }
inline dim3 to_dim3(unsigned long v) { return dim3(unsigned(v)); }
template <class F, class G, class B>
void launch(const LaunchSite& s, F&& body, G grid, B block, size_t shm = 0, cudaStream_t st = nullptr) {
  using Fn = std::remove_reference_t<F>;
  launch_raw(s, [](void* p) { (*static_cast<Fn*>(p))(); }, static_cast<void*>(&body), to_dim3(grid),
             to_dim3(block), shm, st);
}

// ---- shared memory (transform.py emits these) ---------------------------------------------------
struct SharedSite {
  const char* name;
  const char* file;
  int line;
};
// The block's copy of one __shared__ declaration: every thread of the block gets the same bytes.
void* shared_alloc(const SharedSite& site, size_t bytes, size_t align);
// The launch's dynamic shared memory (extern __shared__).
void* dynamic_shared(size_t align);

// ---- synchronisation and warp collectives --------------------------------------------------------
enum class BarrierKind : int { Plain, Count, And, Or };
int barrier(BarrierKind kind, int predicate, const std::source_location& where);
enum class WarpOp : int { Shfl, ShflUp, ShflDown, ShflXor, Ballot, Any, All, SyncWarp };
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width,
                 const std::source_location& where);
unsigned active_mask();

// ---- atomics (performed and checked in emu_runtime.cpp, which is not instrumented) ------------
enum class AtomicOp : int { Add, Sub, Max, Min, Exch, Cas, And, Or, Xor, Inc, Dec };
uint32_t atomic_u32(AtomicOp op, void* p, uint32_t v, uint32_t cmp, bool is_signed);
uint64_t atomic_u64(AtomicOp op, void* p, uint64_t v, uint64_t cmp, bool is_signed);
float atomic_f32(AtomicOp op, float* p, float v);
double atomic_f64(AtomicOp op, double* p, double v);

template <class T>
uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <class T>
T atomic(AtomicOp op, T* p, T v, T cmp = T()) {
  if constexpr (std::is_same_v<T, float>) {
    return atomic_f32(op, p, v);
  } else if constexpr (std::is_same_v<T, double>) {
    return atomic_f64(op, p, v);
  } else {
    static_assert(std::is_integral_v<T> && (sizeof(T) == 4 || sizeof(T) == 8), "atomic of an unsupported type");
    if constexpr (sizeof(T) == 4)
      return T(atomic_u32(op, p, uint32_t(v), uint32_t(cmp), std::is_signed_v<T>));
    else
      return T(atomic_u64(op, p, uint64_t(v), uint64_t(cmp), std::is_signed_v<T>));
  }
}

}  // namespace emu

#define threadIdx (::emu::tl_thread->idx)
#define blockIdx (::emu::tl_block->idx)
#define blockDim (::emu::tl_block->dim)
#define gridDim (::emu::tl_block->grid)
constexpr int warpSize = 32;

inline void __syncthreads(std::source_location w = std::source_location::current()) {
  ::emu::barrier(::emu::BarrierKind::Plain, 0, w);
}
inline int __syncthreads_count(int p, std::source_location w = std::source_location::current()) {
  return ::emu::barrier(::emu::BarrierKind::Count, p, w);
}
inline int __syncthreads_and(int p, std::source_location w = std::source_location::current()) {
  return ::emu::barrier(::emu::BarrierKind::And, p, w);
}
inline int __syncthreads_or(int p, std::source_location w = std::source_location::current()) {
  return ::emu::barrier(::emu::BarrierKind::Or, p, w);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location w = std::source_location::current()) {
  ::emu::warp_op(::emu::WarpOp::SyncWarp, mask, 0, 0, 32, w);
}
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32, std::source_location w = std::source_location::current()) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::WarpOp::Shfl, mask, ::emu::to_bits(v), src, width, w));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32,
                 std::source_location w = std::source_location::current()) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::WarpOp::ShflUp, mask, ::emu::to_bits(v), int(delta), width, w));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                   std::source_location w = std::source_location::current()) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::WarpOp::ShflDown, mask, ::emu::to_bits(v), int(delta), width, w));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                  std::source_location w = std::source_location::current()) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::WarpOp::ShflXor, mask, ::emu::to_bits(v), lane_mask, width, w));
}
inline unsigned __ballot_sync(unsigned mask, int p, std::source_location w = std::source_location::current()) {
  return unsigned(::emu::warp_op(::emu::WarpOp::Ballot, mask, p != 0, 0, 32, w));
}
inline int __any_sync(unsigned mask, int p, std::source_location w = std::source_location::current()) {
  return int(::emu::warp_op(::emu::WarpOp::Any, mask, p != 0, 0, 32, w));
}
inline int __all_sync(unsigned mask, int p, std::source_location w = std::source_location::current()) {
  return int(::emu::warp_op(::emu::WarpOp::All, mask, p != 0, 0, 32, w));
}
inline unsigned __activemask() { return ::emu::active_mask(); }

template <class T> T atomicAdd(T* p, T v) { return ::emu::atomic(::emu::AtomicOp::Add, p, v); }
template <class T> T atomicSub(T* p, T v) { return ::emu::atomic(::emu::AtomicOp::Sub, p, v); }
template <class T> T atomicMax(T* p, T v) { return ::emu::atomic(::emu::AtomicOp::Max, p, v); }
template <class T> T atomicMin(T* p, T v) { return ::emu::atomic(::emu::AtomicOp::Min, p, v); }
template <class T> T atomicExch(T* p, T v) { return ::emu::atomic(::emu::AtomicOp::Exch, p, v); }
template <class T> T atomicAnd(T* p, T v) { return ::emu::atomic(::emu::AtomicOp::And, p, v); }
template <class T> T atomicOr(T* p, T v) { return ::emu::atomic(::emu::AtomicOp::Or, p, v); }
template <class T> T atomicXor(T* p, T v) { return ::emu::atomic(::emu::AtomicOp::Xor, p, v); }
template <class T> T atomicCAS(T* p, T cmp, T v) { return ::emu::atomic(::emu::AtomicOp::Cas, p, v, cmp); }
inline unsigned atomicInc(unsigned* p, unsigned v) { return ::emu::atomic(::emu::AtomicOp::Inc, p, v); }
inline unsigned atomicDec(unsigned* p, unsigned v) { return ::emu::atomic(::emu::AtomicOp::Dec, p, v); }

// Integer intrinsics.
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }

// Arithmetic in a given rounding mode: the host's IEEE operations round to nearest, which is
// what the _rn intrinsics pin (the emulator does not model the other modes, nor fast-math ones).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline double rsqrt(double a) { return 1.0 / std::sqrt(a); }
inline int __float2int_rn(float a) { return int(std::nearbyint(a)); }
inline int __float2int_rz(float a) { return int(a); }
inline float __int2float_rn(int a) { return float(a); }

// CUDA's min/max overloads for the types the kernels mix.
using std::isfinite;
using std::isinf;
using std::isnan;
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// Function attributes for the probe the backend makes (cuda_status).
template <class T>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, T* f) {
  return cudaFuncGetAttributes(a, reinterpret_cast<const void*>(f));
}
