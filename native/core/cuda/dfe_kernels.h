// The DFE ops of kernels_reference.h on the GPU (SPEC §2, §3), one launcher per
// reference function, forward and input-backward. Every launcher runs the whole
// batch in one launch on `stream`; tensors are device pointers in the CPU's
// batch-planar layout [B][channels][H·W]. Where a tensor is a channel slice of a
// larger one (z1, z2 inside [B][N][P]), its batch stride is passed explicitly
// (`*_bs`, in elements); masks are always dense [B][channels][P].
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "../dfe.h"  // InputRange, kMean, kStd, DfeWeights
#include "device_buffer.h"

namespace mghf {
namespace cuda {

// xh[b, ch] = (x[b, ch] − mean[ch]) / std[ch], after (x + 1)/2 for Symmetric
// (dfe_forward's first loop).
void normalise(int B, int64_t P, InputRange range, const float* x, float* xh, cudaStream_t stream);
// dx = dxh · (½ for Symmetric) / std[ch] (dfe_backward's last loop).
void normalise_backward(int B, int64_t P, InputRange range, const float* dxh, float* dx,
                        cudaStream_t stream);

// z[b] [N×P] = conv3x3(xh[b] [3×P]; w [N×27], bias [N]), zero padding 1
// (ReferenceKernels::stem).
void stem(int B, int N, int H, int W, const float* w, const float* bias, const float* xh, float* z,
          int64_t z_bs, cudaStream_t stream);
// dxh[b] [3×P] = stem input gradient of dz[b] [N×P] (ReferenceKernels::stem_backward).
void stem_backward(int B, int N, int H, int W, const float* w, const float* dz, int64_t dz_bs,
                   float* dxh, cudaStream_t stream);

// out[b] [M×P] (+)= Wt·in[b] [K×P] (+ bias), Wt = W [M×K], or Wᵀ when W is
// stored [K×M] and transpose_w (ReferenceKernels::conv1x1 / conv1x1_backward).
void conv1x1(int B, int M, int K, int64_t P, const float* W, bool transpose_w, const float* bias,
             const float* in, int64_t in_bs, float* out, int64_t out_bs, bool accumulate,
             cudaStream_t stream);
// out = ReLU6(W·in), mask = ReLU6'(W·in) (null: not stored) (ReferenceKernels::conv1x1_relu6).
void conv1x1_relu6(int B, int M, int K, int64_t P, const float* W, const float* in, int64_t in_bs,
                   float* out, uint8_t* mask, cudaStream_t stream);
// din[b] [K×P] (+)= Wᵀ·dout[b], W [M×K] (ReferenceKernels::conv1x1_backward).
inline void conv1x1_backward(int B, int M, int K, int64_t P, const float* W, const float* dout,
                             int64_t dout_bs, float* din, int64_t din_bs, bool accumulate,
                             cudaStream_t stream) {
  conv1x1(B, K, M, P, W, true, nullptr, dout, dout_bs, din, din_bs, accumulate, stream);
}

// out = ReLU6(depthwise3x3(ReflectionPad(1)(in))), w [C×9]; mask may be null
// (ReferenceKernels::depthwise_relu6). in, out, mask are dense [B][C][P].
void depthwise_relu6(int B, int C, int H, int W, const float* w, const float* in, float* out,
                     uint8_t* mask, cudaStream_t stream);
// din = mask_in ⊙ dwᵀ(mask_out ⊙ g) (ReferenceKernels::depthwise_relu6_backward),
// as a gather: g is left unchanged.
void depthwise_relu6_backward(int B, int C, int H, int W, const float* w, const uint8_t* mask_out,
                              const uint8_t* mask_in, const float* g, float* din,
                              cudaStream_t stream);

// The affine coupling of dfe_forward on [B][c][P]: E = exp(R); with a tape,
// tz1 = z1 and tE = E (both null: no tape); then z1 = z1 ⊙ E + Eta.
void coupling_forward(int B, int c, int64_t P, float* z1, int64_t z1_bs, const float* R,
                      const float* Eta, float* tz1, float* tE, cudaStream_t stream);
// dfe_backward's Dr = dz1 ⊙ z1 ⊙ E (∂ρ of the coupling).
void coupling_rho_grad(int B, int c, int64_t P, const float* dz1, int64_t dz1_bs, const float* z1,
                       const float* E, float* Dr, cudaStream_t stream);
// dfe_backward's dz1 ⊙= E.
void coupling_scale(int B, int c, int64_t P, float* dz1, int64_t dz1_bs, const float* E,
                    cudaStream_t stream);

// Σ (a−b)² over n floats in double (loss.h's sum_squared_difference): fixed
// per-block partials then one fixed-order final pass, so the same inputs give
// the same bits. Synchronises `stream` and returns the sum on the host.
double sum_squared_difference(const float* a, const float* b, int64_t n, cudaStream_t stream);
// dS += (S − G) · k over n floats (loss.h: k = Γ1·2/(B·N·H·W) in float).
void n_gradient(const float* S, const float* G, int64_t n, float k, float* dS, cudaStream_t stream);
// The smallest i with x[i] (device, n floats) not finite, and that value in
// *value (host), or −1 (numeric_checks.h's first_nonfinite). Synchronises `stream`.
int64_t first_nonfinite(const float* x, int64_t n, float* value, cudaStream_t stream);

// ---- the model (dfe.h's dfe_forward / dfe_backward over the ops above) ----

struct DeviceIrbWeights {
  DeviceBuffer<float> expand, depthwise, project;  // [h×c], [h×9], [c×h]
};
struct DeviceBlockWeights {
  DeviceBuffer<float> mix_weight, mix_bias;  // [N×N], [N]
  DeviceIrbWeights phi, rho, eta;
};
struct DeviceDfeWeights {
  DfeArchitecture arch;
  DeviceBuffer<float> stem_weight, stem_bias;  // [N×27], [N]
  std::vector<DeviceBlockWeights> block;
};
// Copies every tensor of w to the device (asynchronously from pageable memory:
// the host copy may change once this returns).
void upload(const DfeWeights<float>& w, DeviceDfeWeights& d, cudaStream_t stream);

// DfeTape on the device: masks [B×h×P] of every IRB, z1 and exp(ρ) [B×c×P] of
// every coupling.
struct DeviceIrbTape {
  DeviceBuffer<uint8_t> m1, m2;
};
struct DeviceBlockTape {
  DeviceBuffer<float> z1, E;
  DeviceIrbTape phi, rho, eta;
};
struct DeviceDfeTape {
  std::vector<DeviceBlockTape> block;
};

// The intermediates of one call, allocated on first use at a fixed size and
// kept until the caller has synchronised its stream (a block handed back
// earlier could go to a concurrent call while a kernel still uses it).
class DfeScratch {
 public:
  DfeScratch(const DfeArchitecture& a, int B, int H, int W) : a_(a), B_(B), P_(int64_t(H) * W) {}
  float* xh() { return get(xh_, 3); }     // normalised input; dxh in the backward
  float* z() { return get(z_, a_.channels); }
  float* y() { return get(y_, a_.channels); }
  float* R() { return get(R_, a_.half()); }      // ρ(z2); Dr in the backward
  float* Eta() { return get(Eta_, a_.half()); }
  float* r1() { return get(r1_, a_.hidden()); }  // IRB intermediates; g in the backward
  float* r2() { return get(r2_, a_.hidden()); }  // dt in the backward

 private:
  float* get(DeviceBuffer<float>& b, int channels);
  DfeArchitecture a_;
  int B_;
  int64_t P_;
  DeviceBuffer<float> xh_, z_, y_, R_, Eta_, r1_, r2_;
};

// F [B, N, H, W] = DFE(x [B, 3, H, W]) (dfe.h's dfe_forward); with a tape,
// records what dfe_backward needs.
void dfe_forward(const DeviceDfeWeights& w, const float* x, int B, int H, int W, InputRange range,
                 float* F, DeviceDfeTape* tape, DfeScratch& scratch, cudaStream_t stream);
// dx [B, 3, H, W] = (∂F/∂x)ᵀ · dF (dfe.h's dfe_backward); dF is used as scratch.
void dfe_backward(const DeviceDfeWeights& w, const DeviceDfeTape& tape, float* dF, int B, int H,
                  int W, InputRange range, float* dx, DfeScratch& scratch, cudaStream_t stream);

// cudaFuncGetAttributes on one of these kernels on the current device: tells
// whether this build holds a kernel image the device can run.
cudaError_t probe_kernel_image();

}  // namespace cuda
}  // namespace mghf
