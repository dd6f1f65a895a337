// CPU vs CUDA parity (SPEC §8: the backends agree to the reference tolerances)
// for MGHF-n and MGHF-c over the configurations of the golden fixtures and a
// few larger ones, plus the DFE features. Runs without Node, so it can run on
// a GPU machine that has none. Exit code 77 (ctest: skipped) when this build
// or this machine has no usable GPU, after printing why.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "backend.h"
#include "cuda/cuda_backend.h"
#include "test_util.h"

using namespace mghf;
using namespace mghf_test;

namespace {

DfeWeights<float> random_weights(const DfeArchitecture& a, uint64_t seed) {
  return mghf_test::random_weights<float>(a, seed);
}

bool near(double v, double ref) { return std::fabs(v - ref) <= 1e-4 * std::fabs(ref) + 1e-7; }

struct Case {
  const char* name;
  DfeArchitecture arch;
  Shape shape;
  LossOptions opt;
};

std::vector<Case> cases() {
  std::vector<Case> cs;
  auto add = [&](const char* name, DfeArchitecture a, Shape s, auto&& tweak) {
    Case c{name, a, s, LossOptions()};
    tweak(c.opt);
    cs.push_back(c);
  };
  add("n-tiny", {128, 1, 2}, {2, 3, 40, 40}, [](LossOptions& o) { o.variant = Variant::N; });
  add("n-nonsquare", {128, 1, 2}, {2, 3, 24, 36}, [](LossOptions& o) { o.variant = Variant::N; });
  add("c-default", {128, 1, 2}, {1, 3, 64, 64}, [](LossOptions&) {});
  add("c-tiny", {8, 1, 2}, {2, 3, 48, 48}, [](LossOptions& o) { o.M = 4; });
  add("c-csc-only", {16, 1, 2}, {2, 3, 40, 48}, [](LossOptions& o) { o.gamma1 = o.gamma3 = 0; o.M = 6; });
  add("c-lip-only", {8, 1, 2}, {1, 3, 64, 80}, [](LossOptions& o) { o.gamma1 = o.gamma2 = 0; });
  add("c-no-sinkhorn-grad", {8, 1, 2}, {1, 3, 64, 64}, [](LossOptions& o) { o.lip.monce.sinkhorn_grad = false; o.M = 4; });
  add("c-options", {16, 1, 3}, {2, 3, 48, 56}, [](LossOptions& o) {
    o.M = 5; o.alpha = 2; o.gamma = 2; o.lip.monce = {0.1, 0.5, 1.5, 20, true};
  });
  add("c-pmax", {8, 1, 2}, {1, 3, 96, 96}, [](LossOptions& o) { o.lip.pmax = 16; o.M = 4; });
  add("c-symmetric", {8, 1, 2}, {1, 3, 48, 64}, [](LossOptions& o) { o.range = InputRange::Symmetric; o.M = 4; });
  add("c-two-blocks", {16, 2, 2}, {1, 3, 48, 48}, [](LossOptions& o) { o.M = 8; });
  // The log-domain Sinkhorn (ε = 0.01 and 0.005: |sim/ε| past the plain form's 50).
  add("c-log-domain", {8, 1, 2}, {1, 3, 64, 64}, [](LossOptions& o) { o.M = 4; o.lip.monce.eps_ot = 0.01; });
  add("c-log-domain-nograd", {8, 1, 2}, {1, 3, 64, 64}, [](LossOptions& o) {
    o.M = 4; o.lip.monce = {0.1, 0.005, 2.0, 12, false};
  });
  add("c-large", {128, 1, 2}, {2, 3, 128, 160}, [](LossOptions&) {});
  return cs;
}

}  // namespace

