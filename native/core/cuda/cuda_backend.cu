// The CUDA backend (backend.h): cuda_status() says whether and why not, and
// CudaBackend::loss, which uploads sr and gt, runs the loss composed from the
// ops (ops/loss_ops.h's compose_loss: the CUDA ops of ops_cuda.cu, each on its
// own stream) and downloads the gradient. The loss is assembled there only.
// Every op has its own stream and its own device memory; the only shared state
// is the allocator (device_buffer.cu) and the two registries below, each under a mutex.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../ops/loss_ops.h"
#include "cuda_backend.h"
#include "call_stream.h"
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

using cuda::Stream;  // call_stream.h

// Every device buffer of one features() call. Declared before the Stream, so destroyed after it.
struct CallMemory {
  CallMemory(const DfeArchitecture& a, const Shape& s) : scratch(a, s.B, s.H, s.W) {}
  cuda::DeviceDfeWeights w;
  cuda::DeviceBuffer<float> sr, G;
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
                         const Shape& s, const LossOptions& opt) override;
  void features(const DfeWeights<float>& w, const float* x, const Shape& s, InputRange range,
                float* F, const CancelFlag* cancel) override;

 private:
  const int device_;
  const std::string isa_;
  // Calls on one device run one at a time (each on its own stream). The GPU is
  // saturated by one call anyway, and it means no block of the cache can be
  // handed to another call while a failed call's kernels are still draining.
  std::mutex call_mutex_;
};

// A host array as a tensor on `device` (the toDevice op: its own stream, synchronised).
ops::Value upload_tensor(const float* host, const Shape& s, int device) {
  ops::Value h;
  h.kind = ops::Kind::F32;
  h.dims = {s.B, s.C, s.H, s.W};
  h.f32 = ops::F32Data::view(host, size_t(s.size()));
  ops::Attrs a;
  ops::Attr d;
  d.number = device;
  a.set("device", d);
  std::vector<ops::Value> in{std::move(h)};
  ops::Outputs out = ops::run_op("toDevice", in, a);
  return std::move(out.at(0).second);
}

// The composed loss (ops/loss_ops.h) on host arrays: sr and gt uploaded, the gradient
// downloaded into r.grad. Options, checks, cancel and timings are the composition's.
LossResult<float> CudaBackend::loss(const DfeWeights<float>& w, const float* sr, const float* gt,
                                    const Shape& s, const LossOptions& opt) {
  // Calls on one device run one at a time: the GPU is saturated by one call anyway.
  std::lock_guard<std::mutex> serial(call_mutex_);
  throw_if_cancelled(opt.cancel);
  DeviceScope scope(device_);
  ops::Value weights;
  weights.kind = ops::Kind::Weights;
  // The caller keeps w alive for the call; the ops only read it.
  weights.weights = std::shared_ptr<const DfeWeights<float>>(&w, [](const DfeWeights<float>*) {});
  ops::ComposedLoss c =
      ops::compose_loss(upload_tensor(sr, s, device_), upload_tensor(gt, s, device_), weights, opt);
  LossResult<float> r = std::move(c.r);
  if (opt.grad) {
    r.grad.resize(size_t(s.size()));
    if (s.size())
      MGHF_CUDA_CHECK(cudaMemcpy(r.grad.data(), c.grad.device->data(), size_t(s.size()) * sizeof(float),
                                 cudaMemcpyDeviceToHost));
  }
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
