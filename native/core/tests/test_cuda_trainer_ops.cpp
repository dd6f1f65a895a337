// CPU vs CUDA parity of the trainer ops of issue 16 (cuda/trainer_ops.h
// against native/core/nn/): host data uploaded, each launcher run, results
// downloaded and compared with the CPU kernels the ops run. Small shapes, so
// it also runs in the host emulator (cuda_trainer_ops_parity_emu). Exit code
// 77: no usable CUDA device.
#include <cstdio>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/trainer_ops.h"
#include "nn/conv2d.h"
#include "nn/resize.h"
#include "nn/trainer_kernels.h"
#include "test_util.h"
#include "train/adam.h"

using namespace mghf;
using mghf_test::Rng;

namespace {

template <class T>
struct Dev {
  cuda::DeviceBuffer<T> buf;
  explicit Dev(const std::vector<T>& h) : buf(h.size()) {
    MGHF_CUDA_CHECK(cudaMemcpy(buf.data(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  explicit Dev(size_t n) : buf(n) {}
  std::vector<T> get() const {
    std::vector<T> h(buf.size());
    MGHF_CUDA_CHECK(cudaMemcpy(h.data(), buf.data(), h.size() * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  T* p() { return buf.data(); }
};

// max |a − b| / max(1, max |b|)
double rel(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 1, worst = 0;
  for (float v : b) scale = std::max(scale, double(std::fabs(v)));
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
  return worst / scale;
}

constexpr double kTol = 2e-6;  // float sums in a different order

void conv2d_parity() {
  Rng rng(21);
  for (int k : {1, 3, 5})
    for (int stride : {1, 2})
      for (bool reflect : {false, true})
        for (int groups : {1, 2}) {
          nn::Conv2dShape s;
          s.B = 2, s.Ci = 4, s.H = 7, s.W = 6, s.Co = 4, s.k = k, s.stride = stride, s.groups = groups;
          s.reflect = reflect;
          const size_t nx = size_t(s.B) * s.Ci * s.H * s.W, nw = size_t(s.Co) * s.cig() * k * k,
                       ny = size_t(s.B) * s.Co * s.Ho() * s.Wo();
          auto x = rng.vec<float>(nx, -1, 1), w = rng.vec<float>(nw, -1, 1), b = rng.vec<float>(size_t(s.Co), -1, 1),
               dy = rng.vec<float>(ny, -1, 1);
          std::vector<float> y(ny), dx(nx), dw(nw), db(size_t(s.Co));
          nn::conv2d_fast(s, x.data(), w.data(), b.data(), y.data());
          nn::conv2d_backward_fast(s, x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data());
          Dev<float> gx(x), gw(w), gb(b), gdy(dy), gy(ny), gdx(nx), gdw(nw), gdb(size_t(s.Co));
          cuda::conv2d_forward(s, gx.p(), gw.p(), gb.p(), gy.p(), nullptr);
          cuda::conv2d_backward(s, gx.p(), gw.p(), gdy.p(), gdx.p(), gdw.p(), gdb.p(), nullptr);
          const char* pad = reflect ? "reflect" : "zero";
          CHECK(rel(gy.get(), y) < kTol, "y k=%d s=%d %s g=%d: %g", k, stride, pad, groups, rel(gy.get(), y));
          CHECK(rel(gdx.get(), dx) < kTol, "dx k=%d s=%d %s g=%d: %g", k, stride, pad, groups, rel(gdx.get(), dx));
          CHECK(rel(gdw.get(), dw) < kTol, "dw k=%d s=%d %s g=%d: %g", k, stride, pad, groups, rel(gdw.get(), dw));
          CHECK(rel(gdb.get(), db) < kTol, "db k=%d s=%d %s g=%d: %g", k, stride, pad, groups, rel(gdb.get(), db));
        }
}

void elementwise_parity() {
  Rng rng(22);
  const int B = 2, C = 3, H = 4, W = 5, r = 2;
  const size_t n = size_t(B) * C * r * r * H * W;
  auto x = rng.vec<float>(n, -1, 1), y = rng.vec<float>(n, -1, 1), dy = rng.vec<float>(n, -1, 1);
  y[3] = x[3];  // sign(0) = 0
  std::vector<float> ps(n), pu(n), lr(n), lrb(n), ad(n), l1dx(n), chdx(n);
  nn::pixel_shuffle_copy(B, C, H, W, r, x.data(), ps.data(), false);
  nn::pixel_shuffle_copy(B, C, H, W, r, x.data(), pu.data(), true);
  nn::leaky_relu(int64_t(n), 0.2f, x.data(), lr.data());
  nn::leaky_relu_backward(int64_t(n), 0.2f, x.data(), dy.data(), lrb.data());
  nn::add_scaled(int64_t(n), -0.5f, x.data(), y.data(), ad.data());
  const double l1 = nn::l1_loss(int64_t(n), x.data(), y.data(), l1dx.data());
  const double ch = nn::charbonnier_loss(int64_t(n), 1e-3, x.data(), y.data(), chdx.data());
  Dev<float> gx(x), gy(y), gdy(dy), o1(n), o2(n), o3(n), o4(n), o5(n), o6(n), o7(n);
  Dev<double> loss1(size_t(1)), loss2(size_t(1));
  cuda::pixel_shuffle(B, C, H, W, r, gx.p(), o1.p(), false, nullptr);
  cuda::pixel_shuffle(B, C, H, W, r, gx.p(), o2.p(), true, nullptr);
  cuda::leaky_relu(int64_t(n), 0.2f, gx.p(), o3.p(), nullptr);
  cuda::leaky_relu_backward(int64_t(n), 0.2f, gx.p(), gdy.p(), o4.p(), nullptr);
  cuda::add_scaled(int64_t(n), -0.5f, gx.p(), gy.p(), o5.p(), nullptr);
  cuda::l1_loss(int64_t(n), gx.p(), gy.p(), o6.p(), loss1.p(), nullptr);
  cuda::charbonnier_loss(int64_t(n), 1e-3, gx.p(), gy.p(), o7.p(), loss2.p(), nullptr);
  CHECK(o1.get() == ps, "pixel shuffle");
  CHECK(o2.get() == pu, "pixel unshuffle");
  CHECK(o3.get() == lr, "leaky relu");
  CHECK(o4.get() == lrb, "leaky relu backward");
  CHECK(o5.get() == ad, "add");
  CHECK(o6.get() == l1dx, "l1 dx");
  CHECK(rel(o7.get(), chdx) < 1e-7, "charbonnier dx");
  CHECK(std::fabs(loss1.get()[0] - l1) < 1e-12, "l1 %.17g vs %.17g", loss1.get()[0], l1);
  CHECK(std::fabs(loss2.get()[0] - ch) < 1e-12, "charbonnier %.17g vs %.17g", loss2.get()[0], ch);
}

void resize_parity() {
  Rng rng(23);
  for (double scale : {0.25, 0.5, 2.0, 3.0}) {
    const int planes = 3, H = 8, W = 9, oh = int(std::ceil(H * scale)), ow = int(std::ceil(W * scale));
    const nn::ResizeAxis ah = nn::resize_axis(H, oh, scale), aw = nn::resize_axis(W, ow, scale);
    auto x = rng.vec<float>(size_t(planes) * H * W, -1, 1), dy = rng.vec<float>(size_t(planes) * oh * ow, -1, 1);
    std::vector<float> y(dy.size()), dx(x.size());
    nn::resize_forward(planes, ah, aw, x.data(), y.data());
    nn::resize_adjoint(planes, ah, aw, dy.data(), dx.data());
    Dev<float> gx(x), gdy(dy), gy(y.size()), gdx(dx.size());
    cuda::ResizeTables tables;
    cuda::resize_forward(planes, ah, aw, gx.p(), gy.p(), tables, nullptr);
    cuda::resize_adjoint(planes, ah, aw, gdy.p(), gdx.p(), tables, nullptr);
    CHECK(rel(gy.get(), y) < kTol, "resize ×%g: %g", scale, rel(gy.get(), y));
    CHECK(rel(gdx.get(), dx) < kTol, "resize adjoint ×%g: %g", scale, rel(gdx.get(), dx));
  }
}

void adam_parity() {
  Rng rng(24);
  const size_t n = 1000;
  auto p = rng.vec<float>(n, -1, 1);
  std::vector<float> m(n, 0.f), v(n, 0.f);
  Dev<float> gp(p), gm(m), gv(v);
  AdamConfig c;
  c.lr = 1e-2;
  for (int step = 1; step <= 3; ++step) {
    auto g = rng.vec<float>(n, -1, 1);
    adam_update(int64_t(n), p.data(), m.data(), v.data(), g.data(), c.lr, c, step);
    Dev<float> gg(g);
    cuda::adam_step(int64_t(n), gp.p(), gm.p(), gv.p(), gg.p(), c.lr, c.beta1, c.beta2, c.eps, step, nullptr);
  }
  CHECK(rel(gp.get(), p) < 1e-7, "adam p: %g", rel(gp.get(), p));
  CHECK(rel(gm.get(), m) < 1e-7, "adam m");
  CHECK(rel(gv.get(), v) < 1e-7, "adam v");
}

}  // namespace

int main(int argc, char** argv) {
  const CudaStatus st = cuda_status(0);
  if (!st.available) {
    std::printf("SKIP: no usable CUDA device: %s\n", st.reason.c_str());
    return 77;
  }
  std::printf("CUDA on %s\n", st.device_name.c_str());
  std::map<std::string, std::function<void()>> groups = {
      {"conv2d", conv2d_parity},
      {"elementwise", elementwise_parity},
      {"resize", resize_parity},
      {"adam", adam_parity},
  };
  return mghf_test::run_groups(groups, argc, argv);
}
