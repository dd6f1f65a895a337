// C++ benchmark of the CUDA backend, runnable without Node (the GPU machine has none):
// MGHF-n and MGHF-c forward+backward (the whole Backend::loss call: host inputs in, host
// gradient out) at B=4 3×256×256 and B=16 3×128×128, default architecture, deterministic
// random weights and inputs. Per case: warm-up, then timed calls (median, min), the per-stage
// medians of `profile` (the CUDA backend times its stages with CUDA events) from a second set of
// profiled calls, the achieved GFLOP/s and GB/s against the counted floor of bench/NOTES.md
// ("CUDA floor"), and the device memory the call held.
//
//   mghf_bench_cuda [--repeat R] [--warmup W] [--variant n|c|all] [--size B H W]...
//                   [--peak-tflops T] [--peak-tbs T] [--json FILE]
//
// Defaults: R = 20, W = 3, both variants, both sizes, the H100 figures of NOTES (51 TFLOP/s fp32
// FMA without tensor cores, 3.35 TB/s HBM3); the device's own theoretical peaks (SMs × 128 lanes
// × 2 × clock, bus width × memory clock × 2) are printed beside them. Without a usable CUDA
// device (or in a CPU-only build) it prints why and exits 0. Exit 1 when a case failed or gave a
// non-finite loss, 2 on a bad command line.
//
// Device memory: "held" is max(the mghf allocator's idle cache right after the case's calls,
// which holds every block a call used while the allocator keeps them, and free-before − the
// smallest cudaMemGetInfo free seen after any call of the case). The allocator's cache is
// emptied before each case, so each case starts from the CUDA context alone.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "cuda/cuda_backend.h"
#include "cuda/device_buffer.h"

// The allocator queries of device_buffer.h, declared weak: if a build lacks them, the bench
// still links and reports the cache as unknown instead of failing to build.
namespace mghf {
namespace cuda {
size_t device_cache_bytes() __attribute__((weak));
void device_cache_clear() __attribute__((weak));
}  // namespace cuda
}  // namespace mghf

using namespace mghf;

namespace {

struct Size {
  int B, H, W;
};

struct Cli {
  int repeat = 20, warmup = 3;
  bool do_n = true, do_c = true;
  std::vector<Size> sizes;
  double peak_tflops = 51.0, peak_tbs = 3.35;
  std::string json;
};

void usage(FILE* f) {
  std::fprintf(f,
               "Usage: mghf_bench_cuda [--repeat R] [--warmup W] [--variant n|c|all] [--size B H W]...\n"
               "                       [--peak-tflops T] [--peak-tbs T] [--json FILE]\n");
}

bool parse_int(const char* s, int lo, int* out) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (!end || *end || v < lo || v > 1 << 20) return false;
  *out = int(v);
  return true;
}

bool parse_pos(const char* s, double* out) {
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  if (!end || *end || !(v > 0)) return false;
  *out = v;
  return true;
}

// 0: ok, 1: --help, 2: error.
int parse(int argc, char** argv, Cli* cli) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto need = [&](int n) { return i + n < argc; };
    if (a == "-h" || a == "--help") return 1;
    if (a == "--repeat" && need(1)) {
      if (!parse_int(argv[++i], 1, &cli->repeat)) return 2;
    } else if (a == "--warmup" && need(1)) {
      if (!parse_int(argv[++i], 0, &cli->warmup)) return 2;
    } else if (a == "--variant" && need(1)) {
      const std::string v = argv[++i];
      if (v != "n" && v != "c" && v != "all") return 2;
      cli->do_n = v != "c";
      cli->do_c = v != "n";
    } else if (a == "--size" && need(3)) {
      Size s{};
      if (!parse_int(argv[i + 1], 1, &s.B) || !parse_int(argv[i + 2], 2, &s.H) ||
          !parse_int(argv[i + 3], 2, &s.W))
        return 2;
      i += 3;
      cli->sizes.push_back(s);
    } else if (a == "--peak-tflops" && need(1)) {
      if (!parse_pos(argv[++i], &cli->peak_tflops)) return 2;
    } else if (a == "--peak-tbs" && need(1)) {
      if (!parse_pos(argv[++i], &cli->peak_tbs)) return 2;
    } else if (a == "--json" && need(1)) {
      cli->json = argv[++i];
    } else {
      return 2;
    }
  }
  if (cli->sizes.empty()) cli->sizes = {{4, 256, 256}, {16, 128, 128}};
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Counted floors (bench/NOTES.md; the same formulas as bench/run.js).

