// Core tests, run by ctest (one test per group): every DFE op's backward
// against finite differences in double, the fast float kernels (every ISA this
// CPU runs) against the reference kernels, the whole DFE and MGHF-n loss.
#include <array>
#include <atomic>
#include <thread>
#include <cstring>
#include <functional>
#include <map>

#include "backend.h"
#include "dfe.h"
#include "kernels_fast.h"
#include "kernels_reference.h"
#include "loss.h"
#include "test_util.h"

using namespace mghf;
using namespace mghf_test;
using Ref = ReferenceKernels<double>;
using RefF = ReferenceKernels<float>;

namespace {

constexpr double kGradTol = 1e-6;  // relative error of a directional derivative in double

// Random weights with PyTorch-like scale (±1/√fan_in), a little larger so
// ReLU6 regions are all visited.
template <class T>
DfeWeights<T> random_weights(const DfeArchitecture& a, uint64_t seed) {
  DfeWeights<T> w(a);
  Rng rng(seed);
  w.for_each([&](const std::string& name, Buffer<T>& b) {
    double fan_in = 27;
    if (name.find("mix") != std::string::npos) fan_in = a.channels;
    if (name.find("expand") != std::string::npos) fan_in = a.half();
    if (name.find("depthwise") != std::string::npos) fan_in = 9;
    if (name.find("project") != std::string::npos) fan_in = a.hidden();
    const double bound = 1.5 / std::sqrt(fan_in);
    for (size_t i = 0; i < b.size(); ++i) b[i] = T(rng.uniform(-bound, bound));
  });
  return w;
}

bool any_mask_mix(const std::vector<uint8_t>& m) {
  size_t ones = 0;
  for (auto v : m) ones += v;
  return ones > 0 && ones < m.size();
}

void test_ops_gradcheck() {
  Rng rng(1);
  const int H = 5, W = 7, M = 6, K = 5;
  const int64_t P = H * W;
  // conv1x1 with bias: linear, so the check is exact up to rounding.
  {
    auto Wt = rng.vec<double>(M * K, -1, 1), bias = rng.vec<double>(M, -1, 1);
    auto r = rng.vec<double>(M * P, -1, 1);
    auto f = [&](const std::vector<double>& in) {
      std::vector<double> out(M * P);
      Ref::conv1x1(M, K, P, Wt.data(), bias.data(), in.data(), out.data(), false);
      return dot(out, r);
    };
    auto in = rng.vec<double>(K * P, -1, 1);
    std::vector<double> g(K * P);
    Ref::conv1x1_backward(M, K, P, Wt.data(), r.data(), g.data(), false);
    double e = directional_error(f, in, g, rng);
    CHECK(e < kGradTol, "conv1x1 directional error %g", e);
  }
  // conv1x1 + ReLU6: inputs spread so that both clamps are active somewhere.
  {
    auto Wt = rng.vec<double>(M * K, -3, 3);
    auto r = rng.vec<double>(M * P, -1, 1);
    auto in = rng.vec<double>(K * P, -3, 3);
    std::vector<double> out(M * P);
    std::vector<uint8_t> mask(M * P);
    auto f = [&](const std::vector<double>& x) {
      std::vector<double> o(M * P);
      std::vector<uint8_t> m(M * P);
      Ref::conv1x1_relu6(M, K, P, Wt.data(), x.data(), o.data(), m.data());
      return dot(o, r);
    };
    Ref::conv1x1_relu6(M, K, P, Wt.data(), in.data(), out.data(), mask.data());
    CHECK(any_mask_mix(mask), "relu6 test should hit both regions");
    std::vector<double> rm(M * P), g(K * P);
    for (int64_t i = 0; i < M * P; ++i) rm[i] = mask[i] ? r[i] : 0;
    Ref::conv1x1_backward(M, K, P, Wt.data(), rm.data(), g.data(), false);
    double e = directional_error(f, in, g, rng);
    CHECK(e < kGradTol, "conv1x1_relu6 directional error %g", e);
  }
  // Depthwise 3×3 with reflection padding and ReLU6 on both sides: the
  // backward takes the input mask too, so check mask_in ⊙ dwᵀ(mask_out ⊙ r)
  // on the composite x → ReLU6(x) → dw → ReLU6. Several sizes hit the
  // reflection edge cases (2 is the smallest allowed).
  for (auto hw : std::vector<std::pair<int, int>>{{5, 7}, {2, 2}, {2, 5}, {6, 3}}) {
    const int h = hw.first, wd = hw.second, C = 3;
    const int64_t p = int64_t(h) * wd;
    auto w9 = rng.vec<double>(C * 9, -2, 2);
    auto r = rng.vec<double>(C * p, -1, 1);
    auto in = rng.vec<double>(C * p, -2, 8);
    auto f = [&](const std::vector<double>& x) {
      std::vector<double> rx(C * p), o(C * p);
      std::vector<uint8_t> m(C * p);
      for (int64_t i = 0; i < C * p; ++i) rx[i] = relu6(x[i]);
      Ref::depthwise_relu6(C, h, wd, w9.data(), rx.data(), o.data(), m.data());
      return dot(o, r);
    };
    std::vector<double> rx(C * p), o(C * p), g(C * p), din(C * p);
    std::vector<uint8_t> mo(C * p), mi(C * p);
    for (int64_t i = 0; i < C * p; ++i) {
      rx[i] = relu6(in[i]);
      mi[i] = relu6_mask(in[i]);
    }
    Ref::depthwise_relu6(C, h, wd, w9.data(), rx.data(), o.data(), mo.data());
    g = r;
    Ref::depthwise_relu6_backward(C, h, wd, w9.data(), mo.data(), mi.data(), g.data(), din.data());
    double e = directional_error(f, in, din, rng);
    CHECK(e < kGradTol, "depthwise %dx%d directional error %g", h, wd, e);
  }
  // The whole IRB composition (what the fused kernels are tested against).
  for (auto hw : std::vector<std::pair<int, int>>{{4, 6}, {2, 3}}) {
    const int c = 3, h = 5, hh = hw.first, wd = hw.second;
    const int64_t p = int64_t(hh) * wd;
    auto We = rng.vec<double>(h * c, -2, 2), Wd = rng.vec<double>(h * 9, -1, 1), Wp = rng.vec<double>(c * h, -1, 1);
    auto r = rng.vec<double>(c * p, -1, 1);
    auto f = [&](const std::vector<double>& x) {
      std::vector<double> o(c * p, 0.0);
      Ref::irb_forward(c, h, hh, wd, We.data(), Wd.data(), Wp.data(), x.data(), o.data(), false, nullptr, nullptr);
      return dot(o, r);
    };
    auto x = rng.vec<double>(c * p, -1, 2);
    std::vector<double> o(c * p), g(c * p, 0.0);
    std::vector<uint8_t> m1(h * p), m2(h * p);
    Ref::irb_forward(c, h, hh, wd, We.data(), Wd.data(), Wp.data(), x.data(), o.data(), false, m1.data(), m2.data());
    Ref::irb_backward(c, h, hh, wd, We.data(), Wd.data(), Wp.data(), m1.data(), m2.data(), r.data(), g.data());
    double e = directional_error(f, x, g, rng);
    CHECK(e < kGradTol, "irb %dx%d directional error %g", hh, wd, e);
  }
  // Stem 3×3 conv, zero padding.
  {
    const int N = 4;
    auto w = rng.vec<double>(N * 27, -1, 1), b = rng.vec<double>(N, -1, 1);
    auto r = rng.vec<double>(N * P, -1, 1);
    auto f = [&](const std::vector<double>& x) {
      std::vector<double> z(N * P);
      Ref::stem(N, H, W, w.data(), b.data(), x.data(), z.data());
      return dot(z, r);
    };
    auto x = rng.vec<double>(3 * P, -1, 1);
    std::vector<double> g(3 * P);
    Ref::stem_backward(N, H, W, w.data(), r.data(), g.data());
    double e = directional_error(f, x, g, rng);
    CHECK(e < kGradTol, "stem directional error %g", e);
  }
}

// Float kernels of one ISA table against the float reference, on sizes with
// ragged edges (P not a multiple of any tile, M not a multiple of 4).
void check_table(const FastKernelTable& t) {
  Rng rng(7);
  for (auto dims : std::vector<std::array<int, 4>>{{6, 5, 9, 13}, {64, 128, 16, 20}, {27, 8, 33, 31}, {3, 2, 2, 2}}) {
    const int M = dims[0], K = dims[1], H = dims[2], W = dims[3];
    const int64_t P = int64_t(H) * W;
    auto A = rng.vec<float>(size_t(M) * K, -1, 1), B = rng.vec<float>(size_t(K) * P, -2, 2);
    auto bias = rng.vec<float>(M, -1, 1), C0 = rng.vec<float>(size_t(M) * P, -1, 1);
    std::vector<float> ref = C0, fast = C0;
    RefF::conv1x1(M, K, P, A.data(), bias.data(), B.data(), ref.data(), true);
    t.gemm(M, K, P, A.data(), B.data(), fast.data(), bias.data(), true);
    double e = rel_l2(fast.data(), ref.data(), ref.size());
    CHECK(e < 1e-6, "%s gemm %dx%dx%lld rel err %g", t.isa, M, K, (long long)P, e);

    std::vector<uint8_t> mr(size_t(M) * P), mf(size_t(M) * P);
    RefF::conv1x1_relu6(M, K, P, A.data(), B.data(), ref.data(), mr.data());
    t.gemm_relu6(M, K, P, A.data(), B.data(), fast.data(), mf.data());
    e = rel_l2(fast.data(), ref.data(), ref.size());
    size_t mism = 0;
    for (size_t i = 0; i < mr.size(); ++i) mism += mr[i] != mf[i];
    CHECK(e < 1e-6 && mism <= mr.size() / 1000, "%s gemm_relu6 rel err %g, %zu mask mismatches",
          t.isa, e, mism);

    auto w9 = rng.vec<float>(size_t(M) * 9, -1, 1), in = rng.vec<float>(size_t(M) * P, -1, 7);
    std::vector<uint8_t> dr(size_t(M) * P), df(size_t(M) * P);
    RefF::depthwise_relu6(M, H, W, w9.data(), in.data(), ref.data(), dr.data());
    t.depthwise_relu6(M, H, W, w9.data(), in.data(), fast.data(), df.data());
    e = rel_l2(fast.data(), ref.data(), ref.size());
    CHECK(e < 1e-6 && dr == df, "%s depthwise rel err %g", t.isa, e);

    auto g = rng.vec<float>(size_t(M) * P, -1, 1);
    std::vector<float> g2 = g, dref(size_t(M) * P), dfast(size_t(M) * P);
    RefF::depthwise_relu6_backward(M, H, W, w9.data(), dr.data(), mr.data(), g.data(), dref.data());
    t.depthwise_relu6_backward(M, H, W, w9.data(), dr.data(), mr.data(), g2.data(), dfast.data());
    e = rel_l2(dfast.data(), dref.data(), dref.size());
    CHECK(e < 1e-6, "%s depthwise backward rel err %g", t.isa, e);
  }
}

// The fused row-by-row IRB against the plain composition, forward (with and
// without masks) and backward, on sizes with ragged tiles and tiny images.
void check_irb(const FastKernelTable& t) {
  Rng rng(17);
  for (auto dims : std::vector<std::array<int, 4>>{{8, 16, 5, 7}, {64, 128, 9, 70}, {6, 12, 2, 2}, {4, 8, 2, 5}, {4, 8, 7, 3}, {8, 16, 33, 64}}) {
    const int c = dims[0], h = dims[1], H = dims[2], W = dims[3];
    const size_t cP = size_t(c) * H * W, hP = size_t(h) * H * W;
    auto We = rng.vec<float>(size_t(h) * c, -0.6, 0.6), Wd = rng.vec<float>(size_t(h) * 9, -0.6, 0.6);
    auto Wp = rng.vec<float>(size_t(c) * h, -0.4, 0.4);
    auto in = rng.vec<float>(cP, -3, 6), out0 = rng.vec<float>(cP, -1, 1);
    std::vector<float> ref = out0, fast = out0, fast2 = out0;
    std::vector<uint8_t> m1r(hP), m2r(hP), m1f(hP), m2f(hP);
    RefF::irb_forward(c, h, H, W, We.data(), Wd.data(), Wp.data(), in.data(), ref.data(), true, m1r.data(), m2r.data());
    t.irb_forward(c, h, H, W, We.data(), Wd.data(), Wp.data(), in.data(), fast.data(), true, m1f.data(), m2f.data());
    t.irb_forward(c, h, H, W, We.data(), Wd.data(), Wp.data(), in.data(), fast2.data(), true, nullptr, nullptr);
    double e = rel_l2(fast.data(), ref.data(), ref.size());
    size_t mism = 0;  // reference masks are [h][H·W], fused ones [H][h][W]
    for (int ch = 0; ch < h; ++ch)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          const size_t ir = (size_t(ch) * H + y) * W + x, i_f = (size_t(y) * h + ch) * W + x;
          mism += (m1r[ir] != m1f[i_f]) + (m2r[ir] != m2f[i_f]);
        }
    CHECK(e < 1e-5 && mism <= hP / 500, "%s irb_forward %dx%d c=%d h=%d rel err %g, %zu mask mismatches",
          t.isa, H, W, c, h, e, mism);
    CHECK(fast2 == fast, "%s irb_forward without masks differs", t.isa);
    auto dout = rng.vec<float>(cP, -1, 1), din0 = rng.vec<float>(cP, -1, 1);
    std::vector<float> dref = din0, dfast = din0;
    RefF::irb_backward(c, h, H, W, We.data(), Wd.data(), Wp.data(), m1r.data(), m2r.data(), dout.data(), dref.data());
    t.irb_backward(c, h, H, W, We.data(), Wd.data(), Wp.data(), m1f.data(), m2f.data(), dout.data(), dfast.data());
    e = rel_l2(dfast.data(), dref.data(), dref.size());
    CHECK(e < 1e-5, "%s irb_backward %dx%d rel err %g", t.isa, H, W, e);
  }
}

