// Local information preservation on the GPU (SPEC §6), mirroring lip.h:
// lip_loss and monce.inc: monce. The B·N (sample, channel) problems run
// batched, a chunk of them at a time (device memory stays bounded):
//   1. embed_kernel         q, g [Z×P×D] (D = s²) and ‖patch of S‖
//   2. tiled GEMM           sim = q·gᵀ [Z×P×P]
//   3. max_abs_offdiag_kernel  max |sim_ij|, i ≠ j, per problem, from which the
//                           host picks each problem's form by monce.inc's own
//                           rule (sinkhorn_in_log_domain, lip_params.h)
//      kernel_matrix_kernel K = exp(sim/ε), K_ii = exp(−10/ε) (float; plain form)
//      sinkhorn_kernel      one block per problem, the histories u_t, v_t;
//      sinkhorn_log_kernel  the log-domain form's α_t, β_t for the others
//   4. logits_kernel        one warp per row: l_i, p_ij (and the row terms
//                           of the backward); problem_sum_kernel Σ_i l_i
//   5. sinkhorn_backward_kernel (sinkhorn_log_backward_kernel)  one block per
//                           problem: the unrolled iterations (ds_t, dr_t; in
//                           the log domain ∂β_t, ∂α_t); dsim_kernel one thread
//                           per (i, j): ∂sim, ×g0
//   6. tiled GEMM           ∂q = ∂sim·g
//   7. norm_coef_kernel, scatter_kernel  back through q = v/(‖v‖ + δ) and
//                           the overlapping patches, gathered per pixel in
//                           patch order (deterministic, no atomics).
// The Sinkhorn iterates, logits and sums are double as in monce.inc; K, p,
// ∂sim and the embeddings are float as there. The log-domain problems read
// C = sim/ε from the float sim on the fly, in double as monce.inc does.
// The iterations run in slices of kIterSlice launches; with a cancel flag the
// stream is synchronised after each slice and each chunk and the flag checked
// (E_ABORTED), so an abort waits for one slice at most.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../lip.h"  // patch_grid, kPatchNormEps: the CPU's own grid
#include "../numeric_checks.h"  // throw_if_cancelled
#include "cuda_check.h"
#include "cuda_mghfc.h"
#include "cuda_mghfc_gemm.cuh"
#include "cuda_mghfc_reduce.cuh"
#include "device_buffer.h"

namespace mghf {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kProblemThreads = 512;                 // one block per (b, k) problem
constexpr size_t kChunkBytes = size_t(512) << 20;    // device memory of one chunk of problems
constexpr int64_t kMaxChunk = 4096;                  // problems per chunk (grid y limit)
constexpr int kIterSlice = 64;                       // Sinkhorn iterations per launch
constexpr double kExpFloor = -708.0;                 // monce.inc's kLogDomainExpFloor

struct PatchGeom {
  int H, W;
  int s, t;    // patch size and stride
  int D, P;    // s², kept patches
  int nr, nc;  // the full grid
};

struct Monce {
  int P, T;
  double tau, inv_tau, eps_ot;
  double fscale;  // (P − 1)·Q
  double g0;      // scale / (B·N)
  bool sinkhorn_grad;
  double ln_fscale, ln_floor;  // ln((P − 1)·Q) (−∞ at 0) and ln 1e-8, for the log-domain ln f
};

// ---- the log-domain form's pieces (monce.inc) -------------------------------

// C_ij = log K_ij: sim_ij/ε off the diagonal, −10/ε on it.
__device__ __forceinline__ double log_kernel(const float* sim, int P, int i, int j,
                                             double eps_ot) {
  return i == j ? -10.0 / eps_ot : double(sim[int64_t(i) * P + j]) / eps_ot;
}

__device__ __forceinline__ double exp_floor(double x) { return exp(x > kExpFloor ? x : kExpFloor); }

// d_ij = log T_ij + ln fscale − ln 1e-8, log T = α_T·1ᵀ + C + 1·β_Tᵀ (monce.inc's log_d_row).
__device__ __forceinline__ double log_d(double cij, double ai, double bj, const Monce& c) {
  return cij + bj + (ai + c.ln_fscale - c.ln_floor);
}

// ln f_ij = ln 1e-8 + softplus(d_ij) (monce.inc's log_f_row).
__device__ __forceinline__ double log_f_from_d(double d, const Monce& c) {
  const double l1 = log(exp_floor(-fabs(d)) + 1.0);
  return l1 + (c.ln_floor + (d > 0 ? d : 0.0));
}

// ---- 1. Embedding (lip_loss's embed) ---------------------------------------

// Block (i, z, which): patch i of problem z of S (which 0, into q, with its
// norm) or G (which 1, into g). q_i = v / (‖v‖ + 1e-7), the norm summed in
// double, the scaling in float as lip_loss's `row[d] *= inv`.
__global__ void __launch_bounds__(kThreads)
    embed_kernel(const float* G, const float* S, PatchGeom pg, int64_t bk0, const int* y0,
                 const int* x0, float* q, float* g, double* qn) {
  const int i = int(blockIdx.x), which = int(blockIdx.z), tid = int(threadIdx.x);
  const int64_t z = blockIdx.y;
  const float* src = (which == 0 ? S : G) + (bk0 + z) * int64_t(pg.H) * pg.W +
                     int64_t(y0[i]) * pg.W + x0[i];
  float* dst = (which == 0 ? q : g) + (z * pg.P + i) * pg.D;
  double nn[1] = {0};
  for (int d = tid; d < pg.D; d += blockDim.x) {
    const float v = src[int64_t(d / pg.s) * pg.W + d % pg.s];
    dst[d] = v;
    nn[0] += double(v) * double(v);
  }
  red::block_sum(nn);
  const double n = sqrt(nn[0]);
  const float inv = float(1.0 / (n + kPatchNormEps));
  for (int d = tid; d < pg.D; d += blockDim.x) dst[d] *= inv;  // this thread's own elements
  if (which == 0 && tid == 0) qn[z * pg.P + i] = n;
}

// ---- 3. Sinkhorn (monce.inc) -----------------------------------------------

// out[z] = max |sim_ij| over i ≠ j of problem z (0 for P = 1), one block each
// (monce.inc's max_off: exact, so the order does not matter).
__global__ void __launch_bounds__(kThreads)
    max_abs_offdiag_kernel(const float* simall, int P, float* out) {
  const int64_t z = blockIdx.x, PP = int64_t(P) * P;
  const float* sim = simall + z * PP;
  float lo = 0.f, hi = 0.f;
  for (int64_t e = threadIdx.x; e < PP; e += blockDim.x) {
    const float a = fabsf(sim[e]);
    hi = e / P != e % P && a > hi ? a : hi;
  }
  red::block_min_max(lo, hi);
  if (threadIdx.x == 0) out[z] = hi;
}

// K_ij = exp(sim_ij / ε) for i ≠ j, K_ii = exp(−10 / ε), stored in float, for
// the plain-form problems (logd[z] = 0; the others never read K).
__global__ void __launch_bounds__(kThreads)
    kernel_matrix_kernel(const float* sim, int P, int64_t count, double eps_ot, double kdiag,
                         const int* logd, float* K) {
  const int64_t PP = int64_t(P) * P;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += int64_t(gridDim.x) * blockDim.x) {
    if (logd[e / PP]) continue;
    const int64_t ij = e % PP;
    const bool diag = ij / P == ij % P;
    K[e] = float(diag ? kdiag : exp(double(sim[e]) / eps_ot));
  }
}

