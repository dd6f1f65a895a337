// The LIP term (SPEC §6, lip_loss on the fast kernels) alone, forward and
// backward, on random G and S: the stage MGHF-c spends most of its CPU time in.
// Usage: mghf_bench_lip [N [H [repeat]]]   (defaults 128, 256, 5; square
// planes; threads: MGHF_NUM_THREADS). Prints the median and min of `repeat`
// timed calls after one warm-up, and the loss and ‖∂S‖² so that a change that
// should not move the numbers can be seen not to.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels_fast.h"
#include "lip.h"

using namespace mghf;

int main(int argc, char** argv) {
  const int N = argc > 1 ? std::atoi(argv[1]) : 128;
  const int H = argc > 2 ? std::atoi(argv[2]) : 256;
  const int repeat = argc > 3 ? std::atoi(argv[3]) : 5;
  LipOptions o;
  if (N < 1 || H < o.patch || repeat < 1) {
    std::fprintf(stderr, "usage: mghf_bench_lip [N [H ≥ %d [repeat]]]\n", o.patch);
    return 2;
  }
  std::vector<float> G(size_t(N) * H * H), S(G.size()), dS(G.size());
  uint32_t state = 1;
  auto rnd = [&] {
    state = state * 1664525u + 1013904223u;
    return float(state >> 8) / 16777216.f;
  };
  for (auto& v : G) v = rnd();
  for (size_t i = 0; i < S.size(); ++i) S[i] = 0.8f * G[i] + 0.2f * rnd();  // S near G
  std::vector<double> ms;
  double L = 0;
  for (int r = 0; r <= repeat; ++r) {
    std::fill(dS.begin(), dS.end(), 0.f);
    const auto t0 = std::chrono::steady_clock::now();
    L = lip_loss<float, FastKernels>(G.data(), S.data(), 1, N, H, H, o, 1e-3, dS.data());
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) ms.push_back(t);  // the first call is the warm-up
  }
  std::sort(ms.begin(), ms.end());
  double g2 = 0;
  for (float v : dS) g2 += double(v) * v;
  std::printf("lip N=%d %dx%d: median %.1f ms (min %.1f) over %d; L=%.9g |dS|^2=%.9g\n", N, H, H,
              ms[ms.size() / 2], ms[0], repeat, L, g2);
  return 0;
}