void test_fast_vs_reference() {
  int tables = 0;
  for (const FastKernelTable* t : {kernels_generic(), kernels_avx2(), kernels_avx512()}) {
    if (!t) continue;
    if (std::strcmp(t->isa, "generic") != 0) {
#if defined(__x86_64__) && defined(__GNUC__)
      __builtin_cpu_init();
      const bool runs = std::strcmp(t->isa, "avx2") == 0 ? __builtin_cpu_supports("avx2") &&
                                                               __builtin_cpu_supports("fma")
                                                         : __builtin_cpu_supports("avx512bw") &&
                                                               __builtin_cpu_supports("avx512vl");
      if (!runs) {
        std::printf("skip %s: this CPU lacks it\n", t->isa);
        continue;
      }
#endif
    }
    std::printf("checking %s kernels\n", t->isa);
    check_table(*t);
    check_irb(*t);
    ++tables;
  }
  CHECK(tables >= 1, "no kernel table ran");
  // Stem (im2col + GEMM in the fast path).
  Rng rng(3);
  const int N = 10, H = 11, W = 13;
  const int64_t P = int64_t(H) * W;
  auto w = rng.vec<float>(N * 27, -1, 1), b = rng.vec<float>(N, -1, 1), x = rng.vec<float>(3 * P, -2, 2);
  std::vector<float> zr(N * P), zf(N * P);
  RefF::stem(N, H, W, w.data(), b.data(), x.data(), zr.data());
  FastKernels::stem(N, H, W, w.data(), b.data(), x.data(), zf.data());
  double e = rel_l2(zf.data(), zr.data(), zr.size());
  CHECK(e < 1e-6, "stem rel err %g", e);
  auto dz = rng.vec<float>(N * P, -1, 1);
  std::vector<float> gr(3 * P), gf(3 * P);
  RefF::stem_backward(N, H, W, w.data(), dz.data(), gr.data());
  FastKernels::stem_backward(N, H, W, w.data(), dz.data(), gf.data());
  e = rel_l2(gf.data(), gr.data(), gr.size());
  CHECK(e < 1e-6, "stem backward rel err %g", e);
}