// One block per plain-form problem z, iterations t0…t1 (slices of one run).
// u_0 = 0 (monce.inc's unused, zeroed u_0), v_0 = 1; u_t = 1 ⊘ (K·v_{t−1})
// (one warp per row), then v_t = 1 ⊘ (Kᵀ·u_t) (one thread per column, rows
// summed in ascending order as in monce_reference.h's axpys_kv). U, V are
// [Z][T+1][P].
__global__ void __launch_bounds__(kProblemThreads)
    sinkhorn_kernel(int P, int T, int t0, int t1, const int* logd, const float* Kall,
                    double* Uall, double* Vall) {
  const int64_t z = blockIdx.x;
  if (logd[z]) return;  // the whole block: the log-domain kernel's problem
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int warps = int(blockDim.x) >> 5;
  const float* K = Kall + z * int64_t(P) * P;
  double* U = Uall + z * int64_t(T + 1) * P;
  double* V = Vall + z * int64_t(T + 1) * P;
  if (t0 == 1) {
    for (int j = tid; j < P; j += blockDim.x) {
      U[j] = 0.0;
      V[j] = 1.0;
    }
    __syncthreads();
  }
  for (int t = t0; t <= t1; ++t) {
    const double* vp = V + int64_t(t - 1) * P;
    double* u = U + int64_t(t) * P;
    double* v = V + int64_t(t) * P;
    for (int i = warp; i < P; i += warps) {
      const float* Ki = K + int64_t(i) * P;
      double acc = 0;
      for (int j = lane; j < P; j += 32) acc += double(Ki[j]) * vp[j];
      acc = red::warp_sum(acc);
      if (lane == 0) u[i] = 1.0 / acc;
    }
    __syncthreads();
    for (int j = tid; j < P; j += blockDim.x) {
      double acc = 0;
      for (int i = 0; i < P; ++i) acc += u[i] * double(K[int64_t(i) * P + j]);
      v[j] = 1.0 / acc;
    }
    __syncthreads();
  }
}

// The log-domain form for the problems with logd[z] (monce.inc), iterations
// t0…t1: from β_0 = 0, α_t,i = −LSE_j(C_ij + β_{t−1,j}) (one warp per row,
// shifted by the row's max), then β_t,j = −LSE_i(C_ij + α_t,i) (one thread
// per column, rows ascending, shifted by the column's max). U, V hold α, β.
__global__ void __launch_bounds__(kProblemThreads)
    sinkhorn_log_kernel(int P, int T, int t0, int t1, double eps_ot, const int* logd,
                        const float* simall, double* Uall, double* Vall) {
  const int64_t z = blockIdx.x;
  if (!logd[z]) return;  // the whole block
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int warps = int(blockDim.x) >> 5;
  const float* sim = simall + z * int64_t(P) * P;
  double* U = Uall + z * int64_t(T + 1) * P;
  double* V = Vall + z * int64_t(T + 1) * P;
  if (t0 == 1) {
    for (int j = tid; j < P; j += blockDim.x) {
      U[j] = 0.0;
      V[j] = 0.0;
    }
    __syncthreads();
  }
  for (int t = t0; t <= t1; ++t) {
    const double* bp = V + int64_t(t - 1) * P;
    double* a = U + int64_t(t) * P;
    double* b = V + int64_t(t) * P;
    for (int i = warp; i < P; i += warps) {
      double m = -INFINITY;
      for (int j = lane; j < P; j += 32) {
        const double x = log_kernel(sim, P, i, j, eps_ot) + bp[j];
        m = x > m ? x : m;
      }
      m = red::warp_max(m);
      double s = 0;
      for (int j = lane; j < P; j += 32)
        s += exp_floor(log_kernel(sim, P, i, j, eps_ot) + bp[j] - m);
      s = red::warp_sum(s);
      if (lane == 0) a[i] = -(m + log(s));
    }
    __syncthreads();
    for (int j = tid; j < P; j += blockDim.x) {
      double m = -INFINITY;
      for (int i = 0; i < P; ++i) {
        const double x = log_kernel(sim, P, i, j, eps_ot) + a[i];
        m = x > m ? x : m;
      }
      double s = 0;
      for (int i = 0; i < P; ++i) s += exp_floor(log_kernel(sim, P, i, j, eps_ot) + a[i] - m);
      b[j] = -(m + log(s));
    }
    __syncthreads();
  }
}

