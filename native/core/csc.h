// Content-style consistency (SPEC §5) on the kept, reweighted maps
// G^w[b,i] = w_i·G[b, sel_i], S^w likewise: MSE, Pearson correlation, channel
// Gram. Forward values and the gradient into ∂L/∂S (accumulated, scaled).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "buffer.h"
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

// sel and w are [B×M]. Adds Γ2·∂L_csc/∂S into dS ([B×N×P]) when dS is not null.
template <class T, class Kn>
CscParts csc_loss(const T* G, const T* S, int B, int N, int64_t P, int M, const int* sel,
                  const double* w, const CscWeights& cw, T* dS) {
  CscParts out;
  const bool do_mse = cw.beta1 != 0, do_corr = cw.beta2 != 0, do_gram = cw.beta3 != 0;
  Buffer<T> Xs{size_t(M) * P}, Xg{size_t(M) * P}, dX{dS && do_gram ? size_t(M) * P : 0};
  std::vector<double> mse_bi(static_cast<size_t>(M)), corr_bi(static_cast<size_t>(M));
  std::vector<double> Cs(size_t(M) * M), Cg(size_t(M) * M);
  std::vector<T> A(size_t(M) * M);
  const double BMP = double(B) * M * double(P);
  for (int b = 0; b < B; ++b) {
    // Gather and scale: S^w = w·S in the working precision, as SPEC §4 writes it.
    parallel_for(M, [&](int64_t i) {
      const T wi = T(w[b * M + i]);
      const T* g = G + (int64_t(b) * N + sel[b * M + i]) * P;
      const T* s = S + (int64_t(b) * N + sel[b * M + i]) * P;
      T* xs = Xs.data() + i * P;
      T* xg = Xg.data() + i * P;
      for (int64_t p = 0; p < P; ++p) {
        xs[p] = wi * s[p];
        xg[p] = wi * g[p];
      }
    });
    // MSE and correlation, one kept map per task (P terms: double sums).
    parallel_for(M, [&](int64_t i) {
      const T* xs = Xs.data() + i * P;
      const T* xg = Xg.data() + i * P;
      T* ds = dS ? dS + (int64_t(b) * N + sel[b * M + i]) * P : nullptr;
      const T wi = T(w[b * M + i]);
      if (do_mse) {
        double acc = 0;
        for (int64_t p = 0; p < P; ++p) {
          const double d = double(xs[p]) - double(xg[p]);
          acc += d * d;
        }
        mse_bi[size_t(i)] = acc;
        if (ds) {
          const T k = T(cw.scale * cw.beta1 * 2.0 / BMP) * wi;
          for (int64_t p = 0; p < P; ++p) ds[p] += k * (xs[p] - xg[p]);
        }
      }
      if (do_corr) {
        double mx = 0, my = 0;
        for (int64_t p = 0; p < P; ++p) {
          mx += double(xg[p]);
          my += double(xs[p]);
        }
        mx /= double(P);
        my /= double(P);
        double sxy = 0, sxx = 0, syy = 0;
        for (int64_t p = 0; p < P; ++p) {
          const double dx = double(xg[p]) - mx, dy = double(xs[p]) - my;
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
            ds[p] += T(k * (a * (double(xg[p]) - mx) - c * (double(xs[p]) - my)));
        }
      }
    });
    for (int i = 0; i < M; ++i) {
      out.mse += mse_bi[size_t(i)];
      out.corr += corr_bi[size_t(i)];
    }
    if (do_gram) {
      Kn::gram(M, P, Xs.data(), Cs.data());
      Kn::gram(M, P, Xg.data(), Cg.data());
      const double norm = double(M) * double(P);  // Gram(X) = X·Xᵀ / (M·H·W)
      double acc = 0;
      for (size_t e = 0; e < Cs.size(); ++e) {
        const double d = (Cs[e] - Cg[e]) / norm;
        acc += d * d;
      }
      out.gram += acc / M;
      if (dS) {
        // ∂L/∂S^w = (2 / (M·P)) · E'·S^w with E' = Γ2·β3·2(Gram_s − Gram_g)/(B·M).
        for (size_t e = 0; e < Cs.size(); ++e)
          A[e] = T(cw.scale * cw.beta3 * 2.0 * (Cs[e] - Cg[e]) / norm / (double(B) * M) * 2.0 / norm);
        Kn::conv1x1(M, M, P, A.data(), nullptr, Xs.data(), dX.data(), false);
        parallel_for(M, [&](int64_t i) {
          const T wi = T(w[b * M + i]);
          T* ds = dS + (int64_t(b) * N + sel[b * M + i]) * P;
          const T* dx = dX.data() + i * P;
          for (int64_t p = 0; p < P; ++p) ds[p] += wi * dx[p];
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
