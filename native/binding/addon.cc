// The N-API binding: the only file that includes napi.h. It converts already
// validated JS values (lib/ checks every argument first) into core types,
// checks only what memory safety needs, and runs the work off the event loop.
// Inputs are copied before the work starts, so a caller mutating its arrays
// meanwhile cannot race the computation.
//
// Teardown (worker.terminate(), an environment shutting down) can land at any
// moment, also while a call runs. Node then waits for running async work to
// finish and calls its completion on an environment that can no longer run
// JavaScript: every N-API call that would (setting a property, settling a
// promise, throwing) fails with napi_pending_exception and no exception
// pending. With C++ exceptions on (NAPI_CPP_EXCEPTIONS, binding.gyp and
// CMakeLists.txt), node-addon-api turns that failure into a Napi::Error, and
// its attempt to throw that into JavaScript fails again and would escape as a
// C++ exception from a C callback: std::terminate, the whole process gone.
// So: NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS (node-addon-api drops a throw
// that a terminating environment cannot take), and OnOK/OnError catch what
// settling the promise throws (settle_promise). The addon keeps no
// per-environment JavaScript state (no references or functions held between
// calls; the native statics, thread pool, caches and CUDA backends, belong to
// no environment), so nothing needs an environment cleanup hook.
#ifndef NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#define NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#endif
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "backend.h"
#include "cuda/cuda_backend.h"
#include "buffer.h"
#include "error.h"
#include "js_buffers.h"
#include "ops/registry.h"
#include "train/any_trainer.h"

namespace {

using mghf::Buffer;

[[noreturn]] void fail(const std::string& code, const std::string& message) {
  throw mghf::Error(code, message);
}

Napi::Error to_js_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

Buffer<float> copy_f32(const Napi::Value& v, size_t expected, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    fail("E_DTYPE", std::string(name) + " must be a Float32Array");
  auto a = v.As<Napi::Float32Array>();
  if (a.ElementLength() != expected)
    fail("E_SHAPE", std::string(name) + " has " + std::to_string(a.ElementLength()) +
                        " elements, expected " + std::to_string(expected));
  Buffer<float> out(expected);
  std::copy(a.Data(), a.Data() + expected, out.data());
  return out;
}

int get_int(const Napi::Object& o, const char* key, int lo, int hi) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) fail("E_ARGUMENT", std::string(key) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || d != double(int(d)))
    fail("E_ARGUMENT", std::string(key) + " must be an integer in [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "]");
  return int(d);
}

mghf::Shape get_shape(const Napi::Value& v) {
  if (!v.IsArray()) fail("E_SHAPE", "dims must be an array");
  auto a = v.As<Napi::Array>();
  if (a.Length() != 4) fail("E_SHAPE", "dims must have 4 entries [B, 3, H, W]");
  int d[4];
  for (uint32_t i = 0; i < 4; ++i) {
    Napi::Value x = a.Get(i);
    double f = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
    if (!(f >= 1 && f <= (1 << 20)) || f != double(int(f)))
      fail("E_SHAPE", "dims must hold positive integers");
    d[i] = int(f);
  }
  mghf::Shape s{d[0], d[1], d[2], d[3]};
  if (s.C != 3) fail("E_SHAPE", "images must have 3 channels");
  if (s.H < 2 || s.W < 2) fail("E_TOO_SMALL", "images must be at least 2×2");
  if (double(s.B) * s.H * s.W * 3 > double(1ull << 34)) fail("E_SHAPE", "images are too large");
  return s;
}

// {channels, blocks, expand} with the bounds lib/weights.ts also enforces.
mghf::DfeArchitecture get_architecture(const Napi::Object& o) {
  mghf::DfeArchitecture a;
  a.channels = get_int(o, "channels", 2, 4096);
  a.blocks = get_int(o, "blocks", 1, 64);
  a.expand = get_int(o, "expand", 1, 64);
  if (a.channels % 2) fail("E_WEIGHTS", "channels must be even");
  return a;
}

mghf::DfeWeights<float> get_weights(const Napi::Value& v) {
  if (!v.IsObject()) fail("E_WEIGHTS", "weights must be an object");
  Napi::Object o = v.As<Napi::Object>();
  const mghf::DfeArchitecture a = get_architecture(o);
  Napi::Value tv = o.Get("tensors");
  if (!tv.IsObject()) fail("E_WEIGHTS", "weights.tensors must be an object");
  Napi::Object tensors = tv.As<Napi::Object>();
  mghf::DfeWeights<float> w(a);
  w.for_each([&](const std::string& name, Buffer<float>& b) {
    if (!tensors.Has(name)) fail("E_WEIGHTS", "weights.tensors is missing " + name);
    Buffer<float> src = copy_f32(tensors.Get(name), b.size(), ("weights tensor " + name).c_str());
    b.swap(src);
  });
  return w;
}

// {device: 'cpu' | 'cuda', deviceIndex} → the backend (lib/ has already
// checked that CUDA is available; cuda_backend throws E_UNSUPPORTED if not).
struct DeviceChoice {
  bool cuda = false;
  int index = 0;
  mghf::Backend& backend() const { return cuda ? mghf::cuda_backend(index) : mghf::cpu_backend(); }
};

DeviceChoice get_device(const Napi::Object& opts) {
  DeviceChoice d;
  Napi::Value v = opts.Get("device");
  d.cuda = v.IsString() && v.As<Napi::String>().Utf8Value() == "cuda";
  Napi::Value i = opts.Get("deviceIndex");
  if (i.IsNumber()) {
    const double x = i.As<Napi::Number>().DoubleValue();
    if (!(x >= 0 && x < 1024) || x != double(int(x))) fail("E_OPTION", "deviceIndex must be a small integer");
    d.index = int(x);
  }
  return d;
}

// ---------------------------------------------------------------- cancellation

