// The CUDA backend (backend.h): cuda_status() says whether and why not, and
// CudaBackend::loss mirrors loss.h's mghf_loss step by step on the device.
// Every call has its own stream and its own device memory, so calls from
// several threads run concurrently; the only shared state is the allocator
// (device_buffer.cu) and the two registries below, each under a mutex.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../entropy.h"  // select_channels
#include "cuda_backend.h"
#include "cuda_check.h"
#include "cuda_mghfc.h"
#include "dfe_kernels.h"
#include "device_buffer.h"

#define MGHF_STR_(...) #__VA_ARGS__
#define MGHF_STR(...) MGHF_STR_(__VA_ARGS__)

namespace mghf {
namespace {

using cuda::DeviceScope;

std::string version_string(int v) {  // 13000 → "13.0"
  return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

// The architectures this file was compiled for, e.g. "sm_90" (nvcc's
// __CUDA_ARCH_LIST__ is "900" or "800,900").
std::string built_for() {
#ifdef __CUDA_ARCH_LIST__
  const std::string list = MGHF_STR(__CUDA_ARCH_LIST__);
  std::string out;
  size_t i = 0;
  while (i < list.size()) {
    size_t j = list.find(',', i);
    if (j == std::string::npos) j = list.size();
    const int arch = std::atoi(list.substr(i, j - i).c_str());
    out += (out.empty() ? "sm_" : ", sm_") + std::to_string(arch / 10);
    i = j + 1;
  }
  return out;
#else
  return "unknown architectures";
#endif
}

std::string error_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

// One probe of the driver and `device`; every failure becomes a reason.
CudaStatus probe(int device) {
  CudaStatus st;
  if (cudaRuntimeGetVersion(&st.runtime_version) != cudaSuccess) st.runtime_version = 0;
  if (cudaDriverGetVersion(&st.driver_version) != cudaSuccess) st.driver_version = 0;
  const std::string rt = version_string(st.runtime_version);
  if (st.driver_version == 0) {
    st.reason = "no NVIDIA driver: libcuda.so could not be loaded (this build needs a driver "
                "for CUDA >= " + std::to_string(st.runtime_version / 1000) + ".0)";
    return st;
  }
  const std::string drv = version_string(st.driver_version);
  cudaError_t e = cudaGetDeviceCount(&st.device_count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    st.device_count = 0;
    if (e == cudaErrorInsufficientDriver)
      st.reason = "driver too old for CUDA runtime " + rt + ": needs >= " +
                  std::to_string(st.runtime_version / 1000) +
                  ".0, the installed driver supports CUDA " + drv + " (update the NVIDIA driver)";
    else if (e == cudaErrorNoDevice)
      st.reason = "no CUDA device (driver for CUDA " + drv + " is installed)";
    else if (e == cudaErrorSystemDriverMismatch)
      st.reason = "the NVIDIA driver library and kernel module versions differ "
                  "(reboot after a driver update?)";
    else
      st.reason = "cudaGetDeviceCount failed: " + error_text(e);
    return st;
  }
  if (st.device_count == 0) {
    st.reason = "no CUDA device (driver for CUDA " + drv + " is installed)";
    return st;
  }
  if (device < 0 || device >= st.device_count) {
    st.reason = "no CUDA device " + std::to_string(device) + ": " +
                std::to_string(st.device_count) + " present";
    return st;
  }
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    st.reason = "cudaGetDeviceProperties(" + std::to_string(device) + ") failed: " + error_text(e);
    return st;
  }
  st.device_name = prop.name;
  st.cc_major = prop.major;
  st.cc_minor = prop.minor;
  // Does this build hold code the device can run? Ask for one kernel's attributes there.
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
  e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cuda::probe_kernel_image();
  if (prev >= 0 && prev != device) (void)cudaSetDevice(prev);
  (void)cudaGetLastError();
  const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
  if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction) {
    st.reason = "no kernel image for compute capability " + cc + " in this build (built for " +
                built_for() + ")";
    return st;
  }
  if (e != cudaSuccess) {
    st.reason = "CUDA cannot run on device " + std::to_string(device) + " (" + st.device_name +
                "): " + error_text(e);
    return st;
  }
  st.available = true;
  return st;
}

// ---- per-call resources: RAII, destroyed in the safe order ------------------


// The call's own stream. Destroying it first drains it, so device memory
// declared before it goes back to the cache only once no kernel uses it, on
// the error paths too.
class Stream {
 public:
  Stream() { MGHF_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() {
    (void)cudaStreamSynchronize(s_);
    (void)cudaStreamDestroy(s_);
    (void)cudaGetLastError();
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  operator cudaStream_t() const { return s_; }
  void sync() { MGHF_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

// loss.h's Stopwatch on the stream: an event per lap, read once the stream is done.
class Timeline {
 public:
  Timeline(bool on, cudaStream_t stream) : on_(on), stream_(stream) {
    if (on_) mark("start");
  }
  ~Timeline() {
    for (auto& m : marks_) (void)cudaEventDestroy(m.second);
  }
  Timeline(const Timeline&) = delete;
  Timeline& operator=(const Timeline&) = delete;
  void lap(const char* name) {
    if (on_) mark(name);
  }
  // After the stream has been synchronised.
  void collect(std::vector<std::pair<std::string, double>>& out) {
    for (size_t i = 1; i < marks_.size(); ++i) {
      float ms = 0;
      MGHF_CUDA_CHECK(cudaEventElapsedTime(&ms, marks_[i - 1].second, marks_[i].second));
      out.emplace_back(marks_[i].first, double(ms));
    }
  }

 private:
  void mark(const char* name) {
    cudaEvent_t e = nullptr;
    MGHF_CUDA_CHECK(cudaEventCreate(&e));
    marks_.emplace_back(name, e);
    MGHF_CUDA_CHECK(cudaEventRecord(e, stream_));
  }
  bool on_;
  cudaStream_t stream_;
  std::vector<std::pair<const char*, cudaEvent_t>> marks_;
};

// Every device buffer of one call. Declared before the Stream, so destroyed after it.
struct CallMemory {
  CallMemory(const DfeArchitecture& a, const Shape& s) : scratch(a, s.B, s.H, s.W) {}
  cuda::DeviceDfeWeights w;
  cuda::DeviceBuffer<float> sr, gt, G, S, dS, dx;
  cuda::DeviceDfeTape tape;
  cuda::DfeScratch scratch;
};

void upload_array(const float* h, size_t n, cuda::DeviceBuffer<float>& d, cudaStream_t stream) {
  d.resize(n);
  if (n)
    MGHF_CUDA_CHECK(
        cudaMemcpyAsync(d.data(), h, n * sizeof(float), cudaMemcpyHostToDevice, stream));
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const CudaStatus& st)
      : device_(device),
        isa_("sm_" + std::to_string(st.cc_major) + std::to_string(st.cc_minor) + " (" +
             st.device_name + ")") {}
  std::string name() const override { return "cuda"; }
  std::string isa() const override { return isa_; }
  int threads() const override { return 1; }
  LossResult<float> loss(const DfeWeights<float>& w, const float* sr, const float* gt,
                         const Shape& s, const LossOptions& opt) override {
    return run_loss(w, sr, gt, false, nullptr, s, opt);
  }
  // The same on device tensors: sr, gt and grad (∂L/∂sr, written when opt.grad) are device
  // pointers on this device; r.grad stays empty. No host round trip of the images or gradient.
  LossResult<float> loss_on_device(const DfeWeights<float>& w, const float* sr, const float* gt,
                                   float* grad, const Shape& s, const LossOptions& opt) {
    return run_loss(w, sr, gt, true, grad, s, opt);
  }
  void features(const DfeWeights<float>& w, const float* x, const Shape& s, InputRange range,
                float* F, const CancelFlag* cancel) override;

 private:
  const int device_;
  const std::string isa_;
  LossResult<float> run_loss(const DfeWeights<float>& w, const float* sr, const float* gt,
                             bool on_device, float* device_grad, const Shape& s,
                             const LossOptions& opt);
  // Calls on one device run one at a time (each on its own stream). The GPU is
  // saturated by one call anyway, and it means no block of the cache can be
  // handed to another call while a failed call's kernels are still draining.
  std::mutex call_mutex_;
};

// loss.h's mghf_loss, line for line, with the tensors on the device: the same
// finiteness checks after each stage (a scan on the device, then the index
// and value downloaded) and the same cancel checks between stages; each scan
// synchronises the stream, so a cancel takes effect within one stage.
// on_device: sr and gt are device pointers and the gradient goes to device_grad;
// otherwise they are host arrays (uploaded here) and the gradient comes back in r.grad.
LossResult<float> CudaBackend::run_loss(const DfeWeights<float>& w, const float* sr,
                                        const float* gt, bool on_device, float* device_grad,
                                        const Shape& s, const LossOptions& opt) {
  LossResult<float> r;
  const TermPlan plan = plan_terms(opt);
  const bool c = plan.c;
  const double g1 = plan.g1, g2 = plan.g2, g3 = plan.g3;
  const bool do_n = plan.do_n, do_csc = plan.do_csc, do_lip = plan.do_lip;
  const bool b1 = plan.b1, b2 = plan.b2, b3 = plan.b3;
  r.skipped = plan.skipped;
  if (opt.grad && !on_device) {
    r.grad.resize(size_t(s.size()));
    r.grad.zero();
  }
  if (!do_n && !do_csc && !do_lip) {  // every term off: no work at all
    if (opt.grad && on_device && s.size()) {
      DeviceScope scope(device_);
      MGHF_CUDA_CHECK(cudaMemset(device_grad, 0, size_t(s.size()) * sizeof(float)));
    }
    return r;
  }

  std::lock_guard<std::mutex> serial(call_mutex_);
  throw_if_cancelled(opt.cancel);
  DeviceScope scope(device_);
  CallMemory mem(w.arch, s);
  Stream stream;
  Timeline clock(opt.profile, stream);  // "dfe_forward" includes the uploads
  const int N = w.arch.channels;
  const int64_t P = int64_t(s.H) * s.W, count = int64_t(s.B) * N * P;
  auto ctx = [&] { return numeric_context(opt, w); };
  auto check_device = [&](const float* x, int64_t n, NumericStage stage, const char* what) {
    float value = 0;
    const int64_t i = cuda::first_nonfinite(x, n, &value, stream);
    if (i >= 0) numeric_error(stage, std::string(what) + " at index " + std::to_string(i), value, ctx());
  };
  cuda::upload(w, mem.w, stream);
  if (!on_device) {
    upload_array(sr, size_t(s.size()), mem.sr, stream);
    upload_array(gt, size_t(s.size()), mem.gt, stream);
    sr = mem.sr.data();
    gt = mem.gt.data();
  }
  // Forward only (opts.grad false): no tape, no ∂L/∂S, no backward, as on the CPU.
  const bool grad = opt.grad;
  mem.G.resize(size_t(count));
  mem.S.resize(size_t(count));
  if (grad) mem.dS.resize(size_t(count));
  cuda::dfe_forward(mem.w, gt, s.B, s.H, s.W, opt.range, mem.G.data(), nullptr,
                    mem.scratch, stream);
  check_device(mem.G.data(), count, NumericStage::DfeForwardGt, "the features of gt");
  throw_if_cancelled(opt.cancel);
  cuda::dfe_forward(mem.w, sr, s.B, s.H, s.W, opt.range, mem.S.data(),
                    grad ? &mem.tape : nullptr, mem.scratch, stream);
  check_device(mem.S.data(), count, NumericStage::DfeForwardSr, "the features of sr");
  if (grad && count)
    MGHF_CUDA_CHECK(cudaMemsetAsync(mem.dS.data(), 0, size_t(count) * sizeof(float), stream));
  float* const dS = grad ? mem.dS.data() : nullptr;
  auto check_gradient = [&](NumericStage stage) {
    if (grad) check_device(dS, count, stage, "its gradient");
  };
  clock.lap("dfe_forward");

  const float* G = mem.G.data();
  const float* S = mem.S.data();
  if (do_n) {
    throw_if_cancelled(opt.cancel);
    r.n = cuda::sum_squared_difference(S, G, count, stream) / double(count);
    // ∂(Γ1·L_n)/∂S = Γ1 · 2 (S − G) / (B·N·H·W)
    if (grad) cuda::n_gradient(S, G, count, float(g1 * 2.0 / double(count)), dS, stream);
    check_finite_value(r.n, NumericStage::N, "L_n", ctx);
    check_gradient(NumericStage::N);
    clock.lap("n");
  }
  if (do_csc) {
    throw_if_cancelled(opt.cancel);
    const int M = std::min(opt.M, N);
    std::vector<double> imp = cuda::importance(G, S, s.B, N, P, stream);
    check_finite(imp.data(), int64_t(imp.size()), NumericStage::Importance, "the importance", ctx);
    ChannelSelection chosen = select_channels(imp, s.B, N, M, opt.selected, opt.alpha, opt.gamma);
    std::vector<int>& sel = chosen.sel;
    const std::vector<double>& wts = chosen.weights;
    check_finite(wts.data(), int64_t(wts.size()), NumericStage::Importance, "the weights w", ctx);
    clock.lap("importance");
    throw_if_cancelled(opt.cancel);
    const CscWeights cw{b1 ? opt.beta1 : 0, b2 ? opt.beta2 : 0, b3 ? opt.beta3 : 0, g2};
    const CscParts parts =
        cuda::csc(G, S, s.B, N, P, M, sel.data(), wts.data(), cw, dS, stream);
    r.mse = b1 ? parts.mse : 0;
    r.corr = b2 ? parts.corr : 0;
    r.gram = b3 ? parts.gram : 0;
    r.csc = opt.beta1 * r.mse + opt.beta2 * r.corr + opt.beta3 * r.gram;
    check_finite_value(r.mse, NumericStage::Csc, "mse", ctx);
    check_finite_value(r.corr, NumericStage::Csc, "corr", ctx);
    check_finite_value(r.gram, NumericStage::Csc, "gram", ctx);
    check_finite_value(r.csc, NumericStage::Csc, "csc", ctx);
    check_gradient(NumericStage::Csc);
    if (opt.details) {
      r.importance = std::move(imp);
      r.selected = std::move(sel);
    }
    clock.lap("csc");
  }
  if (do_lip) {
    throw_if_cancelled(opt.cancel);
    LipOptions lip = opt.lip;
    lip.monce.cancel = opt.cancel;
    r.lip = cuda::lip(G, S, s.B, N, s.H, s.W, lip, g3, dS, stream);
    check_finite_value(r.lip, NumericStage::Lip, "L_lip", ctx);
    check_gradient(NumericStage::Lip);
    clock.lap("lip");
  }
  r.loss = g1 * r.n + g2 * r.csc + g3 * r.lip;
  if (!c) r.loss = r.n;
  check_finite_value(r.loss, NumericStage::Total, "the loss", ctx);
  if (!grad) {
    stream.sync();
    clock.collect(r.timings);
    return r;
  }
  throw_if_cancelled(opt.cancel);
  if (on_device) {
    cuda::dfe_backward(mem.w, mem.tape, dS, s.B, s.H, s.W, opt.range, device_grad, mem.scratch,
                       stream);
    check_device(device_grad, s.size(), NumericStage::DfeBackward, "the gradient");
    clock.lap("dfe_backward");
    stream.sync();
    clock.collect(r.timings);
    return r;
  }
  mem.dx.resize(size_t(s.size()));
  cuda::dfe_backward(mem.w, mem.tape, dS, s.B, s.H, s.W, opt.range, mem.dx.data(),
                     mem.scratch, stream);
  if (s.size())
    MGHF_CUDA_CHECK(cudaMemcpyAsync(r.grad.data(), mem.dx.data(), size_t(s.size()) * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream));
  clock.lap("dfe_backward");  // includes the download
  stream.sync();
  check_finite(r.grad.data(), s.size(), NumericStage::DfeBackward, "the gradient", ctx);
  clock.collect(r.timings);
  return r;
}

void CudaBackend::features(const DfeWeights<float>& w, const float* x, const Shape& s,
                           InputRange range, float* F, const CancelFlag* cancel) {
  std::lock_guard<std::mutex> serial(call_mutex_);
  throw_if_cancelled(cancel);
  DeviceScope scope(device_);
  CallMemory mem(w.arch, s);
  Stream stream;
  const size_t count = size_t(s.B) * size_t(w.arch.channels) * size_t(s.H) * size_t(s.W);
  cuda::upload(w, mem.w, stream);
  upload_array(x, size_t(s.size()), mem.sr, stream);
  mem.G.resize(count);
  cuda::dfe_forward(mem.w, mem.sr.data(), s.B, s.H, s.W, range, mem.G.data(), nullptr, mem.scratch,
                    stream);
  if (count)
    MGHF_CUDA_CHECK(
        cudaMemcpyAsync(F, mem.G.data(), count * sizeof(float), cudaMemcpyDeviceToHost, stream));
  stream.sync();
  // The whole forward is one pass of whole-batch launches: cancelled, it is
  // dropped here. F is on the host: the CPU backend's scan.
  throw_if_cancelled(cancel);
  check_finite(F, int64_t(count), NumericStage::Features, "the features", [&] {
    NumericContext c;
    c.weights_hint = largest_weight_hint(w);
    return c;
  });
}

}  // namespace

CudaStatus cuda_status(int device) {
  static std::mutex m;
  static auto* probed = new std::map<int, CudaStatus>();  // leaked: no exit-time teardown
  try {
    std::lock_guard<std::mutex> lock(m);
    auto it = probed->find(device);
    if (it == probed->end()) it = probed->emplace(device, probe(device)).first;
    return it->second;
  } catch (...) {
    CudaStatus st;
    st.reason = "probing CUDA failed unexpectedly";
    return st;
  }
}

namespace {
CudaBackend& cuda_backend_on(int device);
}

Backend& cuda_backend(int device) { return cuda_backend_on(device); }

LossResult<float> cuda_loss_on_device(int device, const DfeWeights<float>& w, const float* sr,
                                      const float* gt, float* grad, const Shape& s,
                                      const LossOptions& opt) {
  return cuda_backend_on(device).loss_on_device(w, sr, gt, grad, s, opt);
}

namespace {
CudaBackend& cuda_backend_on(int device) {
  const CudaStatus st = cuda_status(device);
  if (!st.available) throw Error("E_UNSUPPORTED", "CUDA is not usable: " + st.reason);
  static std::mutex m;
  static auto* backends = new std::map<int, std::unique_ptr<CudaBackend>>();  // leaked, as above
  std::lock_guard<std::mutex> lock(m);
  std::unique_ptr<CudaBackend>& b = (*backends)[device];
  if (!b) b = std::make_unique<CudaBackend>(device, st);
  return *b;
}
}  // namespace

}  // namespace mghf