// ---- 4. Logits and the per-row cross-entropy (monce.inc) --------------------

// a_ij = logit_ij − sim_ii/τ over the P negatives; f_ij = T_ij·(P−1)·Q + 1e-8,
// T_ij = u_i·K_ij·v_j, in monce.inc's order of operations.
__device__ __forceinline__ double negative_logit(int i, int j, double sim_ij, double sii,
                                                 double kij, double ui, double vj,
                                                 const Monce& c) {
  if (j == i) return (-10.0 - sii) * c.inv_tau;
  const double f = ui * kij * vj * c.fscale + 1e-8;
  return (sim_ij + c.tau * log(f) - sii) * c.inv_tau;
}

// The same in the log domain: C_ij, α_T,i, β_T,j in place of K_ij, u_i, v_j.
__device__ __forceinline__ double negative_logit_log(int i, int j, double sim_ij, double sii,
                                                     double cij, double ai, double bj,
                                                     const Monce& c) {
  if (j == i) return (-10.0 - sii) * c.inv_tau;
  const double lnf = log_f_from_d(log_d(cij, ai, bj, c), c);
  return (sim_ij + c.tau * lnf - sii) * c.inv_tau;
}

// ∂T_ij = p_ij·(P−1)·Q / f_ij off the diagonal (monce.inc's plan_grad_row).
__device__ __forceinline__ double plan_grad(int i, int j, double pij, double kij, double ui,
                                            double vj, double fscale) {
  return j == i ? 0.0 : pij * fscale / (ui * kij * vj * fscale + 1e-8);
}

// ∂(log T_ij) = p_ij·T_ij·fscale/f_ij = p_ij·exp(d_ij + (ln 1e-8 − ln f_ij)) off
// the diagonal, 0 when fscale = 0 (monce.inc's log_plan_grad_row).
__device__ __forceinline__ double log_plan_grad(int i, int j, double pij, double cij, double ai,
                                                double bj, const Monce& c) {
  if (j == i || !(c.fscale > 0)) return 0.0;
  const double d = log_d(cij, ai, bj, c);
  return exp_floor(d + (c.ln_floor - log_f_from_d(d, c))) * pij;
}

// One warp per row i of problem z (blockIdx.y). Writes l_i into L, and with
// `backward`: p_ij (float) into pr, Σ_j p_ij into rowsum and, with
// sinkhorn_grad, du_i = Σ_j ∂T_ij·K_ij·v_j (monce.inc's first backward pass).
__global__ void __launch_bounds__(kThreads)
    logits_kernel(Monce c, const int* logd, const float* simall, const float* Kall,
                  const double* Uall, const double* Vall, bool backward, double* L,
                  float* prall, double* rowsum, double* du) {
  const int P = c.P, lane = int(threadIdx.x) & 31;
  const int i = int(blockIdx.x) * kWarps + (int(threadIdx.x) >> 5);
  const int64_t z = blockIdx.y;
  if (i >= P) return;  // whole warp; this kernel has no block barrier
  const int64_t PP = int64_t(P) * P;
  const float* simz = simall + z * PP;
  const float* sim = simz + int64_t(i) * P;  // row i
  const float* Ki = Kall + z * PP + int64_t(i) * P;
  const double* u = Uall + (z * (c.T + 1) + c.T) * P;  // u_T (log domain: α_T)
  const double* v = Vall + (z * (c.T + 1) + c.T) * P;  // v_T (β_T)
  const double ui = u[i], sii = double(sim[i]);
  const bool lg = logd[z] != 0;
  auto logit = [&](int j) {
    return lg ? negative_logit_log(i, j, double(sim[j]), sii, log_kernel(simz, P, i, j, c.eps_ot),
                                   ui, v[j], c)
              : negative_logit(i, j, double(sim[j]), sii, double(Ki[j]), ui, v[j], c);
  };
  double amax = -INFINITY;
  for (int j = lane; j < P; j += 32) {
    const double a = logit(j);
    amax = a > amax ? a : amax;
  }
  amax = red::warp_max(amax);
  // l_i = log1p(Σ_j exp(a_ij)), shifted by the largest a when that is positive.
  double li;
  if (amax > 0) {
    double zs = lane == 0 ? exp(-amax) : 0.0;
    for (int j = lane; j < P; j += 32) zs += exp(logit(j) - amax);
    li = amax + log(red::warp_sum(zs));
  } else {
    double zs = 0;
    for (int j = lane; j < P; j += 32) zs += exp(logit(j));
    li = log1p(red::warp_sum(zs));
  }
  if (lane == 0) L[z * P + i] = li;
  if (!backward) return;
  float* pr = prall + z * PP + int64_t(i) * P;
  double rs = 0, dui = 0;
  for (int j = lane; j < P; j += 32) {
    const float p = float(exp(logit(j) - li));
    pr[j] = p;
    rs += double(p);
    if (c.sinkhorn_grad && lg) {
      // ∂α_T,i = Σ_j ∂(log T_ij)
      dui += log_plan_grad(i, j, double(p), log_kernel(simz, P, i, j, c.eps_ot), ui, v[j], c);
    } else if (c.sinkhorn_grad) {
      const double kij = double(Ki[j]);
      const double gk = plan_grad(i, j, double(p), kij, ui, v[j], c.fscale) * kij;
      dui += gk * v[j];
    }
  }
  rs = red::warp_sum(rs);
  dui = red::warp_sum(dui);
  if (lane == 0) {
    rowsum[z * P + i] = rs;
    du[z * P + i] = dui;
  }
}

