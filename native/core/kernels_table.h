// The fast float kernels, compiled once per instruction set (kernels_<isa>.cpp
// include kernels_simd.inc under a `#pragma GCC target`), picked at run time.
#pragma once
#include <cstdint>
#include <vector>

#include "lip_params.h"

namespace mghf {

// Pixels per float partial sum of the Gram kernels (SPEC §8: float over at most 4,096 terms, then
// double). csc.h gathers the kept maps in slices of this width so that its Gram is the kernel's,
// bit for bit, without a gathered copy of every map.
constexpr int64_t kGramSlice = 2048;

// Bytes of one fused-IRB mask (m1 or m2) of an H×W image with h hidden channels: each row's
// h·W bits packed on their own bytes (see irb_forward in kernels_simd.inc).
inline int64_t irb_mask_row_bytes(int h, int W) { return (int64_t(h) * W + 7) / 8; }
inline int64_t irb_mask_bytes(int h, int H, int W) { return int64_t(H) * irb_mask_row_bytes(h, W); }

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
  // null when no backward follows. Unlike the reference, masks are packed to
  // bits row by row (irb_mask_bytes): they pass only from irb_forward to irb_backward.
  void (*irb_forward)(int c, int h, int H, int W, const float* We, const float* Wd,
                      const float* Wp, const float* in, float* out, bool accumulate, uint8_t* m1,
                      uint8_t* m2);
  void (*irb_backward)(int c, int h, int H, int W, const float* We, const float* Wd,
                       const float* Wp, const uint8_t* m1, const uint8_t* m2, const float* dout,
                       float* din);
  // C[M×N] (+)= A[M×K]·B[K×N] on the calling thread; B and C have row
  // strides ldb, ldc (the per-(sample, channel) LIP products run in parallel
  // tasks of their own).
  void (*matmul)(int M, int K, int64_t N, const float* A, const float* B, int64_t ldb, float* C,
                 int64_t ldc, bool accumulate);
  // C[M×M] = X·Xᵀ for X [M×P]: float partial sums over chunks of at most
  // 4,096 pixels, added in double (SPEC §8).
  void (*gram)(int M, int64_t P, const float* X, double* C);
  // count[k] += #{i : min(255, floor(256·(x[i] − lo) / range)) = k}, with the
  // float32 arithmetic of SPEC §4 (range = hi − lo > 0).
  void (*histogram256)(const float* x, int64_t n, float lo, float range, int64_t* count);
  // monce.inc on a float similarity matrix.
  double (*monce)(int P, const float* sim, const MonceParams& prm, double g0, float* dsim,
                  std::vector<double>& work, std::vector<float>& kwork);
  // C[M×N] (+)= A[M×K]·B[N×K]ᵀ on the calling thread; A, B and C have row
  // strides lda, ldb, ldc. The product of a weight gradient, dW = dout·inᵀ,
  // reducing over K pixels with both operands read in place (train/).
  void (*matmul_nt)(int M, int K, int N, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float* C, int64_t ldc, bool accumulate);
  // Σ double(a[i])·double(b[i]): the LIP patch norms and their backward
  // (SPEC §6), in double lanes (a double reduction does not vectorise by
  // itself without reassociation).
  double (*dot_wide)(int64_t n, const float* a, const float* b);
  // x[i] = exp(x[i]) / log(x[i]) in place, within ~1 ulp of libm (monce.inc's
  // logits; exposed so the tests can hold each ISA to it).
  void (*exp_n)(int64_t n, double* x);
  void (*log_n)(int64_t n, double* x);
  // The DFE coupling (SPEC §2): e = exp(R), then, where tz1 / tE are not
  // null, tz1 = z1 and tE = e; z1 = z1·e + Eta. exp within ~2 ulp of expf.
  void (*coupling_forward)(int64_t n, const float* R, const float* Eta, float* z1, float* tz1,
                           float* tE);
};

// Defined in kernels_<isa>.cpp; null where the compiler or CPU family lacks it.
const FastKernelTable* kernels_generic();
const FastKernelTable* kernels_avx2();
const FastKernelTable* kernels_avx512();

// The table for this CPU (best supported ISA, or MGHF_ISA=generic|avx2|avx512).
const FastKernelTable& fast_kernels();

}  // namespace mghf