// A cancel token (an AbortSignal's native side): lib/ creates one per call with
// a signal, passes it with the call, and raises it when the signal aborts. The
// flag is shared by the JS handle and every worker using it, so neither can
// free it under the other.
using CancelRef = std::shared_ptr<mghf::CancelFlag>;
constexpr napi_type_tag kCancelTag = {0x6d676866c0ffee02ULL, 0x63616e63656c0a5dULL};

CancelRef get_cancel(const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  if (!v.IsExternal()) fail("E_ARGUMENT", "expected a cancel token from cancelToken");
  auto ext = v.As<Napi::External<CancelRef>>();
  if (!ext.CheckTypeTag(&kCancelTag)) fail("E_ARGUMENT", "expected a cancel token from cancelToken");
  return *ext.Data();
}

Napi::Value CancelToken(const Napi::CallbackInfo& info) {
  auto handle = Napi::External<CancelRef>::New(
      info.Env(), new CancelRef(std::make_shared<mghf::CancelFlag>(false)),
      [](Napi::Env, CancelRef* p) { delete p; });
  handle.TypeTag(&kCancelTag);
  return handle;
}

// cancel(token): the call holding it stops at its next check (E_ABORTED).
Napi::Value Cancel(const Napi::CallbackInfo& info) {
  try {
    CancelRef c = get_cancel(info.Length() > 0 ? info[0] : info.Env().Undefined());
    if (c) c->store(true);
  } catch (const mghf::Error& e) {
    throw Napi::TypeError::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

struct LossArgs {
  Buffer<float> sr, gt;
  mghf::Shape shape;
  mghf::DfeWeights<float> weights;
  mghf::LossOptions opt;
  DeviceChoice device;
  CancelRef cancel;  // opt.cancel points into it
};

mghf::InputRange get_range(const Napi::Object& opts) {
  Napi::Value r = opts.Get("inputRange");
  if (r.IsString() && r.As<Napi::String>().Utf8Value() == "symmetric")
    return mghf::InputRange::Symmetric;
  return mghf::InputRange::Unit;
}

std::unique_ptr<LossArgs> parse_loss_args(const Napi::CallbackInfo& info) {
  if (info.Length() < 5 || !info[4].IsObject())
    fail("E_ARGUMENT", "expected (sr, gt, dims, weights, options)");
  auto args = std::make_unique<LossArgs>();
  args->shape = get_shape(info[2]);
  const size_t n = size_t(args->shape.size());
  args->sr = copy_f32(info[0], n, "sr");
  args->gt = copy_f32(info[1], n, "gt");
  args->weights = get_weights(info[3]);
  Napi::Object opts = info[4].As<Napi::Object>();
  Napi::Value variant = opts.Get("variant");
  mghf::LossOptions& o = args->opt;
  o.variant = (variant.IsString() && variant.As<Napi::String>().Utf8Value() == "n")
                  ? mghf::Variant::N
                  : mghf::Variant::C;
  o.range = get_range(opts);
  args->device = get_device(opts);
  // lib/loss.ts fills and validates every option; absent ones keep the SPEC defaults.
  auto num = [&](const char* key, double& dst) {
    Napi::Value v = opts.Get(key);
    if (v.IsNumber()) dst = v.As<Napi::Number>().DoubleValue();
  };
  auto integer = [&](const char* key, int& dst) {
    Napi::Value v = opts.Get(key);
    if (v.IsNumber()) {
      const double d = v.As<Napi::Number>().DoubleValue();
      if (!(d >= 1 && d <= 1e9)) fail("E_OPTION", std::string(key) + " must be a positive integer");
      dst = int(d);
    }
  };
  auto flag = [&](const char* key, bool& dst) {
    Napi::Value v = opts.Get(key);
    if (v.IsBoolean()) dst = v.As<Napi::Boolean>().Value();
  };
  num("gamma1", o.gamma1);
  num("gamma2", o.gamma2);
  num("gamma3", o.gamma3);
  num("beta1", o.beta1);
  num("beta2", o.beta2);
  num("beta3", o.beta3);
  integer("M", o.M);
  num("alpha", o.alpha);
  num("gamma", o.gamma);
  integer("patch", o.lip.patch);
  integer("stride", o.lip.stride);
  integer("pmax", o.lip.pmax);
  num("tau", o.lip.monce.tau);
  num("epsOt", o.lip.monce.eps_ot);
  num("Q", o.lip.monce.Q);
  integer("iters", o.lip.monce.iters);
  flag("sinkhornGrad", o.lip.monce.sinkhorn_grad);
  flag("returnDetails", o.details);
  flag("profile", o.profile);
  flag("grad", o.grad);
  args->cancel = get_cancel(opts.Get("cancel"));
  o.cancel = args->cancel.get();
  const int N = args->weights.arch.channels;
  const int M = std::min(o.M, N);
  Napi::Value sel = opts.Get("selected");
  if (sel.IsTypedArray()) {
    if (sel.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      fail("E_OPTION", "selected must be an Int32Array");
    auto a = sel.As<Napi::Int32Array>();
    if (a.ElementLength() != size_t(args->shape.B) * M)
      fail("E_OPTION", "selected must hold B·M indices");
    o.selected.assign(a.Data(), a.Data() + a.ElementLength());
    for (int v : o.selected)
      if (v < 0 || v >= N) fail("E_OPTION", "selected holds a channel index out of range");
  }
  // Memory safety only: the LIP patches must lie inside the image.
  if (o.variant == mghf::Variant::C && o.gamma3 != 0 &&
      (args->shape.H < o.lip.patch || args->shape.W < o.lip.patch))
    fail("E_TOO_SMALL", "images must be at least patch×patch pixels for the LIP term");
  return args;
}

Napi::Float32Array to_js(Napi::Env env, const Buffer<float>& b) {
  auto out = Napi::Float32Array::New(env, b.size());
  std::copy(b.data(), b.data() + b.size(), out.Data());
  return out;
}

Napi::Object loss_result_to_js(Napi::Env env, const mghf::LossResult<float>& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", r.loss);
  Napi::Object parts = Napi::Object::New(env);
  parts.Set("n", r.n);
  parts.Set("mse", r.mse);
  parts.Set("corr", r.corr);
  parts.Set("gram", r.gram);
  parts.Set("csc", r.csc);
  parts.Set("lip", r.lip);
  o.Set("parts", parts);
  if (!r.importance.empty()) {
    auto imp = Napi::Float64Array::New(env, r.importance.size());
    std::copy(r.importance.begin(), r.importance.end(), imp.Data());
    o.Set("importance", imp);
    auto sel = Napi::Int32Array::New(env, r.selected.size());
    std::copy(r.selected.begin(), r.selected.end(), sel.Data());
    o.Set("selected", sel);
  }
  if (!r.timings.empty()) {
    Napi::Object t = Napi::Object::New(env);
    double total = 0;
    for (const auto& kv : r.timings) {
      t.Set(kv.first, kv.second);
      total += kv.second;
    }
    t.Set("total", total);
    o.Set("timings", t);
  }
  Napi::Array skipped = Napi::Array::New(env, r.skipped.size());
  for (size_t i = 0; i < r.skipped.size(); ++i) skipped.Set(uint32_t(i), r.skipped[i]);
  o.Set("skipped", skipped);
  if (r.grad.size() > 0) o.Set("grad", to_js(env, r.grad));  // none when options.grad was false
  return o;
}

// Runs `work` (core code that may throw mghf::Error or bad_alloc) and converts
// any failure to a JS error with a code.
template <class F>
auto guarded(Napi::Env env, F&& work) -> decltype(work()) {
  try {
    return work();
  } catch (const mghf::Error& e) {
    throw to_js_error(env, e.code(), e.what());
  } catch (const std::bad_alloc&) {
    throw to_js_error(env, "E_NATIVE", "out of memory");
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw to_js_error(env, "E_NATIVE", e.what());
  }
}

// An AsyncWorker that settles a promise; Compute runs on a libuv thread.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;
  void Execute() override {
    try {
      Run();
      return;
    } catch (const mghf::Error& e) {
      code_ = e.code();
      message_ = e.what();
    } catch (const std::bad_alloc&) {
      code_ = "E_NATIVE";
      message_ = "out of memory";
    } catch (const std::exception& e) {
      code_ = "E_NATIVE";
      message_ = e.what();
    }
    SetError(message_.empty() ? std::string("a native error") : message_);  // empty would mean success
  }
  void OnOK() override {
    settle_promise([&] { deferred_.Resolve(Result(Env())); });
  }
  // `message_`, not e.Message(): reading a property may not run in a dying environment.
  void OnError(const Napi::Error&) override {
    settle_promise([&] { deferred_.Reject(to_js_error(Env(), code_, message_).Value()); });
  }
  // Runs `settle`; when it throws (building the result or settling failed),
  // rejects with what was thrown instead, and when even that fails, the
  // environment is being torn down (JavaScript cannot run): nobody is left
  // to tell, so it returns quietly. Nothing escapes into node-addon-api.
  template <class F>
  void settle_promise(F&& settle) {
    Napi::Env env = Env();
    try {
      settle();
    } catch (const Napi::Error& e) {
      try {
        deferred_.Reject(e.Value());
      } catch (...) {
      }
    } catch (...) {
      // bad_alloc building the result: reject with a typed error if we can.
      try {
        deferred_.Reject(to_js_error(env, "E_NATIVE", "out of memory").Value());
      } catch (...) {
      }
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string code_ = "E_NATIVE";
  std::string message_;
};

class LossWorker : public PromiseWorker {
 public:
  LossWorker(Napi::Env env, std::unique_ptr<LossArgs> args)
      : PromiseWorker(env), args_(std::move(args)) {}

 protected:
  void Run() override {
    result_ = args_->device.backend().loss(args_->weights, args_->sr.data(), args_->gt.data(),
                                           args_->shape, args_->opt);
  }
  Napi::Value Result(Napi::Env env) override { return loss_result_to_js(env, result_); }

 private:
  std::unique_ptr<LossArgs> args_;
  mghf::LossResult<float> result_;
};

struct FeatureArgs {
  Buffer<float> x;
  mghf::Shape shape;
  mghf::DfeWeights<float> weights;
  mghf::InputRange range;
  DeviceChoice device;
  CancelRef cancel;
};

std::unique_ptr<FeatureArgs> parse_feature_args(const Napi::CallbackInfo& info) {
  if (info.Length() < 4 || !info[3].IsObject())
    fail("E_ARGUMENT", "expected (x, dims, weights, options)");
  auto args = std::make_unique<FeatureArgs>();
  args->shape = get_shape(info[1]);
  args->x = copy_f32(info[0], size_t(args->shape.size()), "x");
  args->weights = get_weights(info[2]);
  args->range = get_range(info[3].As<Napi::Object>());
  args->device = get_device(info[3].As<Napi::Object>());
  args->cancel = get_cancel(info[3].As<Napi::Object>().Get("cancel"));
  return args;
}

Buffer<float> run_features(FeatureArgs& a) {
  Buffer<float> F(size_t(a.shape.B) * a.weights.arch.channels * a.shape.H * a.shape.W);
  a.device.backend().features(a.weights, a.x.data(), a.shape, a.range, F.data(), a.cancel.get());
  return F;
}

class FeatureWorker : public PromiseWorker {
 public:
  FeatureWorker(Napi::Env env, std::unique_ptr<FeatureArgs> args)
      : PromiseWorker(env), args_(std::move(args)) {}

 protected:
  void Run() override { F_ = run_features(*args_); }
  Napi::Value Result(Napi::Env env) override { return to_js(env, F_); }

 private:
  std::unique_ptr<FeatureArgs> args_;
  Buffer<float> F_;
};

Napi::Value LossSync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto a = parse_loss_args(info);
    auto r = a->device.backend().loss(a->weights, a->sr.data(), a->gt.data(), a->shape, a->opt);
    return loss_result_to_js(info.Env(), r);
  });
}

Napi::Value Loss(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto* w = new LossWorker(info.Env(), parse_loss_args(info));
    w->Queue();  // the worker deletes itself when done
    return w->Promise();
  });
}