// out[z] = Σ_i L[z][i], i ascending (monce.inc's `total += li`).
__global__ void problem_sum_kernel(const double* L, int P, int64_t nz, double* out) {
  const int64_t z = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (z >= nz) return;
  double total = 0;
  for (int i = 0; i < P; ++i) total += L[z * P + i];
  out[z] = total;
}

// ---- 5. Backward to ∂sim (monce.inc) ----------------------------------------

// One block per problem: dv = (∂T ⊙ K)ᵀ·u (columns, rows ascending), then the
// unrolled iterations last to first, v_t = 1 ⊘ (Kᵀu_t), u_t = 1 ⊘ (K v_{t−1}):
//   ds_t = −dv ⊙ v_t²,  du += K·ds_t,  dr_t = −du ⊙ u_t²,  dv = Kᵀ·dr_t, du = 0.
// ds_t, dr_t go to DS, DR [Z][T][P] (row t−1) for the ∂K pass. du comes in
// from logits_kernel; du and dv are scratch [Z][P].
// Iterations t_hi down to t_lo (slices of one run; dv starts in the first, t_hi = T).
__global__ void __launch_bounds__(kProblemThreads)
    sinkhorn_backward_kernel(Monce c, int t_hi, int t_lo, const int* logd, const float* Kall,
                             const float* prall, const double* Uall, const double* Vall,
                             double* duall, double* dvall, double* DSall, double* DRall) {
  const int P = c.P, T = c.T;
  const int64_t z = blockIdx.x;
  if (logd[z]) return;  // the whole block
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int warps = int(blockDim.x) >> 5;
  const int64_t PP = int64_t(P) * P;
  const float* K = Kall + z * PP;
  const float* pr = prall + z * PP;
  const double* U = Uall + z * int64_t(T + 1) * P;
  const double* V = Vall + z * int64_t(T + 1) * P;
  const double* uT = U + int64_t(T) * P;
  const double* vT = V + int64_t(T) * P;
  double* du = duall + z * P;
  double* dv = dvall + z * P;
  double* DS = DSall + z * int64_t(T) * P;
  double* DR = DRall + z * int64_t(T) * P;
  if (t_hi == T) {
    for (int j = tid; j < P; j += blockDim.x) {
      double acc = 0;
      for (int i = 0; i < P; ++i) {
        const double kij = double(K[int64_t(i) * P + j]);
        const double pij = double(pr[int64_t(i) * P + j]);
        const double gk = plan_grad(i, j, pij, kij, uT[i], vT[j], c.fscale) * kij;
        acc += gk * uT[i];
      }
      dv[j] = acc;
    }
    __syncthreads();
  }
  for (int t = t_hi; t >= t_lo; --t) {
    const double* ut = U + int64_t(t) * P;
    const double* vt = V + int64_t(t) * P;
    double* ds = DS + int64_t(t - 1) * P;
    double* dr = DR + int64_t(t - 1) * P;
    for (int j = tid; j < P; j += blockDim.x) ds[j] = -dv[j] * vt[j] * vt[j];
    __syncthreads();
    for (int i = warp; i < P; i += warps) {
      const float* Ki = K + int64_t(i) * P;
      double acc = 0;
      for (int j = lane; j < P; j += 32) acc += double(Ki[j]) * ds[j];
      acc = red::warp_sum(acc);
      if (lane == 0) {
        const double dui = du[i] + acc;
        dr[i] = -dui * ut[i] * ut[i];
        du[i] = 0.0;  // u_{t−1} feeds nothing else, so du restarts at 0
      }
    }
    __syncthreads();
    for (int j = tid; j < P; j += blockDim.x) {
      double acc = 0;
      for (int i = 0; i < P; ++i) acc += dr[i] * double(K[int64_t(i) * P + j]);
      dv[j] = acc;
    }
    __syncthreads();
  }
}

