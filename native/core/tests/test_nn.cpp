// The trainer kernels of issue 16 (native/core/nn/): the fast conv2d (im2col +
// the per-ISA GEMM) against the plain loops of conv2d_reference, forward and
// every gradient, over kernel sizes, strides, paddings and groups; the resize
// adjoint identity <Ax, y> = <x, Aᵀy>; and a timing of the bench-size conv.
#include <chrono>
#include <cstdio>

#include "nn/conv2d.h"
#include "nn/resize.h"
#include "test_util.h"

using namespace mghf;
using mghf_test::Rng;

namespace {

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 1, worst = 0;
  for (float v : b) scale = std::max(scale, double(std::fabs(v)));
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
  return worst / scale;
}

void test_conv2d_fast_vs_reference() {
  Rng rng(7);
  for (int k : {1, 3, 5})
    for (int stride : {1, 2})
      for (bool reflect : {false, true})
        for (int groups : {1, 2}) {
          nn::Conv2dShape s;
          s.B = 2, s.Ci = 4, s.H = 7, s.W = 9, s.Co = 6, s.k = k, s.stride = stride, s.groups = groups;
          s.reflect = reflect;
          const size_t nx = size_t(s.B) * s.Ci * s.H * s.W, nw = size_t(s.Co) * s.cig() * k * k,
                       ny = size_t(s.B) * s.Co * s.Ho() * s.Wo();
          auto x = rng.vec<float>(nx, -1, 1), w = rng.vec<float>(nw, -1, 1), b = rng.vec<float>(size_t(s.Co), -1, 1),
               dy = rng.vec<float>(ny, -1, 1);
          std::vector<float> yr(ny), yf(ny), dxr(nx), dxf(nx), dwr(nw), dwf(nw), dbr(size_t(s.Co)), dbf(size_t(s.Co));
          nn::conv2d_reference(s, x.data(), w.data(), b.data(), yr.data());
          nn::conv2d_fast(s, x.data(), w.data(), b.data(), yf.data());
          nn::conv2d_backward_reference(s, x.data(), w.data(), dy.data(), dxr.data(), dwr.data(), dbr.data());
          nn::conv2d_backward_fast(s, x.data(), w.data(), dy.data(), dxf.data(), dwf.data(), dbf.data());
          const char* pad = reflect ? "reflect" : "zero";
          CHECK(max_rel(yf, yr) < 1e-6, "y k=%d s=%d %s g=%d: %g", k, stride, pad, groups, max_rel(yf, yr));
          CHECK(max_rel(dxf, dxr) < 1e-6, "dx k=%d s=%d %s g=%d: %g", k, stride, pad, groups, max_rel(dxf, dxr));
          CHECK(max_rel(dwf, dwr) < 1e-6, "dw k=%d s=%d %s g=%d: %g", k, stride, pad, groups, max_rel(dwf, dwr));
          CHECK(max_rel(dbf, dbr) < 1e-6, "db k=%d s=%d %s g=%d: %g", k, stride, pad, groups, max_rel(dbf, dbr));
          // The reference's backward is the adjoint of its forward: <conv(x), dy> = <x, dx> + <b, db>... for
          // the x part, with b = 0.
          std::vector<float> y0(ny);
          nn::conv2d_reference(s, x.data(), w.data(), static_cast<const float*>(nullptr), y0.data());
          const double l = mghf_test::dot(y0, dy), r = mghf_test::dot(x, dxr);
          CHECK(std::fabs(l - r) < 1e-4 * (1 + std::fabs(l)), "adjoint k=%d: %g vs %g", k, l, r);
        }
}

void test_resize_adjoint() {
  Rng rng(11);
  for (double scale : {0.25, 0.5, 2.0, 3.0}) {
    const int H = 8, W = 10, oh = int(std::ceil(H * scale)), ow = int(std::ceil(W * scale));
    const nn::ResizeAxis ah = nn::resize_axis(H, oh, scale), aw = nn::resize_axis(W, ow, scale);
    auto x = rng.vec<float>(size_t(3 * H * W), -1, 1), dy = rng.vec<float>(size_t(3 * oh * ow), -1, 1);
    std::vector<float> y(dy.size()), dx(x.size());
    nn::resize_forward(3, ah, aw, x.data(), y.data());
    nn::resize_adjoint(3, ah, aw, dy.data(), dx.data());
    const double l = mghf_test::dot(y, dy), r = mghf_test::dot(x, dx);
    CHECK(std::fabs(l - r) < 1e-5 * (1 + std::fabs(l)), "scale %g: %g vs %g", scale, l, r);
  }
}

// Not a check: the bench/NOTES.md numbers (batch 16, 64 → 64 channels, 32×32, 3×3).
void bench_conv2d() {
  nn::Conv2dShape s;
  s.B = 16, s.Ci = 64, s.Co = 64, s.H = 32, s.W = 32, s.k = 3;
  Rng rng(3);
  auto x = rng.vec<float>(size_t(s.B) * 64 * 32 * 32, -1, 1), w = rng.vec<float>(64 * 64 * 9, -0.05, 0.05);
  std::vector<float> y(x.size()), dx(x.size()), dw(w.size()), db(64);
  auto time = [&](const char* what, auto&& fn) {
    fn();
    const int reps = 10;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) fn();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    std::printf("%s: %.2f ms\n", what, ms);
  };
  time("conv2d forward", [&] { nn::conv2d_fast(s, x.data(), w.data(), nullptr, y.data()); });
  time("conv2d backward dx", [&] {
    nn::conv2d_backward_fast(s, x.data(), w.data(), y.data(), dx.data(), nullptr, nullptr);
  });
  time("conv2d backward dw+db", [&] {
    nn::conv2d_backward_fast(s, x.data(), w.data(), y.data(), nullptr, dw.data(), db.data());
  });
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::function<void()>> groups = {
      {"nn_conv2d_fast_vs_reference", test_conv2d_fast_vs_reference},
      {"nn_resize_adjoint", test_resize_adjoint},
      {"nn_bench_conv2d", bench_conv2d},
  };
  return mghf_test::run_groups(groups, argc, argv);
}