Napi::Value FeaturesSync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto a = parse_feature_args(info);
    return to_js(info.Env(), run_features(*a));
  });
}

Napi::Value Features(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto* w = new FeatureWorker(info.Env(), parse_feature_args(info));
    w->Queue();
    return w->Promise();
  });
}

// ---------------------------------------------------------------- ops (issue 15)

// One generic entry for every op of native/core/ops (registry.h):
// op(name, inputs, attrs) → Promise<outputs>, opSync the same on the calling
// thread. Values convert by their JavaScript type alone, whatever the op:
//   {data: Float32Array, dims}  ↔ a float32 tensor
//   Int32Array / Float64Array   ↔ index and weight vectors
//   number                      ← a scalar output
//   {channels, blocks, expand, tensors} → DFE weights
//   a state handle (External)   ↔ what an op keeps for another (the DFE tape)
//   undefined / null            → an absent optional input
// lib/ops.ts checks every argument first; what is checked here is memory safety.

namespace ops = mghf::ops;
// A state handle owns one reference; a running op holds another, so disposing
// (opRelease) or collecting a handle mid-call frees nothing under the op.
using StateRef = std::shared_ptr<ops::OpState>;
constexpr napi_type_tag kStateTag = {0x6d676866c0ffee03ULL, 0x6f70737461746505ULL};

