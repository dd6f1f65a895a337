// Minimal test helpers: no framework, so the core tests build anywhere CMake does.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dfe_weights.h"
#include "train/head_weights.h"

namespace mghf_test {

inline int& failures() {
  static int f = 0;
  return f;
}

#define CHECK(cond, ...)                                               \
  do {                                                                 \
    if (!(cond)) {                                                     \
      ++mghf_test::failures();                                         \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);      \
      std::printf(__VA_ARGS__);                                        \
      std::printf("\n");                                               \
    }                                                                  \
  } while (0)

// Runs every group, or only the one named by argv[1] (ctest runs one group per
// test); 2 for an unknown name, 1 when a CHECK failed, else 0.
inline int run_groups(const std::map<std::string, std::function<void()>>& groups, int argc,
                      char** argv) {
  int ran = 0;
  for (const auto& [name, fn] : groups) {
    if (argc > 1 && name != argv[1]) continue;
    std::printf("== %s\n", name.c_str());
    fn();
    ++ran;
  }
  if (ran == 0) {
    std::printf("unknown test group %s\n", argc > 1 ? argv[1] : "");
    return 2;
  }
  std::printf(failures() ? "FAILED (%d)\n" : "ok\n", failures());
  return failures() ? 1 : 0;
}

// Deterministic xorshift generator: tests must not depend on the platform's <random>.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * double(next() >> 11) * 0x1.0p-53; }
  template <class T>
  std::vector<T> vec(size_t n, double lo, double hi) {
    std::vector<T> v(n);
    for (auto& x : v) x = T(uniform(lo, hi));
    return v;
  }
};

template <class A, class B>
double dot(const A& a, const B& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

// ‖a − b‖ / ‖b‖
template <class A, class B>
double rel_l2(const A* a, const B* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / (std::sqrt(den) + 1e-300);
}

// Directional finite-difference check: f(x) a scalar function, g its claimed
// gradient at x. Compares (f(x+εv) − f(x−εv)) / 2ε with ⟨g, v⟩ along a random v.
template <class F>
double directional_error(F&& f, std::vector<double> x, const std::vector<double>& g, Rng& rng,
                         double eps = 1e-6) {
  std::vector<double> v = rng.vec<double>(x.size(), -1, 1);
  std::vector<double> xp = x, xm = x;
  for (size_t i = 0; i < x.size(); ++i) {
    xp[i] += eps * v[i];
    xm[i] -= eps * v[i];
  }
  const double fd = (f(xp) - f(xm)) / (2 * eps);
  const double an = dot(g, v);
  return std::fabs(fd - an) / (std::fabs(an) + std::fabs(fd) + 1e-12);
}

// DFE weights uniform in ±scale/√fan_in (PyTorch's default bound at scale 1).
template <class T>
mghf::DfeWeights<T> random_weights(const mghf::DfeArchitecture& a, uint64_t seed, double scale = 1.0) {
  mghf::DfeWeights<T> w(a);
  Rng rng(seed);
  w.for_each([&](const std::string& name, mghf::Buffer<T>& b) {
    const double bound = scale / std::sqrt(mghf::dfe_fan_in(name, a));
    for (size_t i = 0; i < b.size(); ++i) b[i] = T(rng.uniform(-bound, bound));
  });
  return w;
}

// Head weights uniform in ±scale/√fan_in (PyTorch's default bound at scale 1).
template <class T>
mghf::HeadWeights<T> random_head(int N, int classes, uint64_t seed, double scale = 1.0) {
  mghf::HeadWeights<T> h(N, classes);
  Rng rng(seed);
  h.for_each([&](const std::string& name, mghf::Buffer<T>& b) {
    const double bound = scale / std::sqrt(mghf::head_fan_in(name, N));
    for (size_t i = 0; i < b.size(); ++i) b[i] = T(rng.uniform(-bound, bound));
  });
  return h;
}

}  // namespace mghf_test