int main() {
  const CudaStatus st = cuda_status(0);
  if (!st.available) {
    std::printf("SKIP: no usable CUDA device: %s\n", st.reason.c_str());
    return 77;
  }
  std::printf("CUDA %d.%d (driver %d.%d) on %s, compute capability %d.%d\n",
              st.runtime_version / 1000, st.runtime_version % 1000 / 10, st.driver_version / 1000,
              st.driver_version % 1000 / 10, st.device_name.c_str(), st.cc_major, st.cc_minor);
  Backend& gpu = cuda_backend(0);
  Backend& cpu = cpu_backend();
  // MGHF_CUDA_TEST_QUICK=1 (under compute-sanitizer): the small cases only.
  const bool quick = std::getenv("MGHF_CUDA_TEST_QUICK") != nullptr;
  int seed = 1;
  for (Case c : cases()) {
    if (quick && std::string(c.name) == "c-large") continue;
    auto w = random_weights(c.arch, uint64_t(seed) * 7);
    Rng rng(uint64_t(seed++));
    const bool sym = c.opt.range == InputRange::Symmetric;
    std::vector<float> gt = rng.vec<float>(size_t(c.shape.size()), sym ? -0.9 : 0.03, sym ? 0.9 : 0.97);
    std::vector<float> sr = gt;
    for (auto& v : sr) v += float(rng.uniform(-0.03, 0.03));
    c.opt.details = true;
    auto rc = cpu.loss(w, sr.data(), gt.data(), c.shape, c.opt);
    if (!rc.selected.empty()) c.opt.selected = rc.selected;  // compare past near-ties (SPEC §8)
    auto rg = gpu.loss(w, sr.data(), gt.data(), c.shape, c.opt);
    const double ge = rel_l2(rg.grad.data(), rc.grad.data(), rc.grad.size());
    CHECK(near(rg.loss, rc.loss), "%s loss cuda %.9g cpu %.9g", c.name, rg.loss, rc.loss);
    CHECK(near(rg.n, rc.n) && near(rg.mse, rc.mse) && near(rg.corr, rc.corr) &&
              near(rg.gram, rc.gram) && near(rg.lip, rc.lip) && near(rg.csc, rc.csc),
          "%s parts cuda/cpu n %g/%g mse %g/%g corr %g/%g gram %g/%g lip %g/%g", c.name, rg.n, rc.n,
          rg.mse, rc.mse, rg.corr, rc.corr, rg.gram, rc.gram, rg.lip, rc.lip);
    CHECK(rg.skipped == rc.skipped, "%s skipped parts differ", c.name);
    CHECK(ge <= 1e-3, "%s gradient relative error %g", c.name, ge);
    if (!rc.importance.empty()) {
      double worst = 0;
      for (size_t i = 0; i < rc.importance.size(); ++i)
        worst = std::max(worst, std::fabs(rg.importance[i] - rc.importance[i]));
      const double bin = 4.0 / (double(c.shape.H) * c.shape.W);
      CHECK(worst <= bin, "%s importance differs by %g (> 4/(H·W) = %g)", c.name, worst, bin);
    }
    std::printf("%-20s loss cuda %.9g cpu %.9g  grad rel err %.2e\n", c.name, rg.loss, rc.loss, ge);
  }
  // DFE features.
  {
    DfeArchitecture a{128, 1, 2};
    auto w = random_weights(a, 99);
    Shape s{2, 3, 33, 47};
    Rng rng(5);
    auto x = rng.vec<float>(size_t(s.size()), 0, 1);
    std::vector<float> fc(size_t(s.B) * a.channels * s.H * s.W), fg(fc.size());
    cpu.features(w, x.data(), s, InputRange::Unit, fc.data());
    gpu.features(w, x.data(), s, InputRange::Unit, fg.data());
    const double e = rel_l2(fg.data(), fc.data(), fc.size());
    CHECK(e <= 1e-5, "features relative error %g", e);
  }
  // The bounded extremes of the LIP options (ε = τ = 1e-3, Q = 1e6): finite on the GPU too
  // (their values are too sensitive to compare across backends: 1/τ times a float rounding of sim).
  // And a raised cancel flag is E_ABORTED.
  {
    DfeArchitecture a{8, 1, 2};
    auto w = random_weights(a, 13);
    Shape s{1, 3, 64, 64};
    Rng rng(17);
    std::vector<float> gt = rng.vec<float>(size_t(s.size()), 0.03, 0.97), sr = gt;
    for (auto& v : sr) v += float(rng.uniform(-0.03, 0.03));
    LossOptions o;
    o.M = 4;
    o.lip.monce.eps_ot = 1e-3;
    o.lip.monce.tau = 1e-3;
    o.lip.monce.Q = 1e6;
    auto r = gpu.loss(w, sr.data(), gt.data(), s, o);
    bool finite = std::isfinite(r.loss) && std::isfinite(r.lip);
    for (float g : std::vector<float>(r.grad.data(), r.grad.data() + r.grad.size())) finite = finite && std::isfinite(g);
    CHECK(finite, "extreme LIP options on CUDA: loss %g lip %g", r.loss, r.lip);
    std::printf("%-20s loss cuda %.9g (finite: %d)\n", "c-extreme-lip", r.loss, int(finite));
    CancelFlag flag{true};
    o.cancel = &flag;
    std::string code;
    try {
      gpu.loss(w, sr.data(), gt.data(), s, o);
    } catch (const Error& e) {
      code = e.code();
    }
    CHECK(code == "E_ABORTED", "a raised cancel flag on CUDA: %s", code.c_str());
  }
  // A failing call (an impossible allocation) is a typed error, and the next call still works.
  if (!quick) {
    // 4,096 channels at 2048×2048: each feature tensor alone is 64 GiB on the device.
    DfeArchitecture wide{4096, 1, 1};
    auto ww = random_weights(wide, 3);
    DfeArchitecture a{8, 1, 2};
    auto w = random_weights(a, 3);
    Shape huge{1, 3, 2048, 2048};
    std::vector<float> small(3 * 64 * 64, 0.5f);
    bool typed = false;
    try {
      std::vector<float> big(size_t(huge.size()), 0.5f);
      LossOptions o;
      o.variant = Variant::N;
      gpu.loss(ww, big.data(), big.data(), huge, o);
    } catch (const Error& e) {
      typed = e.code() == "E_CUDA_OOM" || e.code() == "E_CUDA";
      std::printf("expected failure: %s: %s\n", e.code().c_str(), e.what());
    } catch (const std::bad_alloc&) {
      typed = true;  // the host ran out first: still no crash
    }
    CHECK(typed, "an impossible call must fail with a typed error");
    LossOptions o;
    o.variant = Variant::N;
    auto r = gpu.loss(w, small.data(), small.data(), Shape{1, 3, 64, 64}, o);
    CHECK(r.loss == 0, "the next call works (identical images: loss %g)", r.loss);
  }
  std::printf(mghf_test::failures() ? "FAILED (%d)\n" : "ok\n", mghf_test::failures());
  return mghf_test::failures() ? 1 : 0;
}