std::vector<int64_t> get_dims(const Napi::Value& v, const std::string& name) {
  if (!v.IsArray()) fail("E_SHAPE", name + ".dims must be an array");
  auto a = v.As<Napi::Array>();
  if (a.Length() < 1 || a.Length() > 8) fail("E_SHAPE", name + ".dims must have 1 to 8 entries");
  std::vector<int64_t> dims;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value x = a.Get(i);
    const double f = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
    if (!(f >= 1 && f <= double(1 << 24)) || f != double(int64_t(f)))
      fail("E_SHAPE", name + ".dims must hold positive integers");
    dims.push_back(int64_t(f));
  }
  return dims;
}

// ---- device tensors (issue 15 item 1): a handle (External, its own type tag)
// owning one reference to a DeviceTensor; kept apart from the host conversions.
using DeviceRef = std::shared_ptr<ops::DeviceTensor>;
constexpr napi_type_tag kDeviceTag = {0x6d676866c0ffee04ULL, 0x6465766963657406ULL};

bool is_device_handle(const Napi::Value& v) {
  return v.IsExternal() && v.As<Napi::External<DeviceRef>>().CheckTypeTag(&kDeviceTag);
}

ops::Value device_value_from_js(const Napi::Value& v, const std::string& name) {
  auto ext = v.As<Napi::External<DeviceRef>>();
  if (!*ext.Data()) fail("E_DISPOSED", name + " was disposed");
  return ops::Value::on_device(*ext.Data());
}

// {handle, device, dims}: lib/tensor.ts wraps it in a Tensor located 'cuda:<device>'
// and passes the handle alone back as an op input.
Napi::Value device_value_to_js(Napi::Env env, ops::Value& v) {
  const int device = v.device->device();
  const std::vector<int64_t> dims = v.device->dims();
  // The finalizer is the safety net for a tensor nobody disposed.
  auto handle = Napi::External<DeviceRef>::New(env, new DeviceRef(std::move(v.device)),
                                               [](Napi::Env, DeviceRef* p) { delete p; });
  handle.TypeTag(&kDeviceTag);
  Napi::Object o = Napi::Object::New(env);
  o.Set("handle", handle);
  o.Set("device", double(device));
  Napi::Array d = Napi::Array::New(env, dims.size());
  for (size_t i = 0; i < dims.size(); ++i) d.Set(uint32_t(i), double(dims[i]));
  o.Set("dims", d);
  return o;
}

// deviceRelease(handle): drops the handle's reference now (dispose()); true when it held one.
Napi::Value DeviceRelease(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (info.Length() < 1 || !is_device_handle(info[0])) fail("E_ARGUMENT", "expected a device tensor handle");
    auto ext = info[0].As<Napi::External<DeviceRef>>();
    const bool held = bool(*ext.Data());
    ext.Data()->reset();
    return Napi::Boolean::New(info.Env(), held);
  });
}

// deviceMemory(): [{device, tensors, bytes}] of the live native device tensors.
Napi::Value DeviceMemory(const Napi::CallbackInfo& info) {
  const auto live = ops::DeviceTensor::live_per_device();
  Napi::Array a = Napi::Array::New(info.Env());
  uint32_t i = 0;
  for (const auto& kv : live) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("device", double(kv.first));
    o.Set("tensors", double(kv.second.first));
    o.Set("bytes", double(kv.second.second));
    a.Set(i++, o);
  }
  return a;
}

