// Content-style consistency on the GPU (SPEC §5), mirroring csc.h: csc_loss.
// Per chunk of samples: gather-and-scale the kept maps into X = [S^w; G^w],
// one block per kept map for its MSE and correlation (double sums, block
// reductions of a fixed shape) and their gradients, the channel Gram per
// sample as a tiled X·Xᵀ with float slices and double accumulation over
// pixel chunks (SPEC §8), and its backward dX = A·S^w. The per-map and
// per-sample values come back to the host and are summed in csc_loss's order.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda_check.h"
#include "cuda_mghfc.h"
#include "cuda_mghfc_gemm.cuh"
#include "cuda_mghfc_reduce.cuh"
#include "device_buffer.h"

namespace mghf {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kGramChunk = 2048;             // pixels per float-sliced Gram partial (≤ 4,096)
constexpr size_t kGatherBytes = size_t(512) << 20;  // X of one chunk of samples

// X is [nb][2][M][P]: [bl][0] holds S^w, [bl][1] holds G^w of sample b0 + bl.
__device__ __forceinline__ const float* x_map(const float* X, int M, int64_t P, int bl, int which,
                                              int i) {
  return X + ((int64_t(bl) * 2 + which) * M + i) * P;
}

// Gather and scale, csc_loss's first loop: S^w = w·S in float, as SPEC §4
// writes it (wf[b·M + i] = float(w[b·M + i]), as csc_loss's T(w)).
__global__ void __launch_bounds__(kThreads)
    gather_scale_kernel(const float* G, const float* S, int N, int64_t P, int M, int b0, int nb,
                        const int* sel, const float* wf, float* X) {
  const int64_t maps = int64_t(nb) * M;
  for (int64_t map = blockIdx.y; map < maps; map += gridDim.y) {
    const int bl = int(map / M), i = int(map % M), b = b0 + bl;
    const int64_t src = (int64_t(b) * N + sel[b * M + i]) * P;
    const float wi = wf[b * M + i];
    float* xs = X + ((int64_t(bl) * 2 + 0) * M + i) * P;
    float* xg = X + ((int64_t(bl) * 2 + 1) * M + i) * P;
    for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
         p += int64_t(gridDim.x) * blockDim.x) {
      xs[p] = wi * S[src + p];
      xg[p] = wi * G[src + p];
    }
  }
}

struct MapTermArgs {
  int N, M, b0;
  int64_t P;
  bool do_mse, do_corr;
  double k_mse;   // Γ2·β1·2/(B·M·P), before the float cast and ·w_i
  double k_corr;  // −Γ2·β2/(B·M), before ·w_i
};

