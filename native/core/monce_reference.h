// The plain (default-target) build of monce.inc, for the reference kernels.
#pragma once
#include <cmath>
#include <vector>

#include "lip_params.h"

namespace mghf {
namespace ref {

template <class S>
double dot_kv(int n, const S* k, const double* x) {
  double acc = 0;
  for (int i = 0; i < n; ++i) acc += double(k[i]) * x[i];
  return acc;
}
template <class S>
void axpy_kv(int n, double a, const S* k, double* y) {
  for (int i = 0; i < n; ++i) y[i] += a * double(k[i]);
}

#include "monce.inc"
}  // namespace ref
}  // namespace mghf
