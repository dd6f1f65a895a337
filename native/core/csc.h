// Content-style consistency (SPEC §5) on the kept, reweighted maps
// G^w[b,i] = w_i·G[b, sel_i], S^w likewise: MSE, Pearson correlation, channel
// Gram. Forward values and the gradient into ∂L/∂S (accumulated, scaled).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "buffer.h"
#include "kernels_table.h"
#include "parallel.h"

namespace mghf {

constexpr double kCorrEps = 1.1920929e-07;  // float32 epsilon, as CDDFuse's cc

struct CscParts {
  double mse = 0, corr = 0, gram = 0;
};

struct CscWeights {
  double beta1, beta2, beta3;
  double scale;  // Γ2: ∂L/∂L_csc
};

// sel and w are [B×M]. Adds Γ2·∂L_csc/∂S into dS ([B×N×P]) when dS is not null; with
// `by_kept`, dS is instead [B×M×P], the gradient of the b-th sample's i-th kept map at (b·M + i)·P.
//
// No gathered copy of the kept maps: S^w, G^w and ∂S^w as [M, H·W] buffers were the call's largest
// temporaries (192 MiB at 512²). MSE and correlation read S and G in place, forming w·s in the
// working precision as SPEC §4 writes it (the same float products a gather made); the Gram terms
// gather one slice of kGramSlice pixels per task, the width of the Gram kernel's float partial
// sums, so the result is the gathered kernel's, bit for bit.
template <class T, class Kn>
CscParts csc_loss(const T* G, const T* S, int B, int N, int64_t P, int M, const int* sel,
                  const double* w, const CscWeights& cw, T* dS, bool by_kept = false) {
  CscParts out;
  const bool do_mse = cw.beta1 != 0, do_corr = cw.beta2 != 0, do_gram = cw.beta3 != 0;
  std::vector<double> mse_bi(static_cast<size_t>(M)), corr_bi(static_cast<size_t>(M));
  std::vector<double> Cs(size_t(M) * M), Cg(size_t(M) * M);
  std::vector<T> A(size_t(M) * M);
  const int64_t slices = (P + kGramSlice - 1) / kGramSlice;
  std::vector<double> part_s(do_gram ? size_t(slices) * M * M : 0), part_g(part_s.size());
  const double BMP = double(B) * M * double(P);
  for (int b = 0; b < B; ++b) {
    auto map = [&](const T* X, int64_t i) { return X + (int64_t(b) * N + sel[b * M + i]) * P; };
    auto grad_of = [&](int64_t i) {
      return by_kept ? dS + (int64_t(b) * M + i) * P : dS + (int64_t(b) * N + sel[b * M + i]) * P;
    };
    // MSE and correlation, one kept map per task (P terms: double sums).
    parallel_for(M, [&](int64_t i) {
      const T* s = map(S, i);
      const T* g = map(G, i);
      T* ds = dS ? grad_of(i) : nullptr;
      const T wi = T(w[b * M + i]);
      if (do_mse) {
        double acc = 0;
        for (int64_t p = 0; p < P; ++p) {
          const double d = double(wi * s[p]) - double(wi * g[p]);
          acc += d * d;
        }
        mse_bi[size_t(i)] = acc;
        if (ds) {
          const T k = T(cw.scale * cw.beta1 * 2.0 / BMP) * wi;
          for (int64_t p = 0; p < P; ++p) ds[p] += k * (wi * s[p] - wi * g[p]);
        }
      }
      if (do_corr) {
        double mx = 0, my = 0;
        for (int64_t p = 0; p < P; ++p) {
          mx += double(wi * g[p]);
          my += double(wi * s[p]);
        }
        mx /= double(P);
        my /= double(P);
        double sxy = 0, sxx = 0, syy = 0;
        for (int64_t p = 0; p < P; ++p) {
          const double dx = double(wi * g[p]) - mx, dy = double(wi * s[p]) - my;
          sxy += dx * dy;
          sxx += dx * dx;
          syy += dy * dy;
        }
        const double sx = std::sqrt(sxx), sy = std::sqrt(syy), den = sx * sy + kCorrEps;
        const double r = sxy / den;
        corr_bi[size_t(i)] = r < -1 ? -1 : (r > 1 ? 1 : r);
        // The clamp passes the gradient on [−1, 1] (inclusive, as PyTorch);
        // ∂sqrt at 0 is taken as 0 (SPEC §5), which drops the second term.
        if (ds && r >= -1 && r <= 1) {
          const double k = -cw.scale * cw.beta2 / (double(B) * M) * double(wi);
          const double a = 1.0 / den;
          const double c = sy > 0 ? sxy * sx / (sy * den * den) : 0.0;
          for (int64_t p = 0; p < P; ++p)
            ds[p] += T(k * (a * (double(wi * g[p]) - mx) - c * (double(wi * s[p]) - my)));
        }
      }
    });
    for (int i = 0; i < M; ++i) {
      out.mse += mse_bi[size_t(i)];
      out.corr += corr_bi[size_t(i)];
    }
    if (do_gram) {
      // One slice [M, n] of X^w = w·X, gathered into the calling thread's buffer.
      auto gather = [&](const T* X, int64_t p0, int64_t n, std::vector<T>& buf) {
        buf.resize(size_t(M) * n);
        for (int i = 0; i < M; ++i) {
          const T wi = T(w[b * M + i]);
          const T* x = map(X, i) + p0;
          T* dst = buf.data() + size_t(i) * n;
          for (int64_t p = 0; p < n; ++p) dst[p] = wi * x[p];
        }
      };
      parallel_for(slices, [&](int64_t si) {
        static thread_local std::vector<T> buf;
        const int64_t p0 = si * kGramSlice, n = std::min<int64_t>(kGramSlice, P - p0);
        gather(S, p0, n, buf);
        Kn::gram(M, n, buf.data(), part_s.data() + size_t(si) * M * M);
        gather(G, p0, n, buf);
        Kn::gram(M, n, buf.data(), part_g.data() + size_t(si) * M * M);
      });
      for (size_t e = 0; e < Cs.size(); ++e) {  // slices in order: the same sum for any thread count
        double as = 0, ag = 0;
        for (int64_t si = 0; si < slices; ++si) {
          as += part_s[size_t(si) * M * M + e];
          ag += part_g[size_t(si) * M * M + e];
        }
        Cs[e] = as;
        Cg[e] = ag;
      }
      const double norm = double(M) * double(P);  // Gram(X) = X·Xᵀ / (M·H·W)
      double acc = 0;
      for (size_t e = 0; e < Cs.size(); ++e) {
        const double d = (Cs[e] - Cg[e]) / norm;
        acc += d * d;
      }
      out.gram += acc / M;
      if (dS) {
        // ∂L/∂S^w = (2 / (M·P)) · E'·S^w with E' = Γ2·β3·2(Gram_s − Gram_g)/(B·M), slice by slice.
        for (size_t e = 0; e < Cs.size(); ++e)
          A[e] = T(cw.scale * cw.beta3 * 2.0 * (Cs[e] - Cg[e]) / norm / (double(B) * M) * 2.0 / norm);
        parallel_for(slices, [&](int64_t si) {
          static thread_local std::vector<T> xs, dx;
          const int64_t p0 = si * kGramSlice, n = std::min<int64_t>(kGramSlice, P - p0);
          gather(S, p0, n, xs);
          dx.resize(size_t(M) * n);
          Kn::conv1x1(M, M, n, A.data(), nullptr, xs.data(), dx.data(), false);
          for (int i = 0; i < M; ++i) {
            const T wi = T(w[b * M + i]);
            T* ds = grad_of(i) + p0;
            const T* d = dx.data() + size_t(i) * n;
            for (int64_t p = 0; p < n; ++p) ds[p] += wi * d[p];
          }
        });
      }
    }
  }
  out.mse /= BMP;
  out.corr = 1.0 - out.corr / (double(B) * M);
  out.gram /= B;
  return out;
}

}  // namespace mghf