double dfe_macs_per_pixel(const DfeArchitecture& a) {
  const double N = a.channels, c = a.half(), h = a.hidden();
  return 27 * N + a.blocks * (N * N + 3 * (2 * c * h + 9 * h));
}

// MGHF-n: three passes of the DFE's convolutions (fwd G, fwd S, input-backward S).
double gflop_n(const DfeArchitecture& a, const Size& s) {
  return 3 * 2 * dfe_macs_per_pixel(a) * double(s.B) * s.H * s.W / 1e9;
}

// MGHF-c, SPEC defaults: + LIP sim GEMM and its backward, unrolled Sinkhorn (200·P² forward,
// 3× that backward), CSC Grams (two forward, one backward).
double gflop_c(const DfeArchitecture& a, const Size& s, const LossOptions& o) {
  const LipOptions& l = o.lip;
  auto grid = [&](int n) { return n < l.patch ? 0 : (n - l.patch) / l.stride + 1; };
  const double P = std::min<double>(l.pmax, double(grid(s.H)) * grid(s.W));
  const double pairs = double(s.B) * a.channels, s2 = double(l.patch) * l.patch;
  const double M = std::min(o.M, a.channels);
  const double lip_gemm = pairs * 2 * P * P * s2 * 2;
  const double sinkhorn = pairs * (200.0 + 600.0) * P * P;
  const double gram = double(s.B) * 3 * 2 * M * M * double(s.H) * s.W;
  return gflop_n(a, s) + (lip_gemm + sinkhorn + gram) / 1e9;
}

// Fewest bytes a call moves to and from device memory (bench/NOTES.md, "CUDA floor"), without
// recomputing the forward: MGHF-n reads sr, gt (24 B/px), writes ∂L/∂sr (12 B/px), writes and
// reads back what the backward needs (1,120 B/px each way), reads the weights once. MGHF-c adds
// 4,096 B/px: G and S written (1,024) and read twice (histograms; CSC gather and LIP patches:
// 2,048), the kept weighted maps (512) and the terms' share of ∂L/∂S (512).
double bytes_floor(const DfeArchitecture& a, const Size& s, bool c) {
  const double N = a.channels, ch = a.half(), h = a.hidden();
  const double params = 28 * N + a.blocks * (N * N + N + 3 * (2 * ch * h + 9 * h));  // 72,704
  const double px = double(s.B) * s.H * s.W;
  return px * (c ? 2276.0 + 4096.0 : 2276.0) + 4 * params;
}

// Time floor in ms: the counted FLOPs at the compute peak or the fewest bytes at the bandwidth,
// whichever takes longer (GFLOP / (TFLOP/s) and GB / (TB/s) are both milliseconds).
double floor_ms(double gflop, double bytes, const Cli& cli) {
  return std::max(gflop / cli.peak_tflops, bytes / 1e9 / cli.peak_tbs);
}

// ---------------------------------------------------------------------------------------------

DfeWeights<float> make_weights(uint32_t seed) {
  DfeWeights<float> w;
  const DfeArchitecture a = w.arch;
  uint32_t state = seed;
  auto rnd = [&] {
    state = state * 1664525u + 1013904223u;
    return float(state >> 8) / float(1 << 24);
  };
  // PyTorch-like bounds ±1/√fan_in, so the features stay in range at the default width.
  w.for_each([&](const std::string& name, Buffer<float>& b) {
    const float bound = float(1.0 / std::sqrt(dfe_fan_in(name, a)));
    for (size_t i = 0; i < b.size(); ++i) b[i] = (2 * rnd() - 1) * bound;
  });
  return w;
}

