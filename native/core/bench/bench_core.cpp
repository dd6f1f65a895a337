// C++ benchmark of MGHF-n forward+backward on the CPU backend, runnable without
// Node (e.g. on a GPU machine). Usage: mghf_bench [B H W [repeat]]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backend.h"

using namespace mghf;

int main(int argc, char** argv) {
  Shape s{1, 3, 256, 256};
  int repeat = 5;
  if (argc >= 4) {
    s.B = std::atoi(argv[1]);
    s.H = std::atoi(argv[2]);
    s.W = std::atoi(argv[3]);
  }
  if (argc >= 5) repeat = std::atoi(argv[4]);
  DfeWeights<float> w;
  uint32_t state = 12345;
  auto rnd = [&] {
    state = state * 1664525u + 1013904223u;
    return float(state >> 8) / float(1 << 24);
  };
  w.for_each([&](const std::string&, Buffer<float>& b) {
    for (size_t i = 0; i < b.size(); ++i) b[i] = (rnd() - 0.5f) * 0.3f;
  });
  std::vector<float> gt(size_t(s.size())), sr(size_t(s.size()));
  for (size_t i = 0; i < gt.size(); ++i) {
    gt[i] = rnd();
    sr[i] = std::min(1.f, std::max(0.f, gt[i] + (rnd() - 0.5f) * 0.1f));
  }
  LossOptions opt;
  opt.variant = Variant::N;
  Backend& b = cpu_backend();
  std::vector<double> ms;
  for (int r = 0; r < repeat + 1; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    auto res = b.loss(w, sr.data(), gt.data(), s, opt);
    auto t1 = std::chrono::steady_clock::now();
    if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (r == 0) std::printf("loss %.6g\n", res.loss);
  }
  std::sort(ms.begin(), ms.end());
  std::printf("MGHF-n fwd+bwd B=%d 3x%dx%d: median %.1f ms (min %.1f) threads=%d isa=%s\n", s.B,
              s.H, s.W, ms[ms.size() / 2], ms[0], b.threads(), b.isa().c_str());
  return 0;
}
