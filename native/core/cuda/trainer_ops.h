// The trainer ops of issue 16 on the GPU: one launcher per CPU kernel of
// native/core/nn/ (conv2d.h, trainer_kernels.h, resize.h) and the Adam step
// of train/adam.h, each mirroring the CPU meaning in the simplest correct
// form (one thread per output element, gathers instead of atomics, so every
// result is deterministic). Device pointers, whole batch per launch on
// `stream`. cuda/trainer_ops_cuda.cu registers them as the trainer ops' CUDA
// functions (reached from JavaScript through lib/trainer-ops.ts on device
// tensors); native/core/tests/test_cuda_trainer_ops.cpp holds them to the CPU kernels.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "../nn/conv2d.h"
#include "../nn/resize.h"
#include "device_buffer.h"

namespace mghf {
namespace cuda {

// y = conv2d(x, w) + b (b may be null): nn::conv2d_reference's meaning.
void conv2d_forward(const nn::Conv2dShape& s, const float* x, const float* w, const float* b,
                    float* y, cudaStream_t stream);
// dx, dw, db (each may be null; each overwritten): nn::conv2d_backward_reference's.
void conv2d_backward(const nn::Conv2dShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, cudaStream_t stream);

// nn::pixel_shuffle_copy: src is [B, C·r², H, W] (unshuffle: [B, C, H·r, W·r]).
void pixel_shuffle(int B, int C, int H, int W, int r, const float* src, float* dst, bool unshuffle,
                   cudaStream_t stream);

// nn::leaky_relu / leaky_relu_backward (slope 0: ReLU), nn::add_scaled.
void leaky_relu(int64_t n, float slope, const float* x, float* y, cudaStream_t stream);
void leaky_relu_backward(int64_t n, float slope, const float* x, const float* dy, float* dx,
                         cudaStream_t stream);
void add_scaled(int64_t n, float alpha, const float* a, const float* b, float* y, cudaStream_t stream);

// nn::l1_loss / charbonnier_loss: the mean into *loss (a device double,
// summed in a fixed order), dx (may be null).
void l1_loss(int64_t n, const float* x, const float* y, float* dx, double* loss, cudaStream_t stream);
void charbonnier_loss(int64_t n, double eps, const float* x, const float* y, float* dx,
                      double* loss, cudaStream_t stream);

// nn::resize_forward / resize_adjoint with the host-built axes (uploaded per
// call into `tables`, which must outlive the launches: synchronise before
// destroying it).
struct ResizeTables {
  DeviceBuffer<float> weight;  // h then w, forward [out][taps]
  DeviceBuffer<int> index;
  DeviceBuffer<float> t_weight;  // h then w, transposed (CSR by input index)
  DeviceBuffer<int> t_out, t_start;
  DeviceBuffer<float> rows;      // the intermediate [planes, out_h, in_w]
};
void resize_forward(int64_t planes, const nn::ResizeAxis& ah, const nn::ResizeAxis& aw,
                    const float* x, float* y, ResizeTables& tables, cudaStream_t stream);
void resize_adjoint(int64_t planes, const nn::ResizeAxis& ah, const nn::ResizeAxis& aw,
                    const float* dy, float* dx, ResizeTables& tables, cudaStream_t stream);

// train/adam.h's adam_update on n parameters (the step-th, 1-based), float
// gradients (train_kernels.h's adam_update takes the trainer's double ones).
void adam_step(int64_t n, float* p, float* m, float* v, const float* g, double lr, double beta1,
               double beta2, double eps, int64_t step, cudaStream_t stream);

}  // namespace cuda
}  // namespace mghf
