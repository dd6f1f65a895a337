// cuda_mghfc.h on the host emulator: the CPU functions on the "device" pointers.
#include "cuda/cuda_mghfc.h"
#include "entropy.h"
#include "kernels_reference.h"
#include "lip.h"
namespace mghf { namespace cuda {
using K = ReferenceKernels<float>;
std::vector<double> importance(const float* G, const float* S, int B, int N, int64_t P, cudaStream_t) {
  return channel_importance<float, K>(G, S, B, N, P);
}
CscParts csc(const float* G, const float* S, int B, int N, int64_t P, int M, const int* sel, const double* w,
             const CscWeights& cw, float* dS, cudaStream_t) {
  return csc_loss<float, K>(G, S, B, N, P, M, sel, w, cw, dS);
}
double lip(const float* G, const float* S, int B, int N, int H, int W, const LipOptions& o, double scale, float* dS,
           cudaStream_t) {
  return lip_loss<float, K>(G, S, B, N, H, W, o, scale, dS);
}
}}
