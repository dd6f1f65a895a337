// Baseline build of the fast kernels: 4-wide vectors (SSE2 on x86-64, NEON on arm64).
#include "kernels_prelude.h"

#define MGHF_ISA generic
#define MGHF_ISA_NAME "generic"
#define MGHF_VEC 4
#include "kernels_simd.inc"

const mghf::FastKernelTable* mghf::kernels_generic() { return &generic::table; }