void make_inputs(const Shape& s, uint32_t seed, std::vector<float>* sr, std::vector<float>* gt) {
  uint32_t state = seed;
  auto rnd = [&] {
    state = state * 1664525u + 1013904223u;
    return float(state >> 8) / float(1 << 24);
  };
  gt->resize(size_t(s.size()));
  sr->resize(size_t(s.size()));
  for (size_t i = 0; i < gt->size(); ++i) {
    (*gt)[i] = rnd();
    (*sr)[i] = std::min(1.f, std::max(0.f, (*gt)[i] + (rnd() - 0.5f) * 0.1f));
  }
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

double min_of(const std::vector<double>& v) {
  return v.empty() ? NAN : *std::min_element(v.begin(), v.end());
}

constexpr double kMiB = 1024.0 * 1024.0;

struct DeviceMemory {
  bool ok = false;
  size_t free_before = 0, min_free = 0, total = 0;
  void start() {
    (void)cudaDeviceSynchronize();
    ok = cudaMemGetInfo(&free_before, &total) == cudaSuccess;
    min_free = free_before;
    (void)cudaGetLastError();
  }
  void sample() {
    if (!ok) return;
    size_t f = 0, t = 0;
    if (cudaMemGetInfo(&f, &t) == cudaSuccess) {
      min_free = std::min(min_free, f);
    } else {
      (void)cudaGetLastError();
    }
  }
  double delta_mib() const { return ok ? double(free_before - min_free) / kMiB : NAN; }
};

double cache_mib() {
  if (!cuda::device_cache_bytes) return NAN;
  return double(cuda::device_cache_bytes()) / kMiB;
}

struct Result {
  std::string variant, error;
  Size size{};
  double gflop = 0, bytes = 0;
  double median_ms = NAN, min_ms = NAN, profiled_median_ms = NAN, loss = NAN;
  std::vector<double> runs_ms;
  std::vector<std::pair<std::string, double>> stages;  // name, median ms
  double mem_delta_mib = NAN, cache_mib = NAN;
  double held_mib() const {
    if (std::isnan(mem_delta_mib)) return cache_mib;
    if (std::isnan(cache_mib)) return mem_delta_mib;
    return std::max(mem_delta_mib, cache_mib);
  }
};

Result run_case(Backend& gpu, const DfeWeights<float>& w, bool c, const Size& size, const Cli& cli) {
  Result r;
  r.variant = c ? "c" : "n";
  r.size = size;
  LossOptions opt;
  opt.variant = c ? Variant::C : Variant::N;
  r.gflop = c ? gflop_c(w.arch, size, opt) : gflop_n(w.arch, size);
  r.bytes = bytes_floor(w.arch, size, c);
  const Shape s{size.B, 3, size.H, size.W};
  std::vector<float> sr, gt;
  make_inputs(s, 12345u + uint32_t(size.B * 7 + size.H), &sr, &gt);
  try {
    if (cuda::device_cache_clear) cuda::device_cache_clear();
    DeviceMemory mem;
    mem.start();
    using clock = std::chrono::steady_clock;
    for (int i = 0; i < cli.warmup; ++i) {
      auto res = gpu.loss(w, sr.data(), gt.data(), s, opt);
      r.loss = res.loss;
      mem.sample();
    }
    for (int i = 0; i < cli.repeat; ++i) {
      const auto t0 = clock::now();
      auto res = gpu.loss(w, sr.data(), gt.data(), s, opt);
      const auto t1 = clock::now();
      r.runs_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      r.loss = res.loss;
      mem.sample();
    }
    r.median_ms = median(r.runs_ms);
    r.min_ms = min_of(r.runs_ms);
    // Profiled calls, apart: stage timing may add events and synchronisation.
    LossOptions popt = opt;
    popt.profile = true;
    const int prep = std::max(5, cli.repeat / 2);
    std::vector<std::string> names;
    std::vector<std::vector<double>> vals;
    std::vector<double> wall;
    for (int i = 0; i < prep; ++i) {
      const auto t0 = clock::now();
      auto res = gpu.loss(w, sr.data(), gt.data(), s, popt);
      const auto t1 = clock::now();
      wall.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      mem.sample();
      for (const auto& st : res.timings) {
        const auto it = std::find(names.begin(), names.end(), st.first);
        if (it == names.end()) {
          names.push_back(st.first);
          vals.push_back({st.second});
        } else {
          vals[size_t(it - names.begin())].push_back(st.second);
        }
      }
    }
    r.profiled_median_ms = median(wall);
    for (size_t k = 0; k < names.size(); ++k) r.stages.emplace_back(names[k], median(vals[k]));
    r.mem_delta_mib = mem.delta_mib();
    r.cache_mib = cache_mib();
    if (!std::isfinite(r.loss)) r.error = "non-finite loss";
  } catch (const Error& e) {
    r.error = e.code() + ": " + e.what();
  } catch (const std::exception& e) {
    r.error = std::string("exception: ") + e.what();
  }
  return r;
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (const char ch : s) {
    const unsigned char u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      o += '\\';
      o += ch;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      o += buf;
    } else {
      o += ch;
    }
  }
  return o + "\"";
}