// The log-domain form's unrolled iterations, t_hi down to t_lo, one block per
// problem with logd[z] (monce.inc): ∂β_T = column sums of ∂(log T) (first
// slice), then per t, with ρ_ij = exp(C_ij + α_t,i + β_t,j) and
// π_ij = exp(C_ij + α_t,i + β_{t−1,j}):
//   ∂α_t,i = ∂α_t,i(in) − Σ_j ρ_ij ∂β_t,j   (one warp per row; ∂α_T,i(in) from
//                                           logits_kernel, 0 below T)
//   ∂β_{t−1,j} = −Σ_i π_ij ∂α_t,i          (one thread per column, rows ascending)
// ∂β_t and ∂α_t go to DS, DR [Z][T][P] (row t−1) for dsim_kernel's ∂C.
__global__ void __launch_bounds__(kProblemThreads)
    sinkhorn_log_backward_kernel(Monce c, int t_hi, int t_lo, const int* logd,
                                 const float* simall, const float* prall, const double* Uall,
                                 const double* Vall, double* duall, double* dvall, double* DSall,
                                 double* DRall) {
  const int P = c.P, T = c.T;
  const int64_t z = blockIdx.x;
  if (!logd[z]) return;  // the whole block
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int warps = int(blockDim.x) >> 5;
  const int64_t PP = int64_t(P) * P;
  const float* sim = simall + z * PP;
  const float* pr = prall + z * PP;
  const double* U = Uall + z * int64_t(T + 1) * P;
  const double* V = Vall + z * int64_t(T + 1) * P;
  double* du = duall + z * P;
  double* dv = dvall + z * P;
  double* DS = DSall + z * int64_t(T) * P;
  double* DR = DRall + z * int64_t(T) * P;
  if (t_hi == T) {
    const double* aT = U + int64_t(T) * P;
    const double* bT = V + int64_t(T) * P;
    for (int j = tid; j < P; j += blockDim.x) {
      double acc = 0;
      for (int i = 0; i < P; ++i)
        acc += log_plan_grad(i, j, double(pr[int64_t(i) * P + j]), log_kernel(sim, P, i, j, c.eps_ot),
                             aT[i], bT[j], c);
      dv[j] = acc;
    }
    __syncthreads();
  }
  for (int t = t_hi; t >= t_lo; --t) {
    const double* at = U + int64_t(t) * P;
    const double* bt = V + int64_t(t) * P;
    const double* bp = V + int64_t(t - 1) * P;
    double* ds = DS + int64_t(t - 1) * P;
    double* dr = DR + int64_t(t - 1) * P;
    for (int j = tid; j < P; j += blockDim.x) ds[j] = dv[j];
    __syncthreads();
    for (int i = warp; i < P; i += warps) {
      double acc = 0;
      for (int j = lane; j < P; j += 32)
        acc += exp_floor(log_kernel(sim, P, i, j, c.eps_ot) + at[i] + bt[j]) * ds[j];
      acc = red::warp_sum(acc);
      if (lane == 0) {
        dr[i] = du[i] - acc;
        du[i] = 0.0;  // α_{t−1} feeds only β_{t−1}
      }
    }
    __syncthreads();
    for (int j = tid; j < P; j += blockDim.x) {
      double acc = 0;
      for (int i = 0; i < P; ++i)
        acc += exp_floor(log_kernel(sim, P, i, j, c.eps_ot) + at[i] + bp[j]) * dr[i];
      dv[j] = -acc;
    }
    __syncthreads();
  }
}

// One thread per (i, j) of problem z (blockIdx.y): the direct term through
// the logits, a_ij (j≠i) = sim_ij/τ + ln f_ij − sim_ii/τ, a_ii = −10/τ − sim_ii/τ;
// with sinkhorn_grad, off the diagonal ∂K_ij = ∂T_ij·u_i·v_j
// + Σ_t (u_t[i]·ds_t[j] + dr_t[i]·v_{t−1}[j]) (in monce.inc's groups of four)
// and ∂sim_ij += ∂K_ij·K_ij/ε; then ×g0. The float roundings of monce.inc's
// dsim between the steps are kept.
__global__ void __launch_bounds__(kThreads)
    dsim_kernel(Monce c, const int* logd, const float* simall, const float* Kall,
                const float* prall, const double* rowsumall, const double* Uall,
                const double* Vall, const double* DSall, const double* DRall, float* dsimall) {
  const int P = c.P, T = c.T;
  const int64_t PP = int64_t(P) * P, z = blockIdx.y;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= PP) return;
  const int i = int(e / P), j = int(e % P);
  const double pij = double(prall[z * PP + e]);
  float d = float(j == i ? -rowsumall[z * P + i] * c.inv_tau : pij * c.inv_tau);
  if (c.sinkhorn_grad && j != i && logd[z]) {
    // ∂C_ij = ∂(log T_ij) − Σ_{t=T…1} (ρ_ij ∂β_t,j + π_ij ∂α_t,i), as monce.inc adds it.
    const double* U = Uall + z * int64_t(T + 1) * P;
    const double* V = Vall + z * int64_t(T + 1) * P;
    const double* DS = DSall + z * int64_t(T) * P;
    const double* DR = DRall + z * int64_t(T) * P;
    const double cij = log_kernel(simall + z * PP, P, i, j, c.eps_ot);
    double dc = log_plan_grad(i, j, pij, cij, U[int64_t(T) * P + i], V[int64_t(T) * P + j], c);
    for (int t = T; t >= 1; --t) {
      const double at = U[int64_t(t) * P + i];
      dc -= exp_floor(cij + at + V[int64_t(t) * P + j]) * DS[int64_t(t - 1) * P + j];
      dc -= exp_floor(cij + at + V[int64_t(t - 1) * P + j]) * DR[int64_t(t - 1) * P + i];
    }
    d = float(double(d) + dc / c.eps_ot);
  } else if (c.sinkhorn_grad && j != i) {
    const double* U = Uall + z * int64_t(T + 1) * P;
    const double* V = Vall + z * int64_t(T + 1) * P;
    const double* DS = DSall + z * int64_t(T) * P;
    const double* DR = DRall + z * int64_t(T) * P;
    const double kij = double(Kall[z * PP + e]);
    const double ui = U[int64_t(T) * P + i], vj = V[int64_t(T) * P + j];
    double row = plan_grad(i, j, pij, kij, ui, vj, c.fscale);
    row *= ui * vj;
    // Term k: even k = 2(t−1): u_t[i]·ds_t[j]; odd k = 2(t−1)+1: dr_t[i]·v_{t−1}[j].
    auto coef = [&](int k) {
      return k % 2 == 0 ? U[int64_t(k / 2 + 1) * P + i] : DR[int64_t(k / 2) * P + i];
    };
    auto x = [&](int k) {
      return k % 2 == 0 ? DS[int64_t(k / 2) * P + j] : V[int64_t(k / 2) * P + j];
    };
    const int R = 2 * T;
    int r = 0;
    for (; r + 4 <= R; r += 4)
      row += coef(r) * x(r) + coef(r + 1) * x(r + 1) + coef(r + 2) * x(r + 2) +
             coef(r + 3) * x(r + 3);
    for (; r < R; ++r) row += coef(r) * x(r);
    d = float(double(d) + row * kij / c.eps_ot);
  }
  dsimall[z * PP + e] = float(double(d) * c.g0);
}

