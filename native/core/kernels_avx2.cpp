// AVX2 + FMA build of the fast kernels (x86-64-v3 CPUs).
#include "kernels_prelude.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,f16c,popcnt")
#define MGHF_ISA avx2
#define MGHF_ISA_NAME "avx2"
#define MGHF_VEC 8
#include "kernels_simd.inc"
#pragma GCC pop_options
const mghf::FastKernelTable* mghf::kernels_avx2() { return &avx2::table; }
#else
const mghf::FastKernelTable* mghf::kernels_avx2() { return nullptr; }
#endif