// The whole DFE: ⟨r, DFE(x)⟩ differentiated by dfe_backward, in double, for
// one and two blocks and both input ranges.
void test_dfe_gradcheck() {
  for (int blocks : {1, 2})
    for (InputRange range : {InputRange::Unit, InputRange::Symmetric}) {
      DfeArchitecture a{8, blocks, 2};
      auto w = random_weights<double>(a, 11 + blocks);
      Rng rng(5);
      const int B = 2, H = 6, W = 5;
      const int64_t n = int64_t(B) * a.channels * H * W;
      auto r = rng.vec<double>(n, -1, 1);
      auto f = [&](const std::vector<double>& x) {
        std::vector<double> F(n);
        dfe_forward<double, Ref>(w, x.data(), B, H, W, range, F.data(), nullptr);
        return dot(F, r);
      };
      auto x = rng.vec<double>(size_t(B) * 3 * H * W, range == InputRange::Unit ? 0 : -1, 1);
      std::vector<double> F(n), g(x.size());
      DfeTape<double> tape;
      dfe_forward<double, Ref>(w, x.data(), B, H, W, range, F.data(), &tape);
      std::vector<double> dF = r;  // dfe_backward clobbers its dF
      dfe_backward<double, Ref>(w, tape, dF.data(), B, H, W, range, g.data());
      for (int rep = 0; rep < 3; ++rep) {
        double e = directional_error(f, x, g, rng);
        CHECK(e < kGradTol, "dfe blocks=%d range=%d directional error %g", blocks, int(range), e);
      }
    }
}

