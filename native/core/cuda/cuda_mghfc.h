// MGHF-c terms on the GPU (SPEC §4–6), on device tensors G, S [B×N×P] (float,
// NCHW planes). Each mirrors its CPU counterpart (entropy.h, csc.h, lip.h) and
// adds its gradient, scaled, into dS on `stream`.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "../csc.h"        // CscParts, CscWeights
#include "../lip_params.h"  // LipOptions

namespace mghf {
namespace cuda {

// importance [B×N] on the host (double), SPEC §4: per map min/max, 256-bin
// float32 binning, normalised entropy; I = ((1−Ĥ_G) + (1−Ĥ_S)) / 2.
std::vector<double> importance(const float* G, const float* S, int B, int N, int64_t P,
                               cudaStream_t stream);

// CSC of SPEC §5 on the kept maps. sel, w are host arrays [B×M]; adds
// cw.scale·∂L_csc/∂S into dS (device) when dS is not null.
CscParts csc(const float* G, const float* S, int B, int N, int64_t P, int M, const int* sel,
             const double* w, const CscWeights& cw, float* dS, cudaStream_t stream);

// L_lip of SPEC §6 over all B×N maps; adds scale·∂L_lip/∂S into dS when not null.
double lip(const float* G, const float* S, int B, int N, int H, int W, const LipOptions& o,
           double scale, float* dS, cudaStream_t stream);

}  // namespace cuda
}  // namespace mghf
