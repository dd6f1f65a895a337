// Local information preservation (SPEC §6): modulated PatchNCE on every
// channel of G and S, with its gradient into ∂L/∂S. One task per
// (sample, channel): patch embeddings, the similarity product, monce.inc, and
// back through the normalisation into the overlapping patches of that
// channel's plane, which no other task touches.
#pragma once
#include <cmath>
#include <functional>
#include <cstdint>
#include <vector>

#include "lip_params.h"
#include "numeric_checks.h"
#include "parallel.h"

namespace mghf {

struct PatchGrid {
  int in_grid = 0;             // n_r · n_c
  std::vector<int> y0, x0;     // origins of the kept patches, raster order
};

// Rows start at 0, t, 2t, … while ≤ H − s; past P_max keep raster indices
// floor(m·P / P_max) (SPEC §6).
inline PatchGrid patch_grid(int H, int W, const LipOptions& o) {
  PatchGrid g;
  const int nr = (H - o.patch) / o.stride + 1, nc = (W - o.patch) / o.stride + 1;
  g.in_grid = nr * nc;
  const int kept = g.in_grid > o.pmax ? o.pmax : g.in_grid;
  for (int m = 0; m < kept; ++m) {
    const int idx = g.in_grid > o.pmax ? int(int64_t(m) * g.in_grid / o.pmax) : m;
    g.y0.push_back(idx / nc * o.stride);
    g.x0.push_back(idx % nc * o.stride);
  }
  return g;
}

constexpr double kPatchNormEps = 1e-7;

// One (sample, channel) task's buffers: embeddings, similarities, their
// gradients and monce.inc's work space.
template <class T>
struct LipScratch {
  std::vector<T> q, g, sim, dsim, dq, kwork;
  std::vector<double> qn, work;
};

// Returns L_lip = (1/(B·N)) Σ_{b,k} Σ_i l_i; adds scale·∂L_lip/∂S into dS. With `on_map`
// instead, each map's gradient is accumulated in a plane of the calling thread and handed to
// on_map(b·N + k, plane) once that map is done (the loss then owns where it goes; dS unused).
// o.monce.cancel raised: the remaining maps are skipped, monce stops between
// iterations, and it throws E_ABORTED.
template <class T, class Kn>
double lip_loss(const T* G, const T* S, int B, int N, int H, int W, const LipOptions& o,
                double scale, T* dS,
                const std::function<void(int64_t, const T*)>* on_map = nullptr) {
  const PatchGrid grid = patch_grid(H, W, o);
  const int P = int(grid.y0.size()), s = o.patch, D = s * s;
  const int64_t plane = int64_t(H) * W;
  std::vector<double> per_map(size_t(B) * N);
  const double g0 = scale / (double(B) * N);
  parallel_for(int64_t(B) * N, [&](int64_t bk) {
    if (cancel_requested(o.monce.cancel)) return;
    const T* splane = S + bk * plane;
    const T* gplane = G + bk * plane;
    // Each thread keeps its buffers from call to call: a fresh megabyte per
    // task was page faults, not arithmetic.
    static thread_local LipScratch<T> scratch;
    LipScratch<T>& sc = scratch;
    sc.q.resize(size_t(P) * D);
    sc.g.resize(size_t(P) * D);
    sc.sim.resize(size_t(P) * P);
    sc.qn.resize(size_t(P));
    T* q = sc.q.data();
    T* g = sc.g.data();
    T* sim = sc.sim.data();
    double* qn = sc.qn.data();
    // q_i = vec(patch) / (‖vec(patch)‖ + 1e-7); g_j likewise.
    auto embed = [&](const T* src, T* dst, double* norms) {
      for (int i = 0; i < P; ++i) {
        T* row = dst + size_t(i) * D;
        for (int dy = 0; dy < s; ++dy)
          std::copy(src + int64_t(grid.y0[i] + dy) * W + grid.x0[i],
                    src + int64_t(grid.y0[i] + dy) * W + grid.x0[i] + s, row + dy * s);
        const double n = std::sqrt(Kn::dot_wide(D, row, row));
        if (norms) norms[i] = n;
        const T inv = T(1.0 / (n + kPatchNormEps));
        for (int d = 0; d < D; ++d) row[d] *= inv;
      }
    };
    embed(splane, q, qn);
    embed(gplane, g, nullptr);
    Kn::matmul_nt(P, D, P, q, D, g, D, sim, P, false);  // sim = q·gᵀ
    const bool want_grad = dS || on_map;
    if (want_grad) sc.dsim.resize(size_t(P) * P);
    per_map[size_t(bk)] =
        Kn::monce(P, sim, o.monce, g0, want_grad ? sc.dsim.data() : nullptr, sc.work, sc.kwork);
    if (!want_grad || cancel_requested(o.monce.cancel)) return;
    // ∂/∂q = ∂sim · g, then through q = v / (‖v‖ + δ):
    // ∂v = ∂q/(n+δ) − v·(v·∂q)/(n·(n+δ)²), the second term 0 where n = 0.
    sc.dq.resize(size_t(P) * D);
    T* dq = sc.dq.data();
    Kn::matmul(P, P, D, sc.dsim.data(), g, D, dq, D, false);
    static thread_local std::vector<T> own_plane;
    if (on_map) own_plane.assign(size_t(plane), T(0));
    T* dplane = on_map ? own_plane.data() : dS + bk * plane;
    for (int i = 0; i < P; ++i) {
      const T* dqi = dq + size_t(i) * D;
      const double n = qn[size_t(i)], inv = 1.0 / (n + kPatchNormEps);
      // v·∂q/(n·(n+δ)²) = q_i·∂q/(n·(n+δ)): q_i = v/(n+δ) is contiguous, v is not.
      const double c =
          n > 0 ? Kn::dot_wide(D, q + size_t(i) * D, dqi) / (n * (n + kPatchNormEps)) : 0.0;
      for (int dy = 0; dy < s; ++dy) {
        const T* v = splane + int64_t(grid.y0[i] + dy) * W + grid.x0[i];
        T* dv = dplane + int64_t(grid.y0[i] + dy) * W + grid.x0[i];
        for (int dx = 0; dx < s; ++dx)
          dv[dx] += T(double(dqi[dy * s + dx]) * inv - double(v[dx]) * c);
      }
    }
    if (on_map) (*on_map)(bk, dplane);
  });
  throw_if_cancelled(o.monce.cancel);
  double total = 0;
  for (double v : per_map) total += v;  // fixed order
  return total / (double(B) * N);
}

}  // namespace mghf