// ---- 7. Through the normalisation and the patches (lip_loss) ---------------

// Block (i, z): for q = v/(n+δ), ∂v = ∂q/(n+δ) − v·(v·∂q)/(n·(n+δ)²), the
// second term 0 where n = 0. Writes 1/(n+δ) and (v·∂q)/(n·(n+δ)²).
__global__ void __launch_bounds__(kThreads)
    norm_coef_kernel(const float* S, PatchGeom pg, int64_t bk0, const int* y0, const int* x0,
                     const float* dq, const double* qn, double* cinv, double* ccoef) {
  const int i = int(blockIdx.x), tid = int(threadIdx.x);
  const int64_t z = blockIdx.y;
  const float* src = S + (bk0 + z) * int64_t(pg.H) * pg.W + int64_t(y0[i]) * pg.W + x0[i];
  const float* dqi = dq + (z * pg.P + i) * pg.D;
  double vdq[1] = {0};
  for (int d = tid; d < pg.D; d += blockDim.x)
    vdq[0] += double(src[int64_t(d / pg.s) * pg.W + d % pg.s]) * double(dqi[d]);
  red::block_sum(vdq);
  if (tid == 0) {
    const double n = qn[z * pg.P + i], inv = 1.0 / (n + kPatchNormEps);
    cinv[z * pg.P + i] = inv;
    ccoef[z * pg.P + i] = n > 0 ? vdq[0] / (n * (n + kPatchNormEps) * (n + kPatchNormEps)) : 0.0;
  }
}

// One thread per pixel of plane bk0 + z: adds the contributions of the kept
// patches that contain it, in patch order (lip_loss adds patch by patch, so
// each pixel sees the same float additions in the same order). grid_index
// maps a full-grid index to its kept index or −1.
__global__ void __launch_bounds__(kThreads)
    scatter_kernel(const float* S, PatchGeom pg, int64_t bk0, const int* grid_index,
                   const float* dq, const double* cinv, const double* ccoef, float* dS) {
  const int64_t z = blockIdx.y, plane = int64_t(pg.H) * pg.W;
  const float* splane = S + (bk0 + z) * plane;
  float* dplane = dS + (bk0 + z) * plane;
  for (int64_t pix = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; pix < plane;
       pix += int64_t(gridDim.x) * blockDim.x) {
    const int y = int(pix / pg.W), x = int(pix % pg.W);
    // Patch rows r with r·t ≤ y < r·t + s, columns likewise.
    const int rlo = y - pg.s + 1 <= 0 ? 0 : (y - pg.s + pg.t) / pg.t;
    const int rhi = min(pg.nr - 1, y / pg.t);
    const int clo = x - pg.s + 1 <= 0 ? 0 : (x - pg.s + pg.t) / pg.t;
    const int chi = min(pg.nc - 1, x / pg.t);
    if (rlo > rhi || clo > chi) continue;
    const double v = double(splane[pix]);
    float d = dplane[pix];
    bool hit = false;
    for (int r = rlo; r <= rhi; ++r)
      for (int cc = clo; cc <= chi; ++cc) {
        const int m = grid_index[r * pg.nc + cc];
        if (m < 0) continue;
        hit = true;
        const int dy = y - r * pg.t, dx = x - cc * pg.t;
        const int64_t pm = z * pg.P + m;
        d += float(double(dq[pm * pg.D + dy * pg.s + dx]) * cinv[pm] - v * ccoef[pm]);
      }
    if (hit) dplane[pix] = d;
  }
}

unsigned blocks_for(int64_t n, int threads, int64_t cap) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, cap)));
}

template <class T>
void upload(DeviceBuffer<T>& dst, const std::vector<T>& src, cudaStream_t stream) {
  dst.resize(src.size());
  if (!src.empty())
    MGHF_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.size() * sizeof(T),
                                    cudaMemcpyHostToDevice, stream));
}

}  // namespace