std::string json_num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];  // %.6g: at most 13 characters
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string case_name(const Result& r) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "MGHF-%s B=%d 3x%dx%d", r.variant.c_str(), r.size.B, r.size.H,
                r.size.W);
  return buf;
}

bool write_json(const std::string& path, const CudaStatus& st, const Cli& cli, double dev_tflops,
                double dev_tbs, const std::vector<Result>& rs) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return false;
  std::fprintf(f, "{\n  \"available\": %s,\n", st.available ? "true" : "false");
  if (!st.available) std::fprintf(f, "  \"reason\": %s,\n", json_str(st.reason).c_str());
  std::fprintf(f, "  \"device\": %s,\n  \"cc\": \"%d.%d\",\n  \"runtime\": %d,\n  \"driver\": %d,\n",
               json_str(st.device_name).c_str(), st.cc_major, st.cc_minor, st.runtime_version,
               st.driver_version);
  std::fprintf(f, "  \"repeat\": %d,\n  \"warmup\": %d,\n", cli.repeat, cli.warmup);
  std::fprintf(f, "  \"peak_tflops\": %s,\n  \"peak_tbs\": %s,\n", json_num(cli.peak_tflops).c_str(),
               json_num(cli.peak_tbs).c_str());
  std::fprintf(f, "  \"device_peak_tflops\": %s,\n  \"device_peak_tbs\": %s,\n",
               json_num(dev_tflops).c_str(), json_num(dev_tbs).c_str());
  std::fprintf(f, "  \"results\": [");
  for (size_t i = 0; i < rs.size(); ++i) {
    const Result& r = rs[i];
    std::fprintf(f, "%s\n    {\"case\": %s, \"variant\": \"%s\", \"batch\": %d, \"height\": %d, \"width\": %d,",
                 i ? "," : "", json_str(case_name(r)).c_str(), r.variant.c_str(), r.size.B, r.size.H,
                 r.size.W);
    std::fprintf(f, " \"gflop\": %s, \"floor_bytes\": %s, \"floor_ms\": %s,", json_num(r.gflop).c_str(),
                 json_num(r.bytes).c_str(), json_num(floor_ms(r.gflop, r.bytes, cli)).c_str());
    std::fprintf(f, " \"median_ms\": %s, \"min_ms\": %s, \"profiled_median_ms\": %s, \"loss\": %s,",
                 json_num(r.median_ms).c_str(), json_num(r.min_ms).c_str(),
                 json_num(r.profiled_median_ms).c_str(), json_num(r.loss).c_str());
    std::fprintf(f, " \"gflops\": %s, \"gbs\": %s,", json_num(r.gflop / (r.median_ms / 1e3)).c_str(),
                 json_num(r.bytes / 1e9 / (r.median_ms / 1e3)).c_str());
    std::fprintf(f, " \"mem_delta_mib\": %s, \"alloc_cache_mib\": %s, \"peak_mib\": %s,",
                 json_num(r.mem_delta_mib).c_str(), json_num(r.cache_mib).c_str(),
                 json_num(r.held_mib()).c_str());
    std::fprintf(f, " \"error\": %s,", r.error.empty() ? "null" : json_str(r.error).c_str());
    std::fprintf(f, " \"stages_ms\": {");
    for (size_t k = 0; k < r.stages.size(); ++k)
      std::fprintf(f, "%s%s: %s", k ? ", " : "", json_str(r.stages[k].first).c_str(),
                   json_num(r.stages[k].second).c_str());
    std::fprintf(f, "}, \"runs_ms\": [");
    for (size_t k = 0; k < r.runs_ms.size(); ++k)
      std::fprintf(f, "%s%s", k ? ", " : "", json_num(r.runs_ms[k]).c_str());
    std::fprintf(f, "]}");
  }
  std::fprintf(f, "\n  ]\n}\n");
  return std::fclose(f) == 0;
}

