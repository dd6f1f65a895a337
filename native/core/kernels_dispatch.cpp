#include <cstdlib>
#include <cstring>

#include "error.h"
#include "kernels_table.h"

namespace mghf {
namespace {

bool cpu_has(const char* isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("bmi2");
  if (std::strcmp(isa, "avx2") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c");
#endif
  return std::strcmp(isa, "generic") == 0;
}

const FastKernelTable* pick() {
  const FastKernelTable* by_name[] = {kernels_avx512(), kernels_avx2(), kernels_generic()};
  const char* want = std::getenv("MGHF_ISA");
  for (const FastKernelTable* t : by_name) {
    if (!t || !cpu_has(t->isa)) continue;
    if (want && *want && std::strcmp(want, t->isa) != 0) continue;
    return t;
  }
  // An explicit MGHF_ISA the CPU cannot run falls back to the best it can.
  for (const FastKernelTable* t : by_name)
    if (t && cpu_has(t->isa)) return t;
  return kernels_generic();
}

}  // namespace

const FastKernelTable& fast_kernels() {
  static const FastKernelTable* table = pick();
  return *table;
}

}  // namespace mghf