double lip(const float* G, const float* S, int B, int N, int H, int W, const LipOptions& o,
           double scale, float* dS, cudaStream_t stream) {
  const PatchGrid grid = patch_grid(H, W, o);
  PatchGeom pg;
  pg.H = H;
  pg.W = W;
  pg.s = o.patch;
  pg.t = o.stride;
  pg.D = o.patch * o.patch;
  pg.P = int(grid.y0.size());
  pg.nr = (H - o.patch) / o.stride + 1;
  pg.nc = (W - o.patch) / o.stride + 1;
  const int P = pg.P, D = pg.D, T = o.monce.iters;
  const int64_t BN = int64_t(B) * N;
  std::vector<double> per_map(size_t(std::max<int64_t>(BN, 0)), 0.0);
  if (BN > 0 && P > 0) {
    const bool backward = dS != nullptr, sgrad = backward && o.monce.sinkhorn_grad;
    Monce c;
    c.P = P;
    c.T = T;
    c.tau = o.monce.tau;
    c.inv_tau = 1.0 / o.monce.tau;
    c.eps_ot = o.monce.eps_ot;
    c.fscale = double(P - 1) * o.monce.Q;
    c.g0 = scale / (double(B) * N);
    c.sinkhorn_grad = o.monce.sinkhorn_grad;
    c.ln_fscale = c.fscale > 0 ? std::log(c.fscale) : -INFINITY;
    c.ln_floor = std::log(1e-8);
    const double kdiag = std::exp(-10.0 / o.monce.eps_ot);
    const CancelFlag* cancel = o.monce.cancel;
    // With a cancel flag: wait for the work queued so far, then check it.
    auto checkpoint = [&] {
      if (!cancel) return;
      MGHF_CUDA_CHECK(cudaStreamSynchronize(stream));
      throw_if_cancelled(cancel);
    };

    std::vector<int> grid_index(size_t(pg.nr) * size_t(pg.nc), -1);
    for (int m = 0; m < P; ++m) {
      const size_t r = size_t(grid.y0[size_t(m)] / pg.t), col = size_t(grid.x0[size_t(m)] / pg.t);
      grid_index[r * size_t(pg.nc) + col] = m;
    }
    DeviceBuffer<int> d_y0, d_x0, d_grid_index;
    upload(d_y0, grid.y0, stream);
    upload(d_x0, grid.x0, stream);
    upload(d_grid_index, grid_index, stream);

    // Problems per chunk from the bytes one problem needs.
    const size_t sP = size_t(P), PPs = sP * sP, PD = sP * size_t(D), sT = size_t(T);
    size_t per = 2 * PD * sizeof(float) + 2 * PPs * sizeof(float) +
                 (2 * (sT + 1) * sP + 2 * sP) * sizeof(double);  // q, g, sim, K, U, V, qn, L
    // pr, dsim; rowsum, du, the two normalisation coefficients
    if (backward) per += 2 * PPs * sizeof(float) + 4 * sP * sizeof(double);
    if (sgrad) per += (2 * sT * sP + sP) * sizeof(double);                  // DS, DR, dv
    const int64_t zmax = std::max<int64_t>(1, std::min<int64_t>(std::min<int64_t>(BN, kMaxChunk),
                                                               int64_t(kChunkBytes / per)));
    const int64_t nchunks = (BN + zmax - 1) / zmax;
    const int64_t Zc = (BN + nchunks - 1) / nchunks;  // even chunks
    const size_t Z = size_t(Zc);

    DeviceBuffer<float> q{Z * PD}, g{Z * PD}, sim{Z * PPs}, K{Z * PPs}, maxabs{Z};
    DeviceBuffer<int> logd{Z};
    std::vector<float> h_maxabs(Z);
    std::vector<int> h_logd(Z);
    DeviceBuffer<double> qn{Z * sP}, U{Z * (sT + 1) * sP}, V{Z * (sT + 1) * sP}, L{Z * sP};
    DeviceBuffer<double> d_per_map{size_t(BN)};
    DeviceBuffer<float> pr, dsim;
    DeviceBuffer<double> rowsum, du, cinv, ccoef, dv, DS, DR;
    if (backward) {
      pr.resize(Z * PPs);
      dsim.resize(Z * PPs);
      rowsum.resize(Z * sP);
      du.resize(Z * sP);
      cinv.resize(Z * sP);
      ccoef.resize(Z * sP);
    }
    if (sgrad) {
      dv.resize(Z * sP);
      DS.resize(Z * sT * sP);
      DR.resize(Z * sT * sP);
    }

    for (int64_t bk0 = 0; bk0 < BN; bk0 += Zc) {
      const int64_t nz = std::min<int64_t>(Zc, BN - bk0);
      const int64_t PP = int64_t(P) * P;
      // 1. Embeddings.
      embed_kernel<<<dim3(unsigned(P), unsigned(nz), 2), kThreads, 0, stream>>>(
          G, S, pg, bk0, d_y0.data(), d_x0.data(), q.data(), g.data(), qn.data());
      MGHF_CUDA_LAUNCH_CHECK();
      // 2. sim_z = q_z·g_zᵀ [P×P], float as lip_loss's matmul (D terms).
      gemm::Problem sp;
      sp.m = P;
      sp.n = P;
      sp.k = D;
      sp.A = q.data();
      sp.lda = D;
      sp.strideA = int64_t(P) * D;
      sp.B = g.data();
      sp.ldb = D;
      sp.strideB = int64_t(P) * D;
      sp.batches = int(nz);
      gemm::launch_tiled_gemm<true, false>(sp, gemm::StoreEpi{sim.data(), P, PP}, stream);
      // 3. Sinkhorn: each problem's form by monce.inc's rule, then both kernels
      // (each skips the other's problems), in slices of iterations.
      max_abs_offdiag_kernel<<<unsigned(nz), kThreads, 0, stream>>>(sim.data(), P, maxabs.data());
      MGHF_CUDA_LAUNCH_CHECK();
      MGHF_CUDA_CHECK(cudaMemcpyAsync(h_maxabs.data(), maxabs.data(), size_t(nz) * sizeof(float),
                                      cudaMemcpyDeviceToHost, stream));
      MGHF_CUDA_CHECK(cudaStreamSynchronize(stream));
      for (int64_t zz = 0; zz < nz; ++zz)
        h_logd[size_t(zz)] = sinkhorn_in_log_domain(o.monce, P, double(h_maxabs[size_t(zz)])) ? 1 : 0;
      MGHF_CUDA_CHECK(cudaMemcpyAsync(logd.data(), h_logd.data(), size_t(nz) * sizeof(int),
                                      cudaMemcpyHostToDevice, stream));
      kernel_matrix_kernel<<<blocks_for(nz * PP, kThreads, 1 << 16), kThreads, 0, stream>>>(
          sim.data(), P, nz * PP, o.monce.eps_ot, kdiag, logd.data(), K.data());
      MGHF_CUDA_LAUNCH_CHECK();
      for (int t0 = 1; t0 <= T; t0 += kIterSlice) {
        const int t1 = std::min(T, t0 + kIterSlice - 1);
        sinkhorn_kernel<<<unsigned(nz), kProblemThreads, 0, stream>>>(P, T, t0, t1, logd.data(),
                                                                        K.data(), U.data(), V.data());
        MGHF_CUDA_LAUNCH_CHECK();
        sinkhorn_log_kernel<<<unsigned(nz), kProblemThreads, 0, stream>>>(
            P, T, t0, t1, o.monce.eps_ot, logd.data(), sim.data(), U.data(), V.data());
        MGHF_CUDA_LAUNCH_CHECK();
        checkpoint();
      }
      // 4. Logits, l_i, Σ_i l_i per problem.
      logits_kernel<<<dim3(unsigned((P + kWarps - 1) / kWarps), unsigned(nz)), kThreads, 0,
                      stream>>>(c, logd.data(), sim.data(), K.data(), U.data(), V.data(), backward,
                                L.data(), pr.data(), rowsum.data(), du.data());
      MGHF_CUDA_LAUNCH_CHECK();
      problem_sum_kernel<<<blocks_for(nz, 128, int64_t(1) << 30), 128, 0, stream>>>(
          L.data(), P, nz, d_per_map.data() + bk0);
      MGHF_CUDA_LAUNCH_CHECK();
      if (!backward) continue;
      // 5. ∂sim (×g0).
      if (sgrad) {
        for (int t_hi = T; t_hi >= 1; t_hi -= kIterSlice) {
          const int t_lo = std::max(1, t_hi - kIterSlice + 1);
          sinkhorn_backward_kernel<<<unsigned(nz), kProblemThreads, 0, stream>>>(
              c, t_hi, t_lo, logd.data(), K.data(), pr.data(), U.data(), V.data(), du.data(),
              dv.data(), DS.data(), DR.data());
          MGHF_CUDA_LAUNCH_CHECK();
          sinkhorn_log_backward_kernel<<<unsigned(nz), kProblemThreads, 0, stream>>>(
              c, t_hi, t_lo, logd.data(), sim.data(), pr.data(), U.data(), V.data(), du.data(),
              dv.data(), DS.data(), DR.data());
          MGHF_CUDA_LAUNCH_CHECK();
          checkpoint();
        }
      }
      dsim_kernel<<<dim3(blocks_for(PP, kThreads, int64_t(1) << 30), unsigned(nz)), kThreads, 0,
                    stream>>>(c, logd.data(), sim.data(), K.data(), pr.data(), rowsum.data(),
                              U.data(), V.data(), DS.data(), DR.data(), dsim.data());
      MGHF_CUDA_LAUNCH_CHECK();
      // 6. ∂q = ∂sim·g [P×D], into q's storage (q is not needed any more).
      gemm::Problem dp;
      dp.m = P;
      dp.n = D;
      dp.k = P;
      dp.A = dsim.data();
      dp.lda = P;
      dp.strideA = PP;
      dp.B = g.data();
      dp.ldb = D;
      dp.strideB = int64_t(P) * D;
      dp.batches = int(nz);
      gemm::launch_tiled_gemm<false, false>(dp, gemm::StoreEpi{q.data(), D, int64_t(P) * D},
                                            stream);
      // 7. Normalisation backward, then each pixel gathers its patches.
      norm_coef_kernel<<<dim3(unsigned(P), unsigned(nz)), kThreads, 0, stream>>>(
          S, pg, bk0, d_y0.data(), d_x0.data(), q.data(), qn.data(), cinv.data(), ccoef.data());
      MGHF_CUDA_LAUNCH_CHECK();
      scatter_kernel<<<dim3(blocks_for(int64_t(H) * W, kThreads, int64_t(1) << 30), unsigned(nz)),
                       kThreads, 0, stream>>>(S, pg, bk0, d_grid_index.data(), q.data(),
                                              cinv.data(), ccoef.data(), dS);
      MGHF_CUDA_LAUNCH_CHECK();
      checkpoint();
    }
    MGHF_CUDA_CHECK(cudaMemcpyAsync(per_map.data(), d_per_map.data(),
                                    per_map.size() * sizeof(double), cudaMemcpyDeviceToHost,
                                    stream));
    MGHF_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  double total = 0;
  for (double v : per_map) total += v;  // fixed order, as lip_loss
  return total / (double(B) * N);
}

}  // namespace cuda
}  // namespace mghf