// A float32 tensor input {data: Float32Array, dims, consume?} → a Value, read in
// place, never copied, except an async op's view of a foreign array:
//  - our own output (js_buffers): shared, so a GC or detach mid-op frees
//    nothing under the op; with consume: true it is taken from JavaScript
//    (detached) and given to the op as owned, to write into (the dS accumulator);
//  - any other array, sync op: viewed; the caller's frame keeps it alive and no
//    JavaScript runs until the op returns;
//  - any other array, async op: copied, because JavaScript could detach (transfer)
//    or resize its buffer while the op runs on a worker thread.
ops::Value f32_input(const Napi::Object& o, const std::string& name, bool async) {
  std::vector<int64_t> dims = get_dims(o.Get("dims"), name);
  double count = 1;
  for (int64_t d : dims) count *= double(d);
  if (count > double(int64_t(1) << 34)) fail("E_SHAPE", name + " is too large");
  Napi::Value data = o.Get("data");
  ops::Value out;
  out.kind = ops::Kind::F32;
  out.dims = std::move(dims);
  if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    fail("E_DTYPE", name + " must be a Float32Array");
  auto a = data.As<Napi::Float32Array>();
  if (a.ElementLength() != size_t(count))
    fail("E_SHAPE", name + " has " + std::to_string(a.ElementLength()) + " elements, expected " +
                        std::to_string(size_t(count)));
  if (o.Get("consume").ToBoolean().Value())
    if (js_buffers::Shared b = js_buffers::take(a)) {
      out.f32 = ops::F32Data::own(std::move(b));
      return out;
    }
  if (js_buffers::JsBufferHolder* h = js_buffers::holder_of(a))
    out.f32 = ops::F32Data::view(h->buf->data(), h->buf->size(), h->buf);
  else if (!async)
    out.f32 = ops::F32Data::view(a.Data(), a.ElementLength());
  else
    out.f32 = ops::F32Data::view(a.Data(), a.ElementLength()).copy();
  return out;
}

ops::Value to_op_value(const Napi::Value& v, size_t index, bool async) {
  const std::string name = "input " + std::to_string(index);
  ops::Value out;
  if (v.IsUndefined() || v.IsNull()) return out;
  if (is_device_handle(v)) return device_value_from_js(v, name);
  if (v.IsExternal()) {
    auto ext = v.As<Napi::External<StateRef>>();
    if (!ext.CheckTypeTag(&kStateTag)) fail("E_ARGUMENT", name + " is not a handle an op returned");
    if (!*ext.Data()) fail("E_DISPOSED", name + " was disposed");
    out.kind = ops::Kind::State;
    out.state = *ext.Data();
    return out;
  }
  if (v.IsTypedArray()) {
    const napi_typedarray_type t = v.As<Napi::TypedArray>().TypedArrayType();
    if (t == napi_int32_array) {
      auto a = v.As<Napi::Int32Array>();
      out = ops::Value::vector(std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength()));
    } else if (t == napi_float64_array) {
      auto a = v.As<Napi::Float64Array>();
      out = ops::Value::vector(std::vector<double>(a.Data(), a.Data() + a.ElementLength()));
    } else {
      fail("E_DTYPE", name + " must be an Int32Array or a Float64Array");
    }
    return out;
  }
  if (!v.IsObject()) fail("E_ARGUMENT", name + " must be a tensor, an array, weights or a handle");
  Napi::Object o = v.As<Napi::Object>();
  if (o.Has("tensors")) {
    out.kind = ops::Kind::Weights;
    out.weights = std::make_shared<const mghf::DfeWeights<float>>(get_weights(v));
    return out;
  }
  return f32_input(o, name, async);
}

ops::Attrs to_op_attrs(const Napi::Value& v) {
  ops::Attrs attrs;
  if (v.IsUndefined() || v.IsNull()) return attrs;
  if (!v.IsObject()) fail("E_ARGUMENT", "attrs must be an object");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Array keys = o.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    const std::string key = keys.Get(i).ToString().Utf8Value();
    Napi::Value x = o.Get(key);
    ops::Attr a;
    if (x.IsNumber()) {
      a.type = ops::Attr::Type::Number;
      a.number = x.As<Napi::Number>().DoubleValue();
      if (!std::isfinite(a.number)) fail("E_OPTION", key + " must be finite");
    } else if (x.IsBoolean()) {
      a.type = ops::Attr::Type::Bool;
      a.flag = x.As<Napi::Boolean>().Value();
    } else if (x.IsString()) {
      a.type = ops::Attr::Type::String;
      a.text = x.As<Napi::String>().Utf8Value();
    } else {
      fail("E_OPTION", key + " must be a number, a boolean or a string");
    }
    attrs.set(key, std::move(a));
  }
  return attrs;
}

struct OpCall {
  std::string name;
  std::vector<ops::Value> inputs;
  ops::Attrs attrs;
};

std::unique_ptr<OpCall> parse_op_call(const Napi::CallbackInfo& info, bool async) {
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray())
    fail("E_ARGUMENT", "expected (name, inputs, attrs)");
  auto call = std::make_unique<OpCall>();
  call->name = info[0].As<Napi::String>().Utf8Value();
  if (!ops::find_op(call->name)) ops::run_op(call->name, call->inputs, call->attrs);  // E_ARGUMENT, listing the ops
  auto in = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < in.Length(); ++i) call->inputs.push_back(to_op_value(in.Get(i), i, async));
  // A consumed block the op may write into must not also be another input the op reads
  // (addTo passed as S too): that input keeps the block, the written one gets a copy.
  for (ops::Value& w : call->inputs)
    if (w.kind == ops::Kind::F32 && w.f32.owned())
      for (const ops::Value& r : call->inputs)
        if (&r != &w && r.kind == ops::Kind::F32 && r.f32.data() == w.f32.data()) {
          w.f32 = w.f32.copy();
          break;
        }
  call->attrs = to_op_attrs(info.Length() > 2 ? info[2] : info.Env().Undefined());
  return call;
}

