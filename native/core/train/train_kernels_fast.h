// The fast float kernels for pretraining, behind the same interface as
// ReferenceTrainKernels<float> (train_kernels_reference.h). The large products
// run on the per-ISA GEMM of kernels_table.h:
//  - forward and input-backward convolutions as GEMMs (im2col for the head's
//    3×3 stride-2 convolutions, like the stem);
//  - every weight gradient dW = dout·Xᵀ as a product reducing over pixels:
//    pixels are cut into fixed chunks of 512, dealt round-robin to a number
//    of accumulators fixed by the image size (each sums at most 4,096 pixels
//    in float), which are then added in double in a fixed order. The result
//    is the same bit for bit whatever the thread count and scheduling.
// Weight gradients accumulate in double (grad_type).
#pragma once
#include <cstdint>
#include <functional>

#include "head_weights.h"
#include "kernels_fast.h"

namespace mghf {

// Writes columns p0 … p0+n−1 of the [K×P] operand X of a weight gradient into
// dst ([K×n], row stride n). Called concurrently from several threads.
using ColumnSource = std::function<void(int64_t p0, int n, float* dst)>;

// dW[M×K] += Σ_p dout[m,p]·X[k,p] and db[M] += Σ_p dout[m,p] (db may be
// null). dout has row stride P; X is read in place (x, row stride P) or, when
// x is null, produced chunk by chunk by cols (im2col of a 3×3 convolution).
void weight_grad(int M, int K, int64_t P, const float* dout, const float* x,
                 const ColumnSource* cols, double* dW, double* db);

void fast_conv1x1_weight_grad(int M, int K, int64_t P, const float* dout, const float* in,
                              double* dW, double* db);
void fast_stem_weight_grad(int N, int H, int W, const float* xh, const float* dz, double* dW,
                           double* db);
void fast_depthwise_weight_grad(int C, int H, int W, const float* g, const float* in, double* dW);
void fast_conv3x3s2(int Co, int Ci, int H, int W, const float* w, const float* b, const float* in,
                    float* out);
void fast_conv3x3s2_backward(int Co, int Ci, int H, int W, const float* w, const float* dout,
                             float* din);
void fast_conv3x3s2_weight_grad(int Co, int Ci, int H, int W, const float* in, const float* dout,
                                double* dW, double* db);

struct FastTrainKernels : FastKernels {
  using grad_type = double;

  static void conv1x1_weight_grad(int M, int K, int64_t P, const float* dout, const float* in,
                                  double* dW, double* db) {
    fast_conv1x1_weight_grad(M, K, P, dout, in, dW, db);
  }
  static void stem_weight_grad(int N, int H, int W, const float* xh, const float* dz, double* dW,
                               double* db) {
    fast_stem_weight_grad(N, H, W, xh, dz, dW, db);
  }
  static void depthwise_weight_grad(int C, int H, int W, const float* g, const float* in,
                                    double* dW) {
    fast_depthwise_weight_grad(C, H, W, g, in, dW);
  }
  static void conv3x3s2(int Co, int Ci, int H, int W, const float* w, const float* b,
                        const float* in, float* out) {
    fast_conv3x3s2(Co, Ci, H, W, w, b, in, out);
  }
  static void conv3x3s2_backward(int Co, int Ci, int H, int W, const float* w, const float* dout,
                                 float* din) {
    fast_conv3x3s2_backward(Co, Ci, H, W, w, dout, din);
  }
  static void conv3x3s2_weight_grad(int Co, int Ci, int H, int W, const float* in,
                                    const float* dout, double* dW, double* db) {
    fast_conv3x3s2_weight_grad(Co, Ci, H, W, in, dout, dW, db);
  }
};

}  // namespace mghf
