// The fast float kernels, compiled once per instruction set (kernels_<isa>.cpp
// include kernels_simd.inc under a `#pragma GCC target`), picked at run time.
#pragma once
#include <cstdint>

namespace mghf {

struct FastKernelTable {
  const char* isa;
  // C[M×P] = A[M×K]·B[K×P] (+ bias[M]) (+ C when accumulate). Row strides are P.
  void (*gemm)(int M, int K, int64_t P, const float* A, const float* B, float* C,
               const float* bias, bool accumulate);
  // C = ReLU6(A·B), mask = ReLU6'(A·B).
  void (*gemm_relu6)(int M, int K, int64_t P, const float* A, const float* B, float* C,
                     uint8_t* mask);
  void (*depthwise_relu6)(int C, int H, int W, const float* w, const float* in, float* out,
                          uint8_t* mask);
  void (*depthwise_relu6_backward)(int C, int H, int W, const float* w, const uint8_t* mask_out,
                                   const uint8_t* mask_in, float* g, float* din);
  // The whole inverted-residual sub-network, fused row by row (see
  // ReferenceKernels::irb_forward for the plain composition). m1, m2 may be
  // null when no backward follows. Unlike the reference, masks are laid out
  // [H][h][W]: they pass only from irb_forward to irb_backward.
  void (*irb_forward)(int c, int h, int H, int W, const float* We, const float* Wd,
                      const float* Wp, const float* in, float* out, bool accumulate, uint8_t* m1,
                      uint8_t* m2);
  void (*irb_backward)(int c, int h, int H, int W, const float* We, const float* Wd,
                       const float* Wp, const uint8_t* m1, const uint8_t* m2, const float* dout,
                       float* din);
};

// Defined in kernels_<isa>.cpp; null where the compiler or CPU family lacks it.
const FastKernelTable* kernels_generic();
const FastKernelTable* kernels_avx2();
const FastKernelTable* kernels_avx512();

// The table for this CPU (best supported ISA, or MGHF_ISA=generic|avx2|avx512).
const FastKernelTable& fast_kernels();

}  // namespace mghf
