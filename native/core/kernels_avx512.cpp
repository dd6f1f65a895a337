// AVX-512 build of the fast kernels (x86-64-v4 CPUs: Skylake-SP and later, Zen 4).
#include "kernels_prelude.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2,f16c,popcnt")
#define MGHF_ISA avx512
#define MGHF_ISA_NAME "avx512"
#define MGHF_VEC 16
#include "kernels_simd.inc"
#pragma GCC pop_options
const mghf::FastKernelTable* mghf::kernels_avx512() { return &avx512::table; }
#else
const mghf::FastKernelTable* mghf::kernels_avx512() { return nullptr; }
#endif
