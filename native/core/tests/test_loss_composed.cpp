// The loss composed from the ops (ops/loss_ops.h's compose_loss: the loss of every backend) on host
// tensors, against the fused loss it replaced on the CPU (tests/reference_loss.h, kept as the
// oracle), without Node: the same loss, parts and gradient bit for bit, whichever term is the last
// (the one that writes ∂L/∂S over S, attr overS); profile laps with the same stage names; a cancel
// raised before or during the call is E_ABORTED (during: the ops read the ambient flag inside the
// DFE and Sinkhorn); E_NUMERIC names the stage the fused loss names.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "backend.h"
#include "kernels_fast.h"
#include "ops/loss_ops.h"
#include "reference_loss.h"
#include "test_util.h"

using namespace mghf;
using mghf_test::Rng;

namespace {

ops::Value host(const std::vector<float>& x, const Shape& s) {
  ops::Value v;
  v.kind = ops::Kind::F32;
  v.dims = {s.B, s.C, s.H, s.W};
  v.f32 = ops::F32Data::view(x.data(), x.size());
  return v;
}

ops::Value weights_value(const DfeWeights<float>& w) {
  ops::Value v;
  v.kind = ops::Kind::Weights;
  v.weights = std::make_shared<const DfeWeights<float>>(w);
  return v;
}

struct Case {
  DfeWeights<float> w;
  Shape s;
  std::vector<float> sr, gt;
};

Case make_case(int N, int H, int W, uint64_t seed) {
  Case c{mghf_test::random_weights<float>(DfeArchitecture{N, 1, 2}, seed), Shape{2, 3, H, W}, {}, {}};
  Rng rng(seed + 1);
  c.gt = rng.vec<float>(size_t(c.s.size()), 0.03, 0.97);
  c.sr = c.gt;
  for (auto& v : c.sr) v += float(rng.uniform(-0.03, 0.03));
  return c;
}

std::string code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code() + std::string(": ") + e.what();
  }
  return "none";
}

void test_bits_and_profile() {
  Case c = make_case(8, 24, 20, 3);
  for (int variant = 0; variant < 7; ++variant) {
    LossOptions o;
    o.M = 4;
    o.lip.patch = 8;
    o.lip.stride = 4;
    o.lip.pmax = 12;
    o.lip.monce.iters = 6;
    o.profile = true;
    o.details = true;
    if (variant == 1) o.variant = Variant::N;
    if (variant == 2) o.gamma1 = 0, o.beta2 = 0, o.range = InputRange::Symmetric;
    if (variant == 3) o.gamma3 = 0, o.lip.monce.sinkhorn_grad = false;  // csc the last term
    if (variant == 4) o.gamma2 = 0;                                     // lip with no kept maps
    if (variant == 5) o.gamma2 = 0, o.gamma3 = 0;                       // mseTerm the last term
    if (variant == 6) o.selected = {1, 3, 5, 7, 0, 2, 4, 6};            // chosen maps
    const LossResult<float> want = reference_loss<float, FastKernels>(c.w, c.sr.data(), c.gt.data(), c.s, o);
    ops::ComposedLoss got = ops::compose_loss(host(c.sr, c.s), host(c.gt, c.s), weights_value(c.w), o);
    CHECK(got.r.loss == want.loss, "variant %d: loss %.17g vs %.17g", variant, got.r.loss, want.loss);
    CHECK(got.r.n == want.n && got.r.csc == want.csc && got.r.lip == want.lip && got.r.mse == want.mse &&
              got.r.corr == want.corr && got.r.gram == want.gram,
          "variant %d: the parts", variant);
    CHECK(got.r.skipped == want.skipped, "variant %d: skipped", variant);
    CHECK(got.r.selected == want.selected && got.r.importance == want.importance, "variant %d: details", variant);
    const bool same_grad = got.grad.kind == ops::Kind::F32 && got.grad.f32.size() == want.grad.size() &&
                           std::memcmp(got.grad.f32.data(), want.grad.data(), want.grad.size() * sizeof(float)) == 0;
    CHECK(same_grad, "variant %d: the gradient bit for bit", variant);
    // The CPU backend's loss is this composition.
    const LossResult<float> backend = cpu_backend().loss(c.w, c.sr.data(), c.gt.data(), c.s, o);
    CHECK(backend.loss == want.loss && backend.grad.size() == want.grad.size() &&
              std::memcmp(backend.grad.data(), want.grad.data(), want.grad.size() * sizeof(float)) == 0,
          "variant %d: the CPU backend's loss and gradient", variant);
    CHECK(got.r.timings.size() == want.timings.size(), "variant %d: %zu laps vs %zu", variant, got.r.timings.size(),
          want.timings.size());
    for (size_t i = 0; i < std::min(got.r.timings.size(), want.timings.size()); ++i)
      CHECK(got.r.timings[i].first == want.timings[i].first, "variant %d: lap %zu is %s, the fused loss's %s", variant, i,
            got.r.timings[i].first.c_str(), want.timings[i].first.c_str());
    std::printf("variant %d: loss %.9g, %zu laps, the same bits\n", variant, got.r.loss, got.r.timings.size());
  }
}

void test_cancel_and_stages() {
  Case c = make_case(16, 96, 96, 9);
  LossOptions o;
  o.M = 8;
  o.lip.monce.iters = 200;  // long enough for a raise 20 ms in to land inside a stage
  CancelFlag raised{true};
  o.cancel = &raised;
  const std::string before =
      code_of([&] { ops::compose_loss(host(c.sr, c.s), host(c.gt, c.s), weights_value(c.w), o); });
  CHECK(before.rfind("E_ABORTED", 0) == 0, "a raised flag: %s", before.c_str());
  CancelFlag later{false};
  o.cancel = &later;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread raiser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    later.store(true);
  });
  const std::string during =
      code_of([&] { ops::compose_loss(host(c.sr, c.s), host(c.gt, c.s), weights_value(c.w), o); });
  raiser.join();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  CHECK(during.rfind("E_ABORTED", 0) == 0, "raised 20 ms in: %s", during.c_str());
  std::printf("cancel raised 20 ms in: %s after %.0f ms\n", during.substr(0, 9).c_str(), ms);
  // A NaN in gt: the stage of the features of gt, as the fused loss names it.
  std::vector<float> bad = c.gt;
  bad[5] = std::nanf("");
  o.cancel = nullptr;
  const std::string composed =
      code_of([&] { ops::compose_loss(host(c.sr, c.s), host(bad, c.s), weights_value(c.w), o); });
  const std::string backend = code_of([&] { reference_loss<float, FastKernels>(c.w, c.sr.data(), bad.data(), c.s, o); });
  CHECK(composed.rfind("E_NUMERIC", 0) == 0 && composed.find("features of gt") != std::string::npos, "%s",
        composed.c_str());
  CHECK(backend.find("features of gt") != std::string::npos, "the fused loss: %s", backend.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::function<void()>> groups = {
      {"loss_composed_bits", test_bits_and_profile},
      {"loss_composed_cancel", test_cancel_and_stages},
  };
  return mghf_test::run_groups(groups, argc, argv);
}
