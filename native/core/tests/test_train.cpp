// Pretraining tests (SPEC §10), run by ctest one group at a time: every weight
// gradient against finite differences in double (each op alone, the head, the
// whole DFE + head loss), the fast float kernels against the reference, Adam
// against a hand-computed run, a tiny training run that learns, and a
// save/restore that resumes bit-identically.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "error.h"
#include "kernels_table.h"
#include "test_util.h"
#include "train/classifier.h"
#include "train/dfe_train.h"
#include "train/head.h"
#include "train/train.h"
#include "train/train_kernels_fast.h"
#include "train/train_kernels_reference.h"

using namespace mghf;
using namespace mghf_test;
using RefT = ReferenceTrainKernels<double>;

namespace {

constexpr double kGradTol = 1e-6;  // relative error of a directional derivative in double

// Every tensor of a DFE and a head, by name, in a fixed order.
template <class T>
std::vector<std::pair<std::string, Buffer<T>*>> tensors_of(DfeWeights<T>& w, HeadWeights<T>& h) {
  std::vector<std::pair<std::string, Buffer<T>*>> out;
  w.for_each([&](const std::string& n, Buffer<T>& b) { out.emplace_back(n, &b); });
  h.for_each([&](const std::string& n, Buffer<T>& b) { out.emplace_back(n, &b); });
  return out;
}

std::vector<double> concat(std::initializer_list<const std::vector<double>*> parts) {
  std::vector<double> out;
  for (auto* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

// ---------------------------------------------------------------- each op alone

void test_ops_gradcheck() {
  Rng rng(101);
  // conv1x1, weight and bias together.
  {
    const int M = 6, K = 5;
    const int64_t P = 5 * 7;
    auto in = rng.vec<double>(size_t(K) * P, -1, 1), r = rng.vec<double>(size_t(M) * P, -1, 1);
    auto f = [&](const std::vector<double>& th) {
      std::vector<double> out(size_t(M) * P);
      RefT::conv1x1(M, K, P, th.data(), th.data() + M * K, in.data(), out.data(), false);
      return dot(out, r);
    };
    auto th = rng.vec<double>(size_t(M) * K + M, -1, 1);
    std::vector<double> g(th.size(), 0.0);
    RefT::conv1x1_weight_grad(M, K, P, r.data(), in.data(), g.data(), g.data() + M * K);
    const double e = directional_error(f, th, g, rng);
    CHECK(e < kGradTol, "conv1x1 weight+bias directional error %g", e);
  }
  // Stem 3×3 (zero padding), weight and bias.
  for (auto hw : std::vector<std::pair<int, int>>{{5, 7}, {2, 2}}) {
    const int N = 4, H = hw.first, W = hw.second;
    const int64_t P = int64_t(H) * W;
    auto xh = rng.vec<double>(size_t(3) * P, -2, 2), r = rng.vec<double>(size_t(N) * P, -1, 1);
    auto f = [&](const std::vector<double>& th) {
      std::vector<double> z(size_t(N) * P);
      RefT::stem(N, H, W, th.data(), th.data() + N * 27, xh.data(), z.data());
      return dot(z, r);
    };
    auto th = rng.vec<double>(size_t(N) * 27 + N, -1, 1);
    std::vector<double> g(th.size(), 0.0);
    RefT::stem_weight_grad(N, H, W, xh.data(), r.data(), g.data(), g.data() + N * 27);
    const double e = directional_error(f, th, g, rng);
    CHECK(e < kGradTol, "stem %dx%d weight+bias directional error %g", H, W, e);
  }
  // Depthwise 3×3 on the reflection-padded input, through its ReLU6 (the
  // weight gradient takes the masked output gradient). Sizes hit every
  // reflection case, down to 2×2.
  for (auto hw : std::vector<std::pair<int, int>>{{5, 7}, {2, 2}, {2, 5}, {6, 3}}) {
    const int C = 3, H = hw.first, W = hw.second;
    const int64_t P = int64_t(H) * W;
    auto in = rng.vec<double>(size_t(C) * P, 0, 6), r = rng.vec<double>(size_t(C) * P, -1, 1);
    auto f = [&](const std::vector<double>& w9) {
      std::vector<double> o(size_t(C) * P);
      std::vector<uint8_t> m(size_t(C) * P);
      RefT::depthwise_relu6(C, H, W, w9.data(), in.data(), o.data(), m.data());
      return dot(o, r);
    };
    auto w9 = rng.vec<double>(size_t(C) * 9, -1, 1);
    std::vector<double> o(size_t(C) * P), gm(size_t(C) * P), g(w9.size(), 0.0);
    std::vector<uint8_t> m(size_t(C) * P);
    RefT::depthwise_relu6(C, H, W, w9.data(), in.data(), o.data(), m.data());
    for (size_t i = 0; i < gm.size(); ++i) gm[i] = m[i] ? r[i] : 0.0;
    RefT::depthwise_weight_grad(C, H, W, gm.data(), in.data(), g.data());
    const double e = directional_error(f, w9, g, rng);
    CHECK(e < kGradTol, "depthwise %dx%d weight directional error %g", H, W, e);
  }
  // The training IRB (unfused forward keeping r1, r2): each weight and the input.
  for (auto hw : std::vector<std::pair<int, int>>{{4, 6}, {2, 3}}) {
    const int c = 3, h = 5, H = hw.first, W = hw.second;
    const int64_t P = int64_t(H) * W;
    auto We = rng.vec<double>(size_t(h) * c, -2, 2), Wd = rng.vec<double>(size_t(h) * 9, -1, 1),
         Wp = rng.vec<double>(size_t(c) * h, -1, 1);
    auto x = rng.vec<double>(size_t(c) * P, -1, 2), r = rng.vec<double>(size_t(c) * P, -1, 1);
    auto load = [&](const std::vector<double>& th) {
      IrbWeights<double> iw;
      iw.expand.resize(We.size());
      iw.depthwise.resize(Wd.size());
      iw.project.resize(Wp.size());
      std::copy(th.begin(), th.begin() + We.size(), iw.expand.data());
      std::copy(th.begin() + We.size(), th.begin() + We.size() + Wd.size(), iw.depthwise.data());
      std::copy(th.begin() + We.size() + Wd.size(), th.begin() + We.size() + Wd.size() + Wp.size(),
                iw.project.data());
      return iw;
    };
    auto make_tape = [&](IrbTrainTape<double>& t) {
      for (auto* b : {&t.r1, &t.r2}) b->resize(size_t(h) * P);
      for (auto* b : {&t.m1, &t.m2}) b->resize(size_t(h) * P);
    };
    const size_t nw = We.size() + Wd.size() + Wp.size();
    // θ = [We, Wd, Wp, x]
    auto f = [&](const std::vector<double>& th) {
      IrbWeights<double> iw = load(th);
      IrbTrainTape<double> t;
      make_tape(t);
      std::vector<double> out(size_t(c) * P, 0.0);
      detail::irb_train_forward<double, RefT>(iw, c, h, H, W, th.data() + nw, out.data(), false, t);
      return dot(out, r);
    };
    std::vector<double> th = concat({&We, &Wd, &Wp, &x});
    IrbWeights<double> iw = load(th), grad = load(std::vector<double>(nw, 0.0));
    IrbTrainTape<double> t;
    make_tape(t);
    std::vector<double> out(size_t(c) * P, 0.0), din(size_t(c) * P, 0.0), g1(size_t(h) * P),
        g2(size_t(h) * P);
    detail::irb_train_forward<double, RefT>(iw, c, h, H, W, x.data(), out.data(), false, t);
    size_t inside = 0;
    for (size_t i = 0; i < t.m1.size(); ++i) inside += t.m1[i] + t.m2[i];
    CHECK(inside > 0 && inside < 2 * t.m1.size(), "IRB test should hit both ReLU6 regions");
    detail::irb_train_backward<double, RefT>(iw, c, h, H, W, t, x.data(), r.data(), din.data(),
                                             grad, g1.data(), g2.data());
    std::vector<double> gw(grad.expand.data(), grad.expand.data() + We.size());
    gw.insert(gw.end(), grad.depthwise.data(), grad.depthwise.data() + Wd.size());
    gw.insert(gw.end(), grad.project.data(), grad.project.data() + Wp.size());
    const std::vector<double> g = concat({&gw, &din});
    // Along each block of θ alone, then all of it.
    const size_t bounds[5] = {0, We.size(), We.size() + Wd.size(), nw, th.size()};
    const char* names[4] = {"expand", "depthwise", "project", "input"};
    for (int part = 0; part < 4; ++part) {
      auto fp = [&](const std::vector<double>& sub) {
        std::vector<double> full = th;
        std::copy(sub.begin(), sub.end(), full.begin() + bounds[part]);
        return f(full);
      };
      std::vector<double> sub(th.begin() + bounds[part], th.begin() + bounds[part + 1]);
      std::vector<double> gs(g.begin() + bounds[part], g.begin() + bounds[part + 1]);
      const double e = directional_error(fp, sub, gs, rng);
      CHECK(e < kGradTol, "IRB %dx%d %s directional error %g", H, W, names[part], e);
    }
    const double e = directional_error(f, th, g, rng);
    CHECK(e < kGradTol, "IRB %dx%d all directional error %g", H, W, e);
  }
  // The head's 3×3 stride-2 convolution: weight and bias, and input; odd,
  // even and 1-pixel sizes.
  for (auto hw : std::vector<std::pair<int, int>>{{5, 7}, {4, 6}, {2, 2}, {1, 1}, {2, 3}}) {
    const int Co = 4, Ci = 3, H = hw.first, W = hw.second;
    const int64_t P = int64_t(H) * W, Po = int64_t(conv_s2_out(H)) * conv_s2_out(W);
    auto x = rng.vec<double>(size_t(Ci) * P, -1, 1), r = rng.vec<double>(size_t(Co) * Po, -1, 1);
    auto th = rng.vec<double>(size_t(Co) * Ci * 9 + Co, -1, 1);
    auto f = [&](const std::vector<double>& t) {
      std::vector<double> out(size_t(Co) * Po);
      RefT::conv3x3s2(Co, Ci, H, W, t.data(), t.data() + Co * Ci * 9, x.data(), out.data());
      return dot(out, r);
    };
    std::vector<double> g(th.size(), 0.0);
    RefT::conv3x3s2_weight_grad(Co, Ci, H, W, x.data(), r.data(), g.data(), g.data() + Co * Ci * 9);
    double e = directional_error(f, th, g, rng);
    CHECK(e < kGradTol, "conv3x3s2 %dx%d weight+bias directional error %g", H, W, e);
    auto fx = [&](const std::vector<double>& in) {
      std::vector<double> out(size_t(Co) * Po);
      RefT::conv3x3s2(Co, Ci, H, W, th.data(), th.data() + Co * Ci * 9, in.data(), out.data());
      return dot(out, r);
    };
    std::vector<double> gx(x.size());
    RefT::conv3x3s2_backward(Co, Ci, H, W, th.data(), r.data(), gx.data());
    e = directional_error(fx, x, gx, rng);
    CHECK(e < kGradTol, "conv3x3s2 %dx%d input directional error %g", H, W, e);
  }
}

// ---------------------------------------------------------------- the head

// Cross-entropy of one image's logits, and its gradient.
double cross_entropy(const std::vector<double>& z, int label, std::vector<double>* dz) {
  double mx = z[0];
  for (double v : z) mx = std::max(mx, v);
  double se = 0;
  for (double v : z) se += std::exp(v - mx);
  const double lse = mx + std::log(se);
  if (dz)
    for (size_t k = 0; k < z.size(); ++k) (*dz)[k] = std::exp(z[k] - lse) - (int(k) == label);
  return lse - z[size_t(label)];
}

void test_head_gradcheck() {
  Rng rng(211);
  for (auto hw : std::vector<std::pair<int, int>>{{9, 7}, {2, 2}, {6, 11}}) {
    const int N = 6, classes = 4, H = hw.first, W = hw.second, label = 2;
    const int64_t P = int64_t(H) * W;
    HeadWeights<double> head = random_head<double>(N, classes, 7 + H, 1.5);
    auto F = rng.vec<double>(size_t(N) * P, -1, 2);
    auto loss = [&](HeadWeights<double>& hd, const std::vector<double>& feat) {
      HeadTape<double> t;
      std::vector<double> z(classes);
      head_forward<double, RefT>(hd, feat.data(), H, W, t, z.data());
      return cross_entropy(z, label, nullptr);
    };
    HeadTape<double> t;
    std::vector<double> z(classes), dz(classes), dF(F.size());
    head_forward<double, RefT>(head, F.data(), H, W, t, z.data());
    cross_entropy(z, label, &dz);
    HeadWeights<double> grad(N, classes);
    head_backward<double, RefT>(head, F.data(), t, dz.data(), grad, dF.data());
    // Input gradient.
    double e = directional_error([&](const std::vector<double>& f) { return loss(head, f); }, F, dF, rng);
    CHECK(e < kGradTol, "head %dx%d input directional error %g", H, W, e);
    // Each tensor along a random direction.
    std::vector<Buffer<double>*> gb;
    grad.for_each([&](const std::string&, Buffer<double>& b) { gb.push_back(&b); });
    size_t i = 0;
    head.for_each([&](const std::string& name, Buffer<double>& b) {
      std::vector<double> x0(b.data(), b.data() + b.size());
      std::vector<double> g(gb[i]->data(), gb[i]->data() + b.size());
      ++i;
      auto f = [&](const std::vector<double>& x) {
        std::copy(x.begin(), x.end(), b.data());
        const double l = loss(head, F);
        std::copy(x0.begin(), x0.end(), b.data());
        return l;
      };
      const double err = directional_error(f, x0, g, rng);
      CHECK(err < kGradTol, "head %dx%d %s directional error %g", H, W, name.c_str(), err);
    });
  }
}

// ---------------------------------------------------------------- DFE + head

// The whole pretraining loss (DFE → head → mean cross-entropy over a batch)
// in double, against each tensor along random directions over a sample of its
// entries, and all tensors at once. The loss is evaluated with the plain DFE
// forward of dfe.h, the gradient with the training path: the two agree too.
void test_dfe_gradcheck() {
  for (int blocks : {1, 2}) {
    DfeArchitecture a{8, blocks, 2};
    const int classes = 5, B = 2, H = 6, W = 5;
    DfeWeights<double> w = random_weights<double>(a, 301 + blocks, 1.5);
    HeadWeights<double> head = random_head<double>(a.channels, classes, 401 + blocks, 1.5);
    Rng rng(501 + blocks);
    auto x = rng.vec<double>(size_t(B) * 3 * H * W, 0, 1);
    const int labels[B] = {3, 1};
    ClassifierGrads<double> grads(a, classes);
    grads.zero();
    const StepStats st =
        classifier_batch<double, RefT>(w, head, x.data(), labels, B, H, W, &grads);
    const StepStats st0 = classifier_batch<double, RefT>(w, head, x.data(), labels, B, H, W, nullptr);
    CHECK(std::fabs(st.loss - st0.loss) <= 1e-12 * st0.loss, "loss with and without gradients %.17g %.17g",
          st.loss, st0.loss);
    auto params = tensors_of(w, head);
    auto gts = tensors_of(grads.dfe, grads.head);
    auto loss = [&] { return classifier_batch<double, RefT>(w, head, x.data(), labels, B, H, W, nullptr).loss; };
    double worst = 0;
    for (size_t t = 0; t < params.size(); ++t) {
      Buffer<double>& p = *params[t].second;
      const Buffer<double>& g = *gts[t].second;
      // A sample of at most 12 distinct entries of this tensor.
      std::vector<size_t> idx;
      while (idx.size() < std::min<size_t>(12, p.size())) {
        const size_t i = size_t(rng.next() % p.size());
        if (std::find(idx.begin(), idx.end(), i) == idx.end()) idx.push_back(i);
      }
      std::vector<double> x0(idx.size()), gs(idx.size());
      for (size_t k = 0; k < idx.size(); ++k) {
        x0[k] = p[idx[k]];
        gs[k] = g[idx[k]];
      }
      auto f = [&](const std::vector<double>& xs) {
        for (size_t k = 0; k < idx.size(); ++k) p[idx[k]] = xs[k];
        const double l = loss();
        for (size_t k = 0; k < idx.size(); ++k) p[idx[k]] = x0[k];
        return l;
      };
      const double e = directional_error(f, x0, gs, rng);
      worst = std::max(worst, e);
      CHECK(e < 1e-5, "blocks=%d %s directional error %g", blocks, params[t].first.c_str(), e);
    }
    // Every parameter at once.
    std::vector<double> all, gall;
    for (size_t t = 0; t < params.size(); ++t) {
      all.insert(all.end(), params[t].second->data(), params[t].second->data() + params[t].second->size());
      gall.insert(gall.end(), gts[t].second->data(), gts[t].second->data() + gts[t].second->size());
    }
    auto fall = [&](const std::vector<double>& th) {
      size_t o = 0;
      for (auto& pr : params) {
        std::copy(th.begin() + o, th.begin() + o + pr.second->size(), pr.second->data());
        o += pr.second->size();
      }
      const double l = loss();
      o = 0;
      for (auto& pr : params) {
        std::copy(all.begin() + o, all.begin() + o + pr.second->size(), pr.second->data());
        o += pr.second->size();
      }
      return l;
    };
    const double e = directional_error(fall, all, gall, rng);
    CHECK(e < 1e-5, "blocks=%d all weights directional error %g", blocks, e);
    std::printf("blocks=%d loss %.6f, worst per-tensor directional error %.2g, all %.2g\n", blocks,
                st.loss, worst, e);
  }
}

// ---------------------------------------------------------------- fast vs reference

std::vector<double> widen(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

bool runs_here(const FastKernelTable& t) {
  if (std::strcmp(t.isa, "generic") == 0) return true;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (std::strcmp(t.isa, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

void test_fast_vs_reference() {
  Rng rng(601);
  // The weight-gradient product C (+)= A·Bᵀ of every ISA this CPU runs, with
  // row strides, ragged M, N against the register tile and K against KC and
  // the in-register transpose.
  for (const FastKernelTable* t : {kernels_generic(), kernels_avx2(), kernels_avx512()}) {
    if (!t || !runs_here(*t)) continue;
    for (auto d : std::vector<std::array<int, 3>>{{6, 5, 9}, {64, 300, 128}, {27, 512, 27}, {3, 17, 1}, {130, 129, 70}}) {
      const int M = d[0], K = d[1], N = d[2];
      const int64_t lda = K + 3, ldb = K + 5, ldc = N + 1;
      auto A = rng.vec<float>(size_t(M) * lda, -1, 1), B = rng.vec<float>(size_t(N) * ldb, -1, 1);
      auto C0 = rng.vec<float>(size_t(M) * ldc, -1, 1);
      for (bool acc : {false, true}) {
        std::vector<float> C = C0;
        std::vector<double> ref(C.size());
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < ldc; ++n) {
            double v = acc || n >= N ? double(C0[size_t(m) * ldc + n]) : 0.0;
            if (n < N)
              for (int k = 0; k < K; ++k) v += double(A[size_t(m) * lda + k]) * double(B[size_t(n) * ldb + k]);
            ref[size_t(m) * ldc + n] = v;
          }
        t->matmul_nt(M, K, N, A.data(), lda, B.data(), ldb, C.data(), ldc, acc);
        const double e = rel_l2(C.data(), ref.data(), ref.size());
        CHECK(e < 1e-6, "%s matmul_nt %dx%dx%d accumulate=%d rel err %g", t->isa, M, K, N, int(acc), e);
      }
    }
  }
  // dW = dout·inᵀ and db, with P from one partial chunk to more chunks than
  // accumulator slots, M and K ragged against the GEMM tiles.
  for (auto d : std::vector<std::array<int, 4>>{
           {6, 5, 9, 13}, {64, 128, 16, 20}, {27, 8, 33, 31}, {3, 2, 2, 2}, {4, 3, 131, 129}}) {
    const int M = d[0], K = d[1];
    const int64_t P = int64_t(d[2]) * d[3];
    auto dout = rng.vec<float>(size_t(M) * P, -1, 1), in = rng.vec<float>(size_t(K) * P, -2, 2);
    std::vector<double> wr(size_t(M) * K, 0.5), br(size_t(M), -0.25), wf = wr, bf = br;
    auto dd = widen(dout), id = widen(in);
    RefT::conv1x1_weight_grad(M, K, P, dd.data(), id.data(), wr.data(), br.data());
    FastTrainKernels::conv1x1_weight_grad(M, K, P, dout.data(), in.data(), wf.data(), bf.data());
    const double e = rel_l2(wf.data(), wr.data(), wr.size()), eb = rel_l2(bf.data(), br.data(), br.size());
    CHECK(e < 1e-6 && eb < 1e-6, "conv1x1 weight grad %dx%dx%lld rel err %g, bias %g", M, K, (long long)P, e, eb);
  }
  // Stem weight gradient.
  for (auto hw : std::vector<std::pair<int, int>>{{11, 13}, {2, 2}, {40, 37}}) {
    const int N = 10, H = hw.first, W = hw.second;
    const int64_t P = int64_t(H) * W;
    auto xh = rng.vec<float>(size_t(3) * P, -2, 2), dz = rng.vec<float>(size_t(N) * P, -1, 1);
    std::vector<double> wr(size_t(N) * 27, 0.0), br(size_t(N), 0.0), wf = wr, bf = br;
    auto xd = widen(xh), dzd = widen(dz);
    RefT::stem_weight_grad(N, H, W, xd.data(), dzd.data(), wr.data(), br.data());
    FastTrainKernels::stem_weight_grad(N, H, W, xh.data(), dz.data(), wf.data(), bf.data());
    const double e = rel_l2(wf.data(), wr.data(), wr.size()), eb = rel_l2(bf.data(), br.data(), br.size());
    CHECK(e < 1e-6 && eb < 1e-6, "stem weight grad %dx%d rel err %g, bias %g", H, W, e, eb);
  }
  // Depthwise weight gradient (reflection at every edge, vector body and tails).
  for (auto hw : std::vector<std::pair<int, int>>{{2, 2}, {7, 3}, {9, 13}, {16, 37}, {3, 6}}) {
    const int C = 5, H = hw.first, W = hw.second;
    const int64_t P = int64_t(H) * W;
    auto g = rng.vec<float>(size_t(C) * P, -1, 1), in = rng.vec<float>(size_t(C) * P, 0, 6);
    std::vector<double> wr(size_t(C) * 9, 0.0), wf = wr;
    auto gd = widen(g), id = widen(in);
    RefT::depthwise_weight_grad(C, H, W, gd.data(), id.data(), wr.data());
    FastTrainKernels::depthwise_weight_grad(C, H, W, g.data(), in.data(), wf.data());
    const double e = rel_l2(wf.data(), wr.data(), wr.size());
    CHECK(e < 1e-6, "depthwise weight grad %dx%d rel err %g", H, W, e);
  }
  // The head's stride-2 convolution: forward, input backward, weight gradient.
  for (auto d : std::vector<std::array<int, 4>>{
           {8, 8, 9, 13}, {16, 16, 16, 16}, {5, 7, 2, 2}, {4, 4, 1, 1}, {12, 20, 33, 70}, {6, 3, 2, 5},
           {5, 4, 1, 3}, {5, 4, 3, 1}, {3, 40, 64, 64}}) {
    const int Co = d[0], Ci = d[1], H = d[2], W = d[3];
    const int64_t P = int64_t(H) * W, Po = int64_t(conv_s2_out(H)) * conv_s2_out(W);
    auto w = rng.vec<float>(size_t(Co) * Ci * 9, -1, 1), b = rng.vec<float>(size_t(Co), -1, 1);
    auto x = rng.vec<float>(size_t(Ci) * P, -1, 1), dout = rng.vec<float>(size_t(Co) * Po, -1, 1);
    auto wd = widen(w), bd = widen(b), xd = widen(x), dd = widen(dout);
    std::vector<double> yr(size_t(Co) * Po), gr(size_t(Ci) * P);
    std::vector<float> yf(size_t(Co) * Po), gf(size_t(Ci) * P);
    RefT::conv3x3s2(Co, Ci, H, W, wd.data(), bd.data(), xd.data(), yr.data());
    FastTrainKernels::conv3x3s2(Co, Ci, H, W, w.data(), b.data(), x.data(), yf.data());
    double e = rel_l2(yf.data(), yr.data(), yr.size());
    CHECK(e < 1e-6, "conv3x3s2 %dx%d forward rel err %g", H, W, e);
    RefT::conv3x3s2_backward(Co, Ci, H, W, wd.data(), dd.data(), gr.data());
    FastTrainKernels::conv3x3s2_backward(Co, Ci, H, W, w.data(), dout.data(), gf.data());
    e = rel_l2(gf.data(), gr.data(), gr.size());
    CHECK(e < 1e-6, "conv3x3s2 %dx%d input backward rel err %g", H, W, e);
    std::vector<double> wr(w.size(), 0.0), br(b.size(), 0.0), wf = wr, bf = br;
    RefT::conv3x3s2_weight_grad(Co, Ci, H, W, xd.data(), dd.data(), wr.data(), br.data());
    FastTrainKernels::conv3x3s2_weight_grad(Co, Ci, H, W, x.data(), dout.data(), wf.data(), bf.data());
    e = rel_l2(wf.data(), wr.data(), wr.size());
    const double eb = rel_l2(bf.data(), br.data(), br.size());
    CHECK(e < 1e-6 && eb < 1e-6, "conv3x3s2 %dx%d weight grad rel err %g, bias %g", H, W, e, eb);
  }
  // The whole batch: float fast kernels against the double reference, on a
  // ragged image size, loss and every gradient tensor; evaluate (the fused
  // DFE forward) against the reference loss too.
  for (int blocks : {1, 2}) {
    DfeArchitecture a{16, blocks, 2};
    const int classes = 6, B = 2, H = 19, W = 23;
    DfeWeights<double> wd = random_weights<double>(a, 701 + blocks);
    HeadWeights<double> hd = random_head<double>(a.channels, classes, 801 + blocks);
    DfeWeights<float> wf = wd.cast<float>();
    HeadWeights<float> hf = hd.cast<float>();
    auto xf = rng.vec<float>(size_t(B) * 3 * H * W, 0, 1);
    auto xd = widen(xf);
    const int labels[B] = {5, 0};
    ClassifierGrads<double> gr(a, classes), gf(a, classes);
    gr.zero();
    gf.zero();
    const StepStats sr = classifier_batch<double, RefT>(wd, hd, xd.data(), labels, B, H, W, &gr);
    const StepStats sf = classifier_batch<float, FastTrainKernels>(wf, hf, xf.data(), labels, B, H, W, &gf);
    const StepStats se = classifier_batch<float, FastTrainKernels>(wf, hf, xf.data(), labels, B, H, W, nullptr);
    CHECK(std::fabs(sf.loss - sr.loss) <= 1e-5 * sr.loss, "blocks=%d loss %.9g vs reference %.9g", blocks, sf.loss, sr.loss);
    CHECK(std::fabs(se.loss - sr.loss) <= 1e-5 * sr.loss, "blocks=%d evaluate loss %.9g vs reference %.9g", blocks, se.loss, sr.loss);
    CHECK(sf.correct == sr.correct && se.correct == sr.correct, "correct %d / %d / %d", sf.correct, se.correct, sr.correct);
    auto tr = tensors_of(gr.dfe, gr.head);
    auto tf = tensors_of(gf.dfe, gf.head);
    double worst = 0;
    for (size_t t = 0; t < tr.size(); ++t) {
      const double e = rel_l2(tf[t].second->data(), tr[t].second->data(), tr[t].second->size());
      worst = std::max(worst, e);
      CHECK(e < 1e-3, "blocks=%d gradient of %s rel err %g", blocks, tr[t].first.c_str(), e);
    }
    std::printf("blocks=%d float vs double: loss %.9g / %.9g, worst gradient rel err %.3g\n", blocks,
                sf.loss, sr.loss, worst);
  }
}

// ---------------------------------------------------------------- Adam

void test_adam() {
  // One parameter, three steps, against the values worked out by hand in
  // double (β = 0.9, 0.999; ε = 1e-8; lr 0.01; g = 0.2, −0.1, 0.05).
  AdamConfig c;
  c.lr = 0.01;
  float p = 0.5f, m = 0.f, v = 0.f;
  const double g[3] = {0.2, -0.1, 0.05};
  const double want_p[3] = {0.4900000005, 0.4873366302718676, 0.48393233904720767};
  const double want_m[3] = {0.02, 0.008, 0.0122};
  const double want_v[3] = {4e-05, 4.996e-05, 5.241004e-05};
  for (int t = 0; t < 3; ++t) {
    adam_update(1, &p, &m, &v, &g[t], c.lr, c, t + 1);
    CHECK(std::fabs(p - want_p[t]) <= 1e-7, "step %d p %.10g want %.10g", t + 1, double(p), want_p[t]);
    CHECK(std::fabs(m - want_m[t]) <= 1e-7 * want_m[t] + 1e-12, "step %d m %.10g", t + 1, double(m));
    CHECK(std::fabs(v - want_v[t]) <= 1e-6 * want_v[t], "step %d v %.10g", t + 1, double(v));
  }
  // The first step moves every parameter by lr·g/(|g| + ε): about lr·sign(g).
  {
    float ps[4] = {1, -1, 0, 2}, ms[4] = {}, vs[4] = {};
    const double gs[4] = {1e-3, -5.0, 0.0, 1e-6};
    adam_update(4, ps, ms, vs, gs, 0.1, c, 1);
    const double want[4] = {1 - 0.1 * 1e-3 / (1e-3 + 1e-8), -1 + 0.1, 0, 2 - 0.1 * 1e-6 / (1e-6 + 1e-8)};
    for (int i = 0; i < 4; ++i) CHECK(std::fabs(ps[i] - want[i]) <= 1e-6, "first step [%d] %.9g want %.9g", i, double(ps[i]), want[i]);
  }
  // The schedule: lr0 · rate^floor(t / every), t = steps done before.
  AdamConfig s;
  CHECK(scheduled_lr(s, 0) == 5e-4 && scheduled_lr(s, 4999) == 5e-4, "first 5000 steps at lr0");
  CHECK(std::fabs(scheduled_lr(s, 5000) - 0.95 * 5e-4) < 1e-18, "step 5000: %g", scheduled_lr(s, 5000));
  CHECK(std::fabs(scheduled_lr(s, 10001) - 0.9025 * 5e-4) < 1e-18, "step 10001: %g", scheduled_lr(s, 10001));
  s.decay_every = 3;
  s.decay_rate = 0.5;
  s.lr = 1;
  CHECK(scheduled_lr(s, 2) == 1 && scheduled_lr(s, 3) == 0.5 && scheduled_lr(s, 8) == 0.25, "configurable schedule");
  // Trainer::step = the batch gradient + this update, parameter by parameter.
  DfeArchitecture a{4, 1, 2};
  const int classes = 3, B = 2, H = 5, W = 6;
  DfeWeights<float> w = random_weights<float>(a, 901);
  HeadWeights<float> hd = random_head<float>(a.channels, classes, 902);
  TrainConfig cfg;
  cfg.lr = 1e-3;
  Trainer tr(w, hd, cfg);
  Rng rng(903);
  auto x = rng.vec<float>(size_t(B) * 3 * H * W, 0, 1);
  const int labels[B] = {0, 2};
  ClassifierGrads<double> grads(a, classes);
  grads.zero();
  classifier_batch<float, FastTrainKernels>(w, hd, x.data(), labels, B, H, W, &grads);
  tr.step(x.data(), labels, B, H, W);
  CHECK(tr.steps == 1, "steps %lld", (long long)tr.steps);
  auto before = tensors_of(w, hd);
  auto gt = tensors_of(grads.dfe, grads.head);
  size_t bad = 0, n = 0;
  for (size_t t = 0; t < before.size(); ++t) {
    const Buffer<float>& after = *tr.tensor(before[t].first);
    const Buffer<float>& m1 = *tr.tensor("adam.m." + before[t].first);
    for (size_t i = 0; i < after.size(); ++i, ++n) {
      const double gi = (*gt[t].second)[i];
      const double want = (*before[t].second)[i] - 1e-3 * gi / (std::fabs(gi) + 1e-8);
      bad += std::fabs(after[i] - want) > 1e-7 || std::fabs(m1[i] - 0.1 * gi) > 1e-7 * std::fabs(gi) + 1e-30;
    }
  }
  CHECK(bad == 0, "%zu of %zu parameters differ from the hand-computed first Adam step", bad, n);
}

// ---------------------------------------------------------------- training runs

// Synthetic 8-class images: a grating of one of 4 orientations × 2
// frequencies with a random phase, random contrast and noise, the same pattern
// in every channel but a random tint. Nothing but the pattern tells the class.
void synthetic_batch(Rng& rng, int B, int S, int classes, std::vector<float>& x, std::vector<int>& labels) {
  x.resize(size_t(B) * 3 * S * S);
  labels.resize(size_t(B));
  const double pi = 3.14159265358979323846;
  for (int b = 0; b < B; ++b) {
    const int k = int(rng.next() % uint64_t(classes));
    labels[size_t(b)] = k;
    const double theta = pi * (k % 4) / 4, freq = (k / 4 == 0 ? 2.0 : 4.0) / S;
    const double phase = rng.uniform(0, 2 * pi), contrast = rng.uniform(0.25, 0.45);
    double tint[3];
    for (double& t : tint) t = rng.uniform(0.3, 0.7);
    for (int y = 0; y < S; ++y)
      for (int xx = 0; xx < S; ++xx) {
        const double s = std::sin(2 * pi * freq * (xx * std::cos(theta) + y * std::sin(theta)) + phase);
        for (int ch = 0; ch < 3; ++ch) {
          double v = tint[ch] + contrast * s + rng.uniform(-0.05, 0.05);
          x[((size_t(b) * 3 + ch) * S + y) * S + xx] = float(std::min(1.0, std::max(0.0, v)));
        }
      }
  }
}

Trainer tiny_trainer(const TrainConfig& cfg, int classes, uint64_t seed) {
  DfeArchitecture a{8, 1, 2};
  return Trainer(random_weights<float>(a, seed), random_head<float>(a.channels, classes, seed + 1), cfg);
}

void test_tiny_run() {
  const int classes = 8, S = 16, B = 16, steps = 300;
  TrainConfig cfg;
  cfg.lr = 3e-3;
  Trainer tr = tiny_trainer(cfg, classes, 1001);
  Rng rng(1002);
  std::vector<float> x;
  std::vector<int> labels;
  double first = 0, last = 0;
  for (int s = 0; s < steps; ++s) {
    synthetic_batch(rng, B, S, classes, x, labels);
    const StepStats st = tr.step(x.data(), labels.data(), B, S, S);
    if (s < 20) first += st.loss / 20;
    if (s >= steps - 20) last += st.loss / 20;
    if (s % 50 == 0 || s == steps - 1) std::printf("step %3d loss %.4f correct %d/%d\n", s, st.loss, st.correct, B);
  }
  Rng held(1003);
  synthetic_batch(held, 64, S, classes, x, labels);
  const StepStats ev = tr.evaluate(x.data(), labels.data(), 64, S, S);
  std::printf("ln(%d) = %.4f; mean loss of the first 20 steps %.4f, of the last 20 %.4f; held-out loss %.4f, accuracy %d/64\n",
              classes, std::log(double(classes)), first, last, ev.loss, ev.correct);
  CHECK(last < 0.5 * std::log(double(classes)), "training loss %.4f did not fall well below ln(classes)", last);
  CHECK(ev.correct >= 40, "held-out accuracy %d/64", ev.correct);
}

// A run saved after some steps and restored into a fresh Trainer continues
// with bit-identical losses and state; the schedule boundary falls after the
// restore.
void test_resume() {
  const int classes = 8, S = 12, B = 4;
  TrainConfig cfg;
  cfg.lr = 2e-3;
  cfg.decay_every = 8;
  cfg.decay_rate = 0.5;
  Trainer tr = tiny_trainer(cfg, classes, 1101);
  Rng rng(1102);
  std::vector<std::vector<float>> xs;
  std::vector<std::vector<int>> ls;
  for (int s = 0; s < 12; ++s) {
    std::vector<float> x;
    std::vector<int> l;
    synthetic_batch(rng, B, S, classes, x, l);
    xs.push_back(x);
    ls.push_back(l);
  }
  for (int s = 0; s < 6; ++s) tr.step(xs[size_t(s)].data(), ls[size_t(s)].data(), B, S, S);
  // Save: every tensor by name (parameters and moments) and the step count.
  std::map<std::string, std::vector<float>> saved;
  tr.for_each_tensor([&](const std::string& n, Buffer<float>& b) { saved[n].assign(b.data(), b.data() + b.size()); });
  const int64_t saved_steps = tr.steps;
  CHECK(saved.size() == 3 * size_t(2 + 11 + 8), "%zu tensors saved", saved.size());
  CHECK(saved.count("adam.m.stem.weight") && saved.count("adam.v.head.fc.bias") && saved.count("head.conv.2.weight"),
        "names of the saved tensors");
  std::vector<double> losses;
  for (int s = 6; s < 12; ++s) losses.push_back(tr.step(xs[size_t(s)].data(), ls[size_t(s)].data(), B, S, S).loss);
  // Restore into a trainer built from other weights.
  Trainer back = tiny_trainer(cfg, classes, 1201);
  size_t restored = 0;
  back.for_each_tensor([&](const std::string& n, Buffer<float>& b) {
    const auto& v = saved.at(n);
    CHECK(v.size() == b.size(), "%s size", n.c_str());
    std::copy(v.begin(), v.end(), b.data());
    ++restored;
  });
  back.steps = saved_steps;
  CHECK(restored == saved.size(), "restored %zu of %zu", restored, saved.size());
  CHECK(back.current_lr() == tr.config.lr, "lr before the boundary");
  for (int s = 6; s < 12; ++s) {
    const double l = back.step(xs[size_t(s)].data(), ls[size_t(s)].data(), B, S, S).loss;
    CHECK(l == losses[size_t(s - 6)], "step %d after restore: loss %.17g, uninterrupted %.17g", s, l, losses[size_t(s - 6)]);
  }
  CHECK(back.steps == tr.steps && back.current_lr() == tr.current_lr() && back.current_lr() == 0.5 * cfg.lr,
        "steps %lld / %lld, lr %g / %g", (long long)back.steps, (long long)tr.steps, back.current_lr(), tr.current_lr());
  size_t differ = 0;
  tr.for_each_tensor([&](const std::string& n, Buffer<float>& b) {
    const Buffer<float>& o = *back.tensor(n);
    if (std::memcmp(b.data(), o.data(), b.size() * sizeof(float)) != 0) ++differ;
  });
  CHECK(differ == 0, "%zu tensors differ after the resumed steps", differ);
}

// Invalid batches are refused before anything changes; a non-finite loss
// leaves the state as it was.
void test_errors() {
  const int classes = 3, S = 6, B = 2;
  Trainer tr = tiny_trainer(TrainConfig(), classes, 1301);
  std::vector<float> x(size_t(B) * 3 * S * S, 0.5f);
  std::vector<float> before(tr.tensor("stem.weight")->data(), tr.tensor("stem.weight")->data() + 8 * 27);
  auto code_of = [&](const std::function<void()>& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.code();
    }
    return "";
  };
  const int bad_label[B] = {0, 3};
  CHECK(code_of([&] { tr.step(x.data(), bad_label, B, S, S); }) == "E_ARGUMENT", "label out of range");
  const int neg_label[B] = {-1, 0};
  CHECK(code_of([&] { tr.evaluate(x.data(), neg_label, B, S, S); }) == "E_ARGUMENT", "negative label");
  const int ok[B] = {0, 2};
  CHECK(code_of([&] { tr.step(x.data(), ok, B, 1, S); }) == "E_TOO_SMALL", "1-pixel-high images");
  x[5] = std::nanf("");
  CHECK(code_of([&] { tr.step(x.data(), ok, B, S, S); }) == "E_NONFINITE", "NaN input");
  CHECK(tr.steps == 0, "no step counted");
  CHECK(std::memcmp(before.data(), tr.tensor("stem.weight")->data(), before.size() * sizeof(float)) == 0,
        "weights untouched");
  DfeArchitecture a{8, 1, 2};
  CHECK(code_of([&] { Trainer t(DfeWeights<float>(a), HeadWeights<float>(6, 3), TrainConfig()); }) == "E_WEIGHTS",
        "head channels must match the DFE");
  CHECK(tr.tensor("no.such.tensor") == nullptr, "unknown name");
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::function<void()>> groups = {
      {"train_ops_gradcheck", test_ops_gradcheck},
      {"train_head_gradcheck", test_head_gradcheck},
      {"train_dfe_gradcheck", test_dfe_gradcheck},
      {"train_fast_vs_reference", test_fast_vs_reference},
      {"train_adam", test_adam},
      {"train_tiny_run", test_tiny_run},
      {"train_resume", test_resume},
      {"train_errors", test_errors},
  };
  return mghf_test::run_groups(groups, argc, argv);
}