// MSE and correlation of one kept map, and their gradients into its dS plane:
// csc_loss's second parallel_for, one block per (bl, i). Writes the map's
// Σ(S^w − G^w)² and clamped cc into mse_bi, corr_bi at b·M + i.
__global__ void __launch_bounds__(kThreads)
    map_terms_kernel(const float* X, MapTermArgs a, const int* sel, const float* wf,
                     double* mse_bi, double* corr_bi, float* dS) {
  const int bl = int(blockIdx.x) / a.M, i = int(blockIdx.x) % a.M, b = a.b0 + bl;
  const int64_t P = a.P;
  const int tid = int(threadIdx.x);
  const float* xs = x_map(X, a.M, P, bl, 0, i);
  const float* xg = x_map(X, a.M, P, bl, 1, i);
  float* ds = dS ? dS + (int64_t(b) * a.N + sel[b * a.M + i]) * P : nullptr;
  const float wi = wf[b * a.M + i];
  if (a.do_mse) {
    double acc[1] = {0};
    for (int64_t p = tid; p < P; p += blockDim.x) {
      const double d = double(xs[p]) - double(xg[p]);
      acc[0] += d * d;
    }
    red::block_sum(acc);
    if (tid == 0) mse_bi[b * a.M + i] = acc[0];
  }
  double mx = 0, my = 0, sx = 0, sy = 0, sxy = 0, den = 1, r = 0;
  if (a.do_corr) {
    double m[2] = {0, 0};
    for (int64_t p = tid; p < P; p += blockDim.x) {
      m[0] += double(xg[p]);
      m[1] += double(xs[p]);
    }
    red::block_sum(m);
    mx = m[0] / double(P);
    my = m[1] / double(P);
    double s3[3] = {0, 0, 0};  // sxy, sxx, syy
    for (int64_t p = tid; p < P; p += blockDim.x) {
      const double dx = double(xg[p]) - mx, dy = double(xs[p]) - my;
      s3[0] += dx * dy;
      s3[1] += dx * dx;
      s3[2] += dy * dy;
    }
    red::block_sum(s3);
    sxy = s3[0];
    sx = sqrt(s3[1]);
    sy = sqrt(s3[2]);
    den = sx * sy + kCorrEps;
    r = sxy / den;
    if (tid == 0) corr_bi[b * a.M + i] = r < -1 ? -1 : (r > 1 ? 1 : r);
  }
  if (!ds) return;
  // The clamp passes the gradient on [−1, 1] (inclusive, as PyTorch);
  // ∂sqrt at 0 is taken as 0 (SPEC §5), which drops the second term.
  const bool corr_grad = a.do_corr && r >= -1 && r <= 1;
  const float kf = float(a.k_mse) * wi;
  const double kc = a.k_corr * double(wi);
  const double ca = 1.0 / den;
  const double cc = sy > 0 ? sxy * sx / (sy * den * den) : 0.0;
  // Both terms added in csc_loss's order: the MSE part, then the correlation part.
  for (int64_t p = tid; p < P; p += blockDim.x) {
    float d = ds[p];
    if (a.do_mse) d += kf * (xs[p] - xg[p]);
    if (corr_grad) d += float(kc * (ca * (double(xg[p]) - mx) - cc * (double(xs[p]) - my)));
    ds[p] = d;
  }
}

// Partial Gram of one pixel chunk: part[z][chunk][i][j] for z = bl·2 + which,
// written for j ≥ i and mirrored (the CPU's gram fills both halves from one
// product too).
struct GramPartialEpi {
  double* part;
  int M, chunks;
  __device__ void operator()(int z, int chunk, int i, int64_t j, double v) const {
    if (j < i) return;
    double* out = part + (int64_t(z) * chunks + chunk) * M * M;
    out[int64_t(i) * M + j] = v;
    out[j * M + i] = v;
  }
};

// C[z][e] = Σ_chunk part[z][chunk][e], chunks in order (as the CPU's gram).
__global__ void __launch_bounds__(kThreads)
    gram_sum_chunks_kernel(const double* part, int64_t MM, int chunks, int zs, double* C) {
  for (int64_t z = blockIdx.y; z < zs; z += gridDim.y)
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < MM;
         e += int64_t(gridDim.x) * blockDim.x) {
      double acc = 0;
      for (int c = 0; c < chunks; ++c) acc += part[(z * chunks + c) * MM + e];
      C[z * MM + e] = acc;
    }
}

struct GramLossArgs {
  int M, b0, B;
  double norm;   // M·P: Gram(X) = X·Xᵀ / (M·H·W)
  double scale;  // Γ2
  double beta3;
};

// One block per sample: Σ_e ((C_s − C_g)/norm)² into gram_b[b], and the
// backward matrix A = Γ2·β3·2(C_s − C_g)/norm/(B·M)·2/norm (float, as csc_loss).
__global__ void __launch_bounds__(kThreads)
    gram_loss_kernel(const double* C, GramLossArgs a, double* gram_b, float* A) {
  const int bl = int(blockIdx.x), b = a.b0 + bl;
  const int64_t MM = int64_t(a.M) * a.M;
  const double* Cs = C + (int64_t(bl) * 2 + 0) * MM;
  const double* Cg = C + (int64_t(bl) * 2 + 1) * MM;
  double acc[1] = {0};
  for (int64_t e = threadIdx.x; e < MM; e += blockDim.x) {
    const double d = (Cs[e] - Cg[e]) / a.norm;
    acc[0] += d * d;
    if (A)
      A[int64_t(bl) * MM + e] = float(a.scale * a.beta3 * 2.0 * (Cs[e] - Cg[e]) / a.norm /
                                      (double(a.B) * a.M) * 2.0 / a.norm);
  }
  red::block_sum(acc);
  if (threadIdx.x == 0) gram_b[b] = acc[0];
}

