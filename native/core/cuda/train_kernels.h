// The pretraining ops of train_kernels_reference.h (SPEC §2 weight gradients,
// SPEC §10 head) on the GPU, one launcher per reference function, plus the
// head's pooling / FC / softmax cross-entropy of head.h and classifier.h and
// adam.h's update. Whole batch per launch on `stream`; tensors are device
// pointers in the batch-planar layout [B][channels][pixels]; `*_bs` are batch
// strides in elements where a tensor is a channel slice of a larger one.
//
// Weight gradients (dW += dout·Xᵀ summed over the batch and the pixels) are
// deterministic without atomics: each image's pixels are cut into chunks of
// at most kWeightGradChunk; one block computes a tile of a chunk's partial
// sums in float, and a second kernel adds the chunks in double in a fixed
// order (image, then chunk) into the double accumulators (+=, like the
// reference: the caller zeroes them once per batch).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "device_buffer.h"

namespace mghf {
namespace cuda {

constexpr int kWeightGradChunk = 4096;  // pixels per float partial sum

// The float partial sums of the weight gradients, reused launch after launch
// on one stream (grown when too small, never shrunk). Growing hands the old
// block back to the device cache at once: size it before the first launch of
// a call (CudaTrainer does, per batch shape) so no block still read by a
// queued kernel goes back mid-call.
class WeightGradScratch {
 public:
  float* get(size_t n) {
    if (buf_.size() < n) buf_.resize(n);
    return buf_.data();
  }

 private:
  DeviceBuffer<float> buf_;
};

// dW [M×K] += Σ_b dout[b] [M×P]·in[b] [K×P]ᵀ; db [M] += Σ_b Σ_p dout[b] (db may
// be null) (ReferenceTrainKernels::conv1x1_weight_grad).
void conv1x1_weight_grad(int B, int M, int K, int64_t P, const float* dout, int64_t dout_bs,
                         const float* in, int64_t in_bs, double* dW, double* db,
                         WeightGradScratch& scratch, cudaStream_t stream);

// Stem (3×3, zero padding 1, 3 → N): dW [N×27] and db [N] given xh [B,3,P] and
// dz [B] [N×P] (batch stride dz_bs) (ReferenceTrainKernels::stem_weight_grad).
void stem_weight_grad(int B, int N, int H, int W, const float* xh, const float* dz, int64_t dz_bs,
                      double* dW, double* db, WeightGradScratch& scratch, cudaStream_t stream);

// Reflection-padded depthwise 3×3: dW [C×9] += Σ g ⊙ shifted in, with g =
// mask ⊙ g_raw when mask is not null (the CPU masks g in place first; the CUDA
// input backward leaves it unmasked) (ReferenceTrainKernels::depthwise_weight_grad).
// g, mask, in dense [B][C][P].
void depthwise_weight_grad(int B, int C, int H, int W, const float* g, const uint8_t* mask,
                           const float* in, double* dW, WeightGradScratch& scratch,
                           cudaStream_t stream);

// The head's conv3x3 stride 2 zero padding 1, Ci → Co, + bias, then ReLU when
// relu (ReferenceTrainKernels::conv3x3s2 and head.h's ReLU). in [B,Ci,H,W],
// out [B,Co,Ho,Wo].
void conv3x3s2(int B, int Co, int Ci, int H, int W, const float* w, const float* bias,
               const float* in, float* out, bool relu, cudaStream_t stream);
// din [B,Ci,H,W] = input gradient given dout [B,Co,Ho,Wo], as a gather
// (ReferenceTrainKernels::conv3x3s2_backward).
void conv3x3s2_backward(int B, int Co, int Ci, int H, int W, const float* w, const float* dout,
                        float* din, cudaStream_t stream);
// dW [Co×Ci·9] += Σ_b weight gradient, db [Co] += Σ dout
// (ReferenceTrainKernels::conv3x3s2_weight_grad).
void conv3x3s2_weight_grad(int B, int Co, int Ci, int H, int W, const float* in, const float* dout,
                           double* dW, double* db, WeightGradScratch& scratch,
                           cudaStream_t stream);

// d[i] = act[i] > 0 ? d[i] : 0 over n floats (head.h's ReLU backward).
void relu_backward(int64_t n, const float* act, float* d, cudaStream_t stream);

// pooled [B,N] = mean over P of in [B,N,P], summed in double (head.h).
void global_avg_pool(int B, int N, int64_t P, const float* in, float* pooled, cudaStream_t stream);
// logits [B,classes] = fc_w [classes,N]·pooled + fc_b (head.h).
void fc_forward(int B, int N, int classes, const float* w, const float* b, const float* pooled,
                float* logits, cudaStream_t stream);
// Per image (classifier.h, in double): loss[b] = logsumexp(z) − z[label],
// correct[b] = (first arg-max == label); with dlogits (not null),
// dlogits[b,k] = float((softmax_k − [k = label]) / B).
void softmax_cross_entropy(int B, int classes, const float* logits, const int* labels,
                           double* loss, int* correct, float* dlogits, cudaStream_t stream);
// fc_w_grad [classes,N] += Σ_b double(dlogits[b,k]·pooled[b,ch]); fc_b_grad
// [classes] += Σ_b dlogits[b,k], images in order (head.h).
void fc_weight_grad(int B, int N, int classes, const float* pooled, const float* dlogits,
                    double* dW, double* db, cudaStream_t stream);
// dout [B,N,Po] = (Σ_k fc_w[k,ch]·dlogits[b,k]) / Po (head.h: the pooled
// gradient spread evenly over the last conv's output).
void pool_fc_backward(int B, int N, int classes, int64_t Po, const float* w, const float* dlogits,
                      float* dout, cudaStream_t stream);

// adam.h's adam_update over n parameters, arithmetic in double; bc1 = 1 −
// β1^step and bc2 = 1 − β2^step computed on the host (std::pow, as adam.h).
void adam_update(int64_t n, float* p, float* m, float* v, const double* g, double lr,
                 double beta1, double beta2, double eps, double bc1, double bc2,
                 cudaStream_t stream);

// *flag = 1 when some g[i] is not finite (flag left alone otherwise).
void flag_nonfinite(int64_t n, const double* g, int* flag, cudaStream_t stream);

}  // namespace cuda
}  // namespace mghf