void test_loss_gradcheck() {
  DfeArchitecture a{6, 2, 3};
  auto w = random_weights<double>(a, 21);
  Rng rng(9);
  Shape s{2, 3, 7, 6};
  auto gt = rng.vec<double>(size_t(s.size()), 0, 1);
  auto sr = gt;
  for (auto& v : sr) v += rng.uniform(-0.05, 0.05);
  LossOptions opt;
  opt.variant = Variant::N;
  auto f = [&](const std::vector<double>& x) {
    return mghf_loss<double, Ref>(w, x.data(), gt.data(), s, opt).loss;
  };
  auto r = mghf_loss<double, Ref>(w, sr.data(), gt.data(), s, opt);
  std::vector<double> g(r.grad.data(), r.grad.data() + r.grad.size());
  CHECK(r.loss > 0, "loss %g", r.loss);
  for (int rep = 0; rep < 3; ++rep) {
    double e = directional_error(f, sr, g, rng);
    CHECK(e < 1e-5, "loss_n directional error %g", e);
  }
  auto zero = mghf_loss<double, Ref>(w, gt.data(), gt.data(), s, opt);
  CHECK(zero.loss == 0, "identical images give loss %g", zero.loss);
  opt.variant = Variant::C;
  bool threw = false;
  try {
    mghf_loss<double, Ref>(w, sr.data(), gt.data(), s, opt);
  } catch (const Error& e) {
    threw = e.code() == "E_UNSUPPORTED";
  }
  CHECK(threw, "variant c must report E_UNSUPPORTED until it exists");
}

