// Pretraining throughput (SPEC §10): a trainer step on random images, images
// per second and milliseconds per phase, on the CPU or (--cuda[=N]) on a CUDA
// device. Runs without Node.
// Usage: mghf_bench_train [--cuda[=N]] [B [crop [N [steps [classes]]]]]
//        (defaults 32, 128, 128, 3, 10; threads: MGHF_NUM_THREADS).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <vector>

#include "cuda/cuda_backend.h"
#include "kernels_table.h"
#include "parallel.h"
#include "train/any_trainer.h"

using namespace mghf;

static int run(int argc, char** argv) {
  int device = -1;  // the CPU
  if (argc > 1 && std::strncmp(argv[1], "--cuda", 6) == 0) {
    device = argv[1][6] == '=' ? std::atoi(argv[1] + 7) : 0;
    --argc;
    ++argv;
    const CudaStatus st = cuda_status(device);
    if (!st.available) {
      std::printf("train step on CUDA: skipped (%s)\n", st.reason.c_str());
      return 0;
    }
  }
  int B = 32, S = 128, N = 128, steps = 3, classes = 10;
  if (argc > 1) B = std::atoi(argv[1]);
  if (argc > 2) S = std::atoi(argv[2]);
  if (argc > 3) N = std::atoi(argv[3]);
  if (argc > 4) steps = std::atoi(argv[4]);
  if (argc > 5) classes = std::atoi(argv[5]);
  if (B < 1 || S < 2 || N < 2 || N % 2 || steps < 1 || classes < 1 || device < -1) {
    std::fprintf(stderr, "usage: mghf_bench_train [--cuda[=N]] [B [crop [N [steps [classes]]]]]\n");
    return 2;
  }
  uint32_t state = 12345;
  auto rnd = [&] {
    state = state * 1664525u + 1013904223u;
    return float(state >> 8) / float(1 << 24);
  };
  // PyTorch's default bounds (SPEC §10): uniform in ±1/√fan_in.
  DfeArchitecture a{N, 1, 2};
  DfeWeights<float> w(a);
  w.for_each([&](const std::string& name, Buffer<float>& b) {
    const float bound = float(1 / std::sqrt(dfe_fan_in(name, a)));
    for (size_t i = 0; i < b.size(); ++i) b[i] = (2 * rnd() - 1) * bound;
  });
  HeadWeights<float> head(N, classes);
  head.for_each([&](const std::string& name, Buffer<float>& b) {
    const float bound = float(1 / std::sqrt(head_fan_in(name, N)));
    for (size_t i = 0; i < b.size(); ++i) b[i] = (2 * rnd() - 1) * bound;
  });
  AnyTrainer tr(device, std::move(w), std::move(head), TrainConfig());
  std::vector<float> x(size_t(B) * 3 * S * S);
  std::vector<int> labels(static_cast<size_t>(B));
  for (auto& v : x) v = rnd();
  for (auto& l : labels) l = int(rnd() * float(classes)) % classes;

  tr.step(x.data(), labels.data(), B, S, S);  // warm-up: the block cache fills
  std::vector<double> secs;
  std::map<std::string, double> phase_ms;
  double loss = 0;
  for (int s = 0; s < steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    loss = tr.step(x.data(), labels.data(), B, S, S).loss;
    secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    for (const auto& p : tr.last_times()) phase_ms[p.first] += p.second / steps;
  }
  std::sort(secs.begin(), secs.end());
  const double med = secs[secs.size() / 2];
  if (device < 0)
    std::printf("train step B=%d 3x%dx%d N=%d K=1 e=2 classes=%d threads=%d isa=%s\n", B, S, S, N,
                classes, num_threads(), fast_kernels().isa);
  else
    std::printf("train step B=%d 3x%dx%d N=%d K=1 e=2 classes=%d on CUDA device %d (%s)\n", B, S, S,
                N, classes, device, cuda_status(device).device_name.c_str());
  std::printf("median %.3f s/step (min %.3f) = %.2f images/s; last loss %.4f\n", med, secs[0],
              B / med, loss);
  for (const char* p : {"dfe_forward", "head_forward", "head_backward", "dfe_backward", "adam"})
    std::printf("  %-13s %8.1f ms/step\n", p, phase_ms[p]);
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mghf_bench_train: %s\n", e.what());
    return 1;
  }
}