// A float32 tensor output → {data: Float32Array, dims}: an owned buffer is handed
// to JavaScript as is (js_buffers::expose); a read-only one (an input passed
// through) is copied, so that one block never backs two ArrayBuffers.
Napi::Object f32_output(Napi::Env env, ops::Value& v) {
  Napi::Object t = Napi::Object::New(env);
  if (v.f32.owned() && v.f32.shared() && v.f32.shared()->data() == v.f32.data() &&
      v.f32.shared()->size() == v.f32.size())
    t.Set("data", js_buffers::expose(env, v.f32.shared()));
  else
    t.Set("data", js_buffers::expose(env, v.f32.copy().shared()));
  v.f32 = ops::F32Data();
  Napi::Array dims = Napi::Array::New(env, v.dims.size());
  for (size_t i = 0; i < v.dims.size(); ++i) dims.Set(uint32_t(i), double(v.dims[i]));
  t.Set("dims", dims);
  return t;
}

Napi::Value op_value_to_js(Napi::Env env, ops::Value& v) {
  switch (v.kind) {
    case ops::Kind::F32:
      return f32_output(env, v);
    case ops::Kind::I32: {
      auto a = Napi::Int32Array::New(env, v.i32.size());
      std::copy(v.i32.begin(), v.i32.end(), a.Data());
      return a;
    }
    case ops::Kind::F64: {
      auto a = Napi::Float64Array::New(env, v.f64.size());
      std::copy(v.f64.begin(), v.f64.end(), a.Data());
      return a;
    }
    case ops::Kind::Scalar:
      return Napi::Number::New(env, v.scalar);
    case ops::Kind::State: {
      // The finalizer is the safety net for a handle nobody disposed.
      auto handle = Napi::External<StateRef>::New(env, new StateRef(std::move(v.state)),
                                                  [](Napi::Env, StateRef* p) { delete p; });
      handle.TypeTag(&kStateTag);
      return handle;
    }
    case ops::Kind::Device:
      return device_value_to_js(env, v);
    default:
      return env.Undefined();
  }
}

Napi::Object op_outputs_to_js(Napi::Env env, ops::Outputs& outputs) {
  Napi::Object o = Napi::Object::New(env);
  for (auto& kv : outputs) o.Set(kv.first, op_value_to_js(env, kv.second));
  return o;
}

class OpWorker : public PromiseWorker {
 public:
  OpWorker(Napi::Env env, std::unique_ptr<OpCall> call) : PromiseWorker(env), call_(std::move(call)) {}

 protected:
  void Run() override {
    outputs_ = ops::run_op(call_->name, call_->inputs, call_->attrs);
    call_->inputs.clear();  // the copies and references are no longer needed
  }
  Napi::Value Result(Napi::Env env) override { return op_outputs_to_js(env, outputs_); }

 private:
  std::unique_ptr<OpCall> call_;
  ops::Outputs outputs_;
};

Napi::Value OpSync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto call = parse_op_call(info, false);
    ops::Outputs out = ops::run_op(call->name, call->inputs, call->attrs);
    call.reset();
    return op_outputs_to_js(info.Env(), out);
  });
}

Napi::Value Op(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto* w = new OpWorker(info.Env(), parse_op_call(info, true));
    w->Queue();
    return w->Promise();
  });
}

// opRelease(handle): drops the handle's reference now (dispose()); true when it held one.
Napi::Value OpRelease(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsExternal()) fail("E_ARGUMENT", "expected a handle an op returned");
    auto ext = info[0].As<Napi::External<StateRef>>();
    if (!ext.CheckTypeTag(&kStateTag)) fail("E_ARGUMENT", "expected a handle an op returned");
    const bool held = bool(*ext.Data());
    ext.Data()->reset();
    return Napi::Boolean::New(info.Env(), held);
  });
}

// opFree(float32Array): frees an op output now (Tensor.dispose): detaches its
// ArrayBuffer and drops JavaScript's reference to the block (a running op keeps
// its own). True when the array was an op output still held; any other array is
// left alone (false).
Napi::Value OpFree(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    bool freed = false;
    if (info.Length() >= 1 && info[0].IsTypedArray() &&
        info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array)
      freed = js_buffers::take(info[0].As<Napi::Float32Array>()) != nullptr;
    return Napi::Boolean::New(info.Env(), freed);
  });
}

// {objects, bytes}: the live op states (tapes) and the bytes they hold; {blocks,
// blockBytes}: the op outputs JavaScript still holds (neither disposed nor collected).
Napi::Value OpMemory(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("objects", double(ops::OpState::live_count()));
  o.Set("bytes", double(ops::OpState::live_bytes()));
  const auto blocks = js_buffers::registry().live();
  o.Set("blocks", double(blocks.first));
  o.Set("blockBytes", double(blocks.second));
  return o;
}

Napi::Value OpNames(const Napi::CallbackInfo& info) {
  const std::vector<std::string> names = ops::op_names();
  Napi::Array a = Napi::Array::New(info.Env(), names.size());
  for (size_t i = 0; i < names.size(); ++i) a.Set(uint32_t(i), names[i]);
  return a;
}

// ---------------------------------------------------------------- pretraining (SPEC §10)

// A trainer and what is running on it. The flags are read and written on the
// JS thread only (when a call starts, and in OnOK/OnError), so they need no
// lock: a step runs alone; evaluations, which only read the weights, may
// overlap each other but not a step.
struct TrainerBox {
  std::unique_ptr<mghf::AnyTrainer> trainer;
  bool stepping = false;
  int evaluating = 0;
};
// The JS handle owns one reference, each running worker another, so a handle
// collected while its work runs cannot free the trainer under it.
using TrainerRef = std::shared_ptr<TrainerBox>;

// Marks the Externals this file created, so any other value is refused.
constexpr napi_type_tag kTrainerTag = {0x6d676866c0ffee01ULL, 0x7472616965720a5dULL};