// "n B4 256x256": a per-stage column heading.
std::string stage_label(const Result& r) {
  return r.variant + " B" + std::to_string(r.size.B) + " " + std::to_string(r.size.H) + "x" +
         std::to_string(r.size.W);
}

std::string fmt(const char* f, double v) {
  if (!std::isfinite(v)) return "-";
  char buf[400];  // room for any double in %f
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  Cli cli;
  const int pr = parse(argc, argv, &cli);
  if (pr == 1) {
    usage(stdout);
    return 0;
  }
  if (pr == 2) {
    usage(stderr);
    return 2;
  }

  const CudaStatus st = cuda_status(0);
  if (!st.available) {
    std::printf("mghf_bench_cuda: CUDA unavailable, nothing timed: %s\n", st.reason.c_str());
    if (!cli.json.empty() && !write_json(cli.json, st, cli, NAN, NAN, {}))
      std::fprintf(stderr, "mghf_bench_cuda: cannot write %s\n", cli.json.c_str());
    return 0;
  }
  (void)cudaSetDevice(0);
  double dev_tflops = NAN, dev_tbs = NAN;
  {
    int sms = 0, khz = 0, mem_khz = 0, bus = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) == cudaSuccess &&
        cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0) == cudaSuccess && sms > 0 && khz > 0)
      dev_tflops = double(sms) * 128 * 2 * khz * 1e3 / 1e12;  // 128 fp32 lanes per SM (sm_80+)
    if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0) == cudaSuccess &&
        cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, 0) == cudaSuccess &&
        mem_khz > 0 && bus > 0)
      dev_tbs = 2.0 * mem_khz * 1e3 * (bus / 8.0) / 1e12;
    (void)cudaGetLastError();
    std::printf("mghf_bench_cuda: %s (cc %d.%d), CUDA runtime %d.%d, driver %d.%d, %d SMs\n",
                st.device_name.c_str(), st.cc_major, st.cc_minor, st.runtime_version / 1000,
                st.runtime_version % 1000 / 10, st.driver_version / 1000,
                st.driver_version % 1000 / 10, sms);
  }
  std::printf("floor peaks: %.1f TFLOP/s fp32, %.2f TB/s (device's own theoretical: %s TFLOP/s at "
              "its peak clock, %s TB/s)\n",
              cli.peak_tflops, cli.peak_tbs, fmt("%.1f", dev_tflops).c_str(),
              fmt("%.2f", dev_tbs).c_str());
  std::printf("%d warm-up + %d timed calls per case (wall time of Backend::loss: host inputs in, "
              "host gradient out), then %d profiled calls\n\n",
              cli.warmup, cli.repeat, std::max(5, cli.repeat / 2));

  Backend* gpu = nullptr;
  try {
    gpu = &cuda_backend(0);
  } catch (const std::exception& e) {
    std::printf("mghf_bench_cuda: cuda_status says available, but cuda_backend(0) failed: %s\n", e.what());
    return 1;
  }
  const DfeWeights<float> w = make_weights(12345u);

  std::vector<Result> rs;
  for (int v = 0; v < 2; ++v) {
    const bool c = v == 1;
    if ((c && !cli.do_c) || (!c && !cli.do_n)) continue;
    for (const Size& s : cli.sizes) {
      rs.push_back(run_case(*gpu, w, c, s, cli));
      const Result& r = rs.back();
      if (r.error.empty())
        std::printf("  %-26s loss %.6g  median %.2f ms\n", case_name(r).c_str(), r.loss, r.median_ms);
      else
        std::printf("  %-26s FAILED: %s\n", case_name(r).c_str(), r.error.c_str());
      std::fflush(stdout);
    }
  }

  // The table.
  std::printf("\n%-26s %9s %9s %8s %9s %7s %9s %8s %8s %6s %9s\n", "case", "median ms", "min ms",
              "GFLOP", "GFLOP/s", "min GB", "GB/s", "floor ms", "x floor", "%peak", "held MiB");
  for (const Result& r : rs) {
    const double fl = floor_ms(r.gflop, r.bytes, cli);
    const double secs = r.median_ms / 1e3;
    std::printf("%-26s %9s %9s %8.1f %9s %7.2f %9s %8.2f %8s %6s %9s\n", case_name(r).c_str(),
                fmt("%.2f", r.median_ms).c_str(), fmt("%.2f", r.min_ms).c_str(), r.gflop,
                fmt("%.0f", r.gflop / secs).c_str(), r.bytes / 1e9,
                fmt("%.0f", r.bytes / 1e9 / secs).c_str(), fl,
                fmt("%.2f", r.median_ms / fl).c_str(),
                fmt("%.1f", 100 * r.gflop / secs / 1e3 / cli.peak_tflops).c_str(),
                fmt("%.0f", r.held_mib()).c_str());
  }
  std::printf("(GFLOP: the counted floor of bench/NOTES.md; min GB: the fewest bytes a call moves "
              "(NOTES, \"CUDA floor\"); floor ms = max(GFLOP / peak, bytes / bandwidth); %%peak: of "
              "%.1f TFLOP/s; held MiB: device memory held by the call, see the header of "
              "bench_cuda.cpp)\n",
              cli.peak_tflops);

  // Per-stage medians, one column per case.
  std::vector<std::string> names;
  for (const Result& r : rs)
    for (const auto& st2 : r.stages)
      if (std::find(names.begin(), names.end(), st2.first) == names.end()) names.push_back(st2.first);
  if (!names.empty()) {
    std::printf("\nper stage (profile: true, median ms of the profiled calls)\n%-22s", "stage");
    for (const Result& r : rs)
      std::printf(" %14s", stage_label(r).c_str());
    std::printf("\n");
    auto stage = [](const Result& r, const std::string& n) {
      for (const auto& s2 : r.stages)
        if (s2.first == n) return s2.second;
      return double(NAN);
    };
    for (const std::string& n : names) {
      std::printf("%-22s", n.c_str());
      for (const Result& r : rs) std::printf(" %14s", fmt("%.3f", stage(r, n)).c_str());
      std::printf("\n");
    }
    std::printf("%-22s", "sum of stages");
    for (const Result& r : rs) {
      double sum = 0;
      for (const auto& s2 : r.stages)
        if (s2.first != "total") sum += s2.second;
      std::printf(" %14s", r.stages.empty() ? "-" : fmt("%.3f", sum).c_str());
    }
    std::printf("\n%-22s", "wall, profiled");
    for (const Result& r : rs) std::printf(" %14s", fmt("%.3f", r.profiled_median_ms).c_str());
    std::printf("\n%-22s", "wall, unprofiled");
    for (const Result& r : rs) std::printf(" %14s", fmt("%.3f", r.median_ms).c_str());
    std::printf("\n");
  } else {
    std::printf("\nper stage: the backend returned no timings with profile: true\n");
  }
  std::printf("\nmemory per case: max(allocator cache after the calls, free-before - min free) MiB:");
  for (const Result& r : rs)
    std::printf(" [%s: cache %s, cudaMemGetInfo %s]", case_name(r).c_str(),
                fmt("%.0f", r.cache_mib).c_str(), fmt("%.0f", r.mem_delta_mib).c_str());
  std::printf("\n");

  if (!cli.json.empty()) {
    if (write_json(cli.json, st, cli, dev_tflops, dev_tbs, rs)) {
      std::printf("wrote %s\n", cli.json.c_str());
    } else {
      std::fprintf(stderr, "mghf_bench_cuda: cannot write %s\n", cli.json.c_str());
      return 1;
    }
  }
  for (const Result& r : rs)
    if (!r.error.empty()) return 1;
  return 0;
}