// dS[b, sel_i] += w_i · (A·S^w)[i, p]: csc_loss's conv1x1 and the scatter.
// Each (i, p) has one thread and the kept channels of a sample are distinct,
// so no two threads write one element.
struct GramBackwardEpi {
  float* dS;
  const int* sel;
  const float* wf;
  int N, M, b0;
  int64_t P;
  __device__ void operator()(int bl, int, int i, int64_t p, float v) const {
    const int b = b0 + bl;
    float* ds = dS + (int64_t(b) * N + sel[b * M + i]) * P;
    ds[p] += wf[b * M + i] * v;
  }
};

unsigned grid_count(int64_t n, int64_t cap) {
  return unsigned(std::max<int64_t>(1, std::min(n, cap)));
}

}  // namespace

CscParts csc(const float* G, const float* S, int B, int N, int64_t P, int M, const int* sel,
             const double* w, const CscWeights& cw, float* dS, cudaStream_t stream) {
  CscParts out;
  const bool do_mse = cw.beta1 != 0, do_corr = cw.beta2 != 0, do_gram = cw.beta3 != 0;
  const double BMP = double(B) * M * double(P);
  const int64_t BM = int64_t(B) * M;
  std::vector<double> mse_bi(size_t(std::max<int64_t>(BM, 0)), 0.0);
  std::vector<double> corr_bi(mse_bi.size(), 0.0), gram_b(size_t(std::max(B, 0)), 0.0);
  if (BM > 0 && P > 0) {
    std::vector<float> wf(static_cast<size_t>(BM));
    for (int64_t e = 0; e < BM; ++e) wf[size_t(e)] = float(w[e]);
    DeviceBuffer<int> d_sel{size_t(BM)};
    DeviceBuffer<float> d_wf{size_t(BM)};
    MGHF_CUDA_CHECK(cudaMemcpyAsync(d_sel.data(), sel, size_t(BM) * sizeof(int),
                                    cudaMemcpyHostToDevice, stream));
    MGHF_CUDA_CHECK(cudaMemcpyAsync(d_wf.data(), wf.data(), size_t(BM) * sizeof(float),
                                    cudaMemcpyHostToDevice, stream));
    DeviceBuffer<double> d_mse{size_t(BM)}, d_corr{size_t(BM)}, d_gram{size_t(B)};
    MGHF_CUDA_CHECK(cudaMemsetAsync(d_mse.data(), 0, size_t(BM) * sizeof(double), stream));
    MGHF_CUDA_CHECK(cudaMemsetAsync(d_corr.data(), 0, size_t(BM) * sizeof(double), stream));
    MGHF_CUDA_CHECK(cudaMemsetAsync(d_gram.data(), 0, size_t(B) * sizeof(double), stream));

    // Samples per chunk: X = [S^w; G^w] of a chunk stays within kGatherBytes
    // (at least one sample: csc_loss holds the same two M×P arrays).
    const size_t per_sample = size_t(2) * size_t(M) * size_t(P) * sizeof(float);
    const int Bc = int(std::max<size_t>(1, std::min<size_t>(size_t(B), kGatherBytes / per_sample)));
    const int64_t MM = int64_t(M) * M;
    const int chunks = int((P + kGramChunk - 1) / kGramChunk);
    DeviceBuffer<float> X{size_t(Bc) * 2 * size_t(M) * size_t(P)};
    DeviceBuffer<double> part, C;
    DeviceBuffer<float> A;
    if (do_gram) {
      part.resize(size_t(Bc) * 2 * size_t(chunks) * size_t(MM));
      C.resize(size_t(Bc) * 2 * size_t(MM));
      if (dS) A.resize(size_t(Bc) * size_t(MM));
    }
    MapTermArgs mt;
    mt.N = N;
    mt.M = M;
    mt.P = P;
    mt.do_mse = do_mse;
    mt.do_corr = do_corr;
    mt.k_mse = cw.scale * cw.beta1 * 2.0 / BMP;          // csc_loss: T(Γ2·β1·2/BMP)·w_i
    mt.k_corr = -cw.scale * cw.beta2 / (double(B) * M);  // csc_loss: (−Γ2·β2/(B·M))·w_i
    for (int b0 = 0; b0 < B; b0 += Bc) {
      const int nb = std::min(Bc, B - b0);
      gather_scale_kernel<<<dim3(grid_count((P + kThreads - 1) / kThreads, 1024),
                                 grid_count(int64_t(nb) * M, 65535)),
                            kThreads, 0, stream>>>(G, S, N, P, M, b0, nb, d_sel.data(), d_wf.data(),
                                                   X.data());
      MGHF_CUDA_LAUNCH_CHECK();
      if (do_mse || do_corr) {
        mt.b0 = b0;
        map_terms_kernel<<<unsigned(int64_t(nb) * M), kThreads, 0, stream>>>(
            X.data(), mt, d_sel.data(), d_wf.data(), d_mse.data(), d_corr.data(), dS);
        MGHF_CUDA_LAUNCH_CHECK();
      }
      if (do_gram) {
        // Gram of S^w and G^w of every sample of the chunk: 2·nb products X·Xᵀ.
        gemm::Problem gp;
        gp.m = M;
        gp.n = M;
        gp.k = P;
        gp.A = gp.B = X.data();
        gp.lda = gp.ldb = P;
        gp.strideA = gp.strideB = int64_t(M) * P;
        gp.batches = 2 * nb;
        gp.k_chunk = kGramChunk;
        gp.upper_only = true;
        gemm::launch_tiled_gemm<true, true>(gp, GramPartialEpi{part.data(), M, chunks}, stream);
        gram_sum_chunks_kernel<<<dim3(grid_count((MM + kThreads - 1) / kThreads, 1024),
                                      grid_count(2 * nb, 65535)),
                                 kThreads, 0, stream>>>(part.data(), MM, chunks, 2 * nb, C.data());
        MGHF_CUDA_LAUNCH_CHECK();
        const GramLossArgs ga{M, b0, B, double(M) * double(P), cw.scale, cw.beta3};
        gram_loss_kernel<<<unsigned(nb), kThreads, 0, stream>>>(C.data(), ga, d_gram.data(),
                                                                dS ? A.data() : nullptr);
        MGHF_CUDA_LAUNCH_CHECK();
        if (dS) {
          // dX = A·S^w per sample ([M×M]·[M×P]), scaled by w_i into dS.
          gemm::Problem bp;
          bp.m = M;
          bp.n = P;
          bp.k = M;
          bp.A = A.data();
          bp.lda = M;
          bp.strideA = MM;
          bp.B = X.data();  // S^w of sample bl at X + bl·2·M·P
          bp.ldb = P;
          bp.strideB = 2 * int64_t(M) * P;
          bp.batches = nb;
          gemm::launch_tiled_gemm<false, false>(
              bp, GramBackwardEpi{dS, d_sel.data(), d_wf.data(), N, M, b0, P}, stream);
        }
      }
    }
    MGHF_CUDA_CHECK(cudaMemcpyAsync(mse_bi.data(), d_mse.data(), size_t(BM) * sizeof(double),
                                    cudaMemcpyDeviceToHost, stream));
    MGHF_CUDA_CHECK(cudaMemcpyAsync(corr_bi.data(), d_corr.data(), size_t(BM) * sizeof(double),
                                    cudaMemcpyDeviceToHost, stream));
    MGHF_CUDA_CHECK(cudaMemcpyAsync(gram_b.data(), d_gram.data(), size_t(B) * sizeof(double),
                                    cudaMemcpyDeviceToHost, stream));
    MGHF_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  // csc_loss's sums and normalisations, in its order (sample, then kept map).
  for (int b = 0; b < B; ++b) {
    for (int i = 0; i < M; ++i) {
      out.mse += mse_bi[size_t(b) * M + i];
      out.corr += corr_bi[size_t(b) * M + i];
    }
    if (do_gram) out.gram += gram_b[size_t(b)] / M;
  }
  out.mse /= BMP;
  out.corr = 1.0 - out.corr / (double(B) * M);
  out.gram /= B;
  return out;
}

}  // namespace cuda
}  // namespace mghf