TrainerRef get_trainer(const Napi::Value& v) {
  if (!v.IsExternal()) fail("E_ARGUMENT", "expected a trainer handle from trainerCreate");
  auto ext = v.As<Napi::External<TrainerRef>>();
  if (!ext.CheckTypeTag(&kTrainerTag))
    fail("E_ARGUMENT", "expected a trainer handle from trainerCreate");
  return *ext.Data();
}

double get_number(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) fail("E_ARGUMENT", std::string(key) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) fail("E_ARGUMENT", std::string(key) + " must be finite");
  return d;
}

// {channels, blocks, expand, classes, tensors, steps, lr, beta1, beta2, eps,
// decayEvery, decayRate, device, deviceIndex} → a trainer on the CPU or on
// that CUDA device. Every DFE and head tensor is required;
// adam.m.<name> / adam.v.<name> are optional (zero when absent). Lengths are
// checked (memory safety); names beyond these are ignored (lib/ rejects them).
std::unique_ptr<mghf::AnyTrainer> parse_trainer(const Napi::Value& v) {
  if (!v.IsObject()) fail("E_ARGUMENT", "expected a trainer configuration object");
  Napi::Object o = v.As<Napi::Object>();
  const mghf::DfeArchitecture a = get_architecture(o);
  const int classes = get_int(o, "classes", 1, 1 << 20);
  Napi::Value tv = o.Get("tensors");
  if (!tv.IsObject()) fail("E_WEIGHTS", "tensors must be an object");
  Napi::Object tensors = tv.As<Napi::Object>();
  auto load = [&](const std::string& name, Buffer<float>& b, bool required) {
    if (!tensors.Has(name)) {
      if (required) fail("E_WEIGHTS", "tensors is missing " + name);
      return;
    }
    Buffer<float> src = copy_f32(tensors.Get(name), b.size(), ("tensor " + name).c_str());
    b.swap(src);
  };
  mghf::DfeWeights<float> w(a);
  w.for_each([&](const std::string& name, Buffer<float>& b) { load(name, b, true); });
  mghf::HeadWeights<float> head(a.channels, classes);
  head.for_each([&](const std::string& name, Buffer<float>& b) { load(name, b, true); });
  mghf::TrainConfig cfg;
  cfg.lr = get_number(o, "lr", cfg.lr);
  cfg.beta1 = get_number(o, "beta1", cfg.beta1);
  cfg.beta2 = get_number(o, "beta2", cfg.beta2);
  cfg.eps = get_number(o, "eps", cfg.eps);
  const double every = get_number(o, "decayEvery", double(cfg.decay_every));
  if (!(every >= 1 && every <= 9007199254740992.0) || every != std::floor(every))
    fail("E_ARGUMENT", "decayEvery must be a positive integer");
  cfg.decay_every = int64_t(every);
  cfg.decay_rate = get_number(o, "decayRate", cfg.decay_rate);
  const double steps = get_number(o, "steps", 0);
  if (!(steps >= 0 && steps <= 9007199254740992.0) || steps != std::floor(steps))
    fail("E_ARGUMENT", "steps must be a non-negative integer");
  const DeviceChoice device = get_device(o);
  auto t = std::make_unique<mghf::AnyTrainer>(device.cuda ? device.index : -1, std::move(w),
                                              std::move(head), cfg);
  t->set_steps(int64_t(steps));
  // The moments: every name the trainer holds beyond the parameters.
  t->for_each_tensor([&](const std::string& name, Buffer<float>& b) {
    if (name.compare(0, 5, "adam.") == 0) load(name, b, false);
  });
  return t;
}

Napi::Value TrainerCreate(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto box = std::make_shared<TrainerBox>();
    box->trainer = parse_trainer(info.Length() > 0 ? info[0] : info.Env().Undefined());
    auto handle = Napi::External<TrainerRef>::New(
        info.Env(), new TrainerRef(std::move(box)), [](Napi::Env, TrainerRef* p) { delete p; });
    handle.TypeTag(&kTrainerTag);
    return handle;
  });
}

struct BatchArgs {
  Buffer<float> images;
  mghf::Shape shape;
  std::vector<int> labels;
  CancelRef cancel;  // optional 5th argument
};

// (images, dims [B,3,H,W], labels Int32Array [B]) with every label a class of
// the trainer: a label indexes the logits.
BatchArgs parse_batch(const Napi::CallbackInfo& info, const mghf::AnyTrainer& t) {
  if (info.Length() < 4) fail("E_ARGUMENT", "expected (handle, images, dims, labels)");
  BatchArgs a;
  a.shape = get_shape(info[2]);
  a.images = copy_f32(info[1], size_t(a.shape.size()), "images");
  if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    fail("E_DTYPE", "labels must be an Int32Array");
  auto l = info[3].As<Napi::Int32Array>();
  if (l.ElementLength() != size_t(a.shape.B))
    fail("E_SHAPE", "labels has " + std::to_string(l.ElementLength()) + " elements, expected B = " +
                        std::to_string(a.shape.B));
  a.labels.assign(l.Data(), l.Data() + l.ElementLength());
  a.cancel = get_cancel(info.Length() > 4 ? info[4] : info.Env().Undefined());
  for (size_t i = 0; i < a.labels.size(); ++i)
    if (a.labels[i] < 0 || a.labels[i] >= t.classes())
      fail("E_ARGUMENT", "labels[" + std::to_string(i) + "] = " + std::to_string(a.labels[i]) +
                             " is not a class in [0, " + std::to_string(t.classes()) + ")");
  return a;
}

class TrainWorker : public PromiseWorker {
 public:
  TrainWorker(Napi::Env env, TrainerRef box, BatchArgs args, bool update)
      : PromiseWorker(env), box_(std::move(box)), args_(std::move(args)), update_(update) {
    if (update_) box_->stepping = true;
    else ++box_->evaluating;
  }