// The production path (float, fast kernels) against the double reference, at
// the default architecture, as SPEC §8 demands of any implementation.
void test_loss_fast_vs_reference() {
  DfeArchitecture a{128, 1, 2};
  auto wd = random_weights<double>(a, 31);
  auto wf = wd.cast<float>();
  Rng rng(13);
  for (auto range : {InputRange::Unit, InputRange::Symmetric}) {
    Shape s{2, 3, 19, 23};
    auto gt = rng.vec<double>(size_t(s.size()), range == InputRange::Unit ? 0 : -1, 1);
    auto sr = gt;
    for (auto& v : sr) v += rng.uniform(-0.05, 0.05);
    std::vector<float> gtf(gt.begin(), gt.end()), srf(sr.begin(), sr.end());
    for (size_t i = 0; i < sr.size(); ++i) {
      sr[i] = srf[i];
      gt[i] = gtf[i];
    }
    LossOptions opt;
    opt.variant = Variant::N;
    opt.range = range;
    auto rd = mghf_loss<double, Ref>(wd, sr.data(), gt.data(), s, opt);
    auto rf = cpu_backend().loss(wf, srf.data(), gtf.data(), s, opt);
    const double le = std::fabs(rf.loss - rd.loss);
    CHECK(le <= 1e-4 * std::fabs(rd.loss) + 1e-7, "loss %g vs reference %g", rf.loss, rd.loss);
    double ge = rel_l2(rf.grad.data(), rd.grad.data(), rd.grad.size());
    CHECK(ge <= 1e-3, "grad rel err %g", ge);
    std::printf("range=%d loss %.9g ref %.9g grad rel err %.3g\n", int(range), rf.loss, rd.loss, ge);
  }
}

void test_parallel() {
  // Concurrent submitters and nested parallel_for must all complete exactly once.
  std::atomic<int64_t> total{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int rep = 0; rep < 20; ++rep)
        parallel_for(17, [&](int64_t) { parallel_for(5, [&](int64_t j) { total += j + 1; }); });
    });
  for (auto& t : ts) t.join();
  CHECK(total == 4 * 20 * 17 * 15, "parallel total %lld", (long long)total.load());
  bool threw = false;
  try {
    parallel_for(8, [](int64_t i) {
      if (i == 3) throw Error("E_TEST", "boom");
    });
  } catch (const Error& e) {
    threw = e.code() == "E_TEST";
  }
  CHECK(threw, "an exception in a task reaches the caller");
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::function<void()>> groups = {
      {"ops_gradcheck", test_ops_gradcheck},
      {"fast_vs_reference", test_fast_vs_reference},
      {"dfe_gradcheck", test_dfe_gradcheck},
      {"loss_gradcheck", test_loss_gradcheck},
      {"loss_fast_vs_reference", test_loss_fast_vs_reference},
      {"parallel", test_parallel},
  };
  int ran = 0;
  for (auto& [name, fn] : groups) {
    if (argc > 1 && name != argv[1]) continue;
    std::printf("== %s\n", name.c_str());
    fn();
    ++ran;
  }
  if (ran == 0) {
    std::printf("unknown test group %s\n", argc > 1 ? argv[1] : "");
    return 2;
  }
  std::printf(mghf_test::failures() ? "FAILED (%d)\n" : "ok\n", mghf_test::failures());
  return mghf_test::failures() ? 1 : 0;
}
