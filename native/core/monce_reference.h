// The plain (default-target) build of monce.inc, for the reference kernels.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "lip_params.h"

namespace mghf {
namespace ref {

inline void dots_kv(int rows, int n, const double* k, const double* x, double* out) {
  for (int r = 0; r < rows; ++r) {
    double acc = 0;
    for (int i = 0; i < n; ++i) acc += k[size_t(r) * n + i] * x[i];
    out[r] = acc;
  }
}
inline void axpys_kv(int rows, int n, const double* a, const double* k, double* y) {
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < n; ++i) y[i] += a[r] * k[size_t(r) * n + i];
}

inline void exp_n(int64_t n, double* x) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}
inline void log_n(int64_t n, double* x) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::log(x[i]);
}

inline void gemm_tn_d(int M, int N, int K, const double* A, const double* B, double* C) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double acc = C[size_t(i) * N + j];
      for (int k = 0; k < K; ++k) acc += A[size_t(k) * M + i] * B[size_t(k) * N + j];
      C[size_t(i) * N + j] = acc;
    }
}

#include "monce.inc"
}  // namespace ref
}  // namespace mghf