 protected:
  void Run() override {
    const mghf::Shape& s = args_.shape;
    stats_ = update_ ? box_->trainer->step(args_.images.data(), args_.labels.data(), s.B, s.H, s.W,
                                           args_.cancel.get())
                     : box_->trainer->evaluate(args_.images.data(), args_.labels.data(), s.B,
                                               s.H, s.W, args_.cancel.get());
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", stats_.loss);
    o.Set("correct", stats_.correct);
    return o;
  }
  void OnOK() override {
    release();
    PromiseWorker::OnOK();
  }
  void OnError(const Napi::Error& e) override {
    release();
    PromiseWorker::OnError(e);
  }

 private:
  void release() {
    if (update_) box_->stepping = false;
    else --box_->evaluating;
  }
  TrainerRef box_;
  BatchArgs args_;
  bool update_;
  mghf::StepStats stats_;
};

Napi::Value rejected(Napi::Env env, const std::string& code, const std::string& message) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(to_js_error(env, code, message).Value());
  return d.Promise();
}

// trainStep / trainEval: the batch is copied before the promise returns.
Napi::Value run_batch(const Napi::CallbackInfo& info, bool update) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    TrainerRef box = get_trainer(info.Length() > 0 ? info[0] : info.Env().Undefined());
    if (box->stepping || (update && box->evaluating))
      return rejected(info.Env(), "E_BUSY",
                      box->stepping ? "this trainer is running a step; await it first"
                                    : "this trainer is evaluating; await it before a step");
    BatchArgs args = parse_batch(info, *box->trainer);
    auto* w = new TrainWorker(info.Env(), box, std::move(args), update);
    w->Queue();
    return w->Promise();
  });
}

Napi::Value TrainStep(const Napi::CallbackInfo& info) { return run_batch(info, true); }
Napi::Value TrainEval(const Napi::CallbackInfo& info) { return run_batch(info, false); }

// {steps, lr (the rate of the next step), device ('cpu' | 'cuda:N'), tensors:
// copies of every parameter and moment}.
Napi::Value TrainerState(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    TrainerRef box = get_trainer(info.Length() > 0 ? info[0] : env.Undefined());
    if (box->stepping) fail("E_BUSY", "this trainer is running a step; await it first");
    mghf::AnyTrainer& t = *box->trainer;
    Napi::Object o = Napi::Object::New(env);
    o.Set("steps", double(t.steps()));
    o.Set("lr", t.current_lr());
    o.Set("device", t.device() < 0 ? std::string("cpu") : "cuda:" + std::to_string(t.device()));
    Napi::Object tensors = Napi::Object::New(env);
    t.for_each_tensor([&](const std::string& name, Buffer<float>& b) { tensors.Set(name, to_js(env, b)); });
    o.Set("tensors", tensors);
    return o;
  });
}

Napi::Object cuda_status_to_js(Napi::Env env, int device) {
  const mghf::CudaStatus st = mghf::cuda_status(device);
  Napi::Object c = Napi::Object::New(env);
  c.Set("available", st.available);
  if (!st.available) c.Set("reason", st.reason);
  c.Set("deviceCount", st.device_count);
  c.Set("runtimeVersion", st.runtime_version);
  c.Set("driverVersion", st.driver_version);
  if (!st.device_name.empty()) c.Set("deviceName", st.device_name);
  if (st.cc_major) c.Set("computeCapability", std::to_string(st.cc_major) + "." + std::to_string(st.cc_minor));
  return c;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  mghf::Backend& b = mghf::cpu_backend();
  o.Set("backend", b.name());
  o.Set("isa", b.isa());
  o.Set("threads", b.threads());
#ifdef MGHF_WITH_CUDA
  o.Set("builtWithCuda", true);
#else
  o.Set("builtWithCuda", false);
#endif
  int device = 0;
  if (info.Length() > 0 && info[0].IsNumber()) device = info[0].As<Napi::Number>().Int32Value();
  o.Set("cuda", cuda_status_to_js(env, device));
  o.Set("cacheBytes", double(mghf::block_cache_bytes()));
  return o;
}

Napi::Value ClearCache(const Napi::CallbackInfo& info) {
  mghf::block_cache_clear();
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("lossSync", Napi::Function::New(env, LossSync, "lossSync"));
  exports.Set("loss", Napi::Function::New(env, Loss, "loss"));
  exports.Set("featuresSync", Napi::Function::New(env, FeaturesSync, "featuresSync"));
  exports.Set("features", Napi::Function::New(env, Features, "features"));
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("clearCache", Napi::Function::New(env, ClearCache, "clearCache"));
  exports.Set("trainerCreate", Napi::Function::New(env, TrainerCreate, "trainerCreate"));
  exports.Set("trainStep", Napi::Function::New(env, TrainStep, "trainStep"));
  exports.Set("trainEval", Napi::Function::New(env, TrainEval, "trainEval"));
  exports.Set("trainerState", Napi::Function::New(env, TrainerState, "trainerState"));
  exports.Set("cancelToken", Napi::Function::New(env, CancelToken, "cancelToken"));
  exports.Set("cancel", Napi::Function::New(env, Cancel, "cancel"));
  exports.Set("op", Napi::Function::New(env, Op, "op"));
  exports.Set("opSync", Napi::Function::New(env, OpSync, "opSync"));
  exports.Set("opRelease", Napi::Function::New(env, OpRelease, "opRelease"));
  exports.Set("opFree", Napi::Function::New(env, OpFree, "opFree"));
  exports.Set("opMemory", Napi::Function::New(env, OpMemory, "opMemory"));
  exports.Set("deviceRelease", Napi::Function::New(env, DeviceRelease, "deviceRelease"));
  exports.Set("deviceMemory", Napi::Function::New(env, DeviceMemory, "deviceMemory"));
  exports.Set("opNames", Napi::Function::New(env, OpNames, "opNames"));
  return exports;
}

}  // namespace

NODE_API_MODULE(mghf, Init)
