// The generic op interface (issue 15): an op takes a list of values and named
// attributes and returns named values. The binding converts JavaScript values
// to and from these without knowing any op; each op group (one file per group
// under native/core/ops/) registers its ops by name (registry.h) and calls the
// same core functions, and the loss itself is their composition (ops/loss_ops.h).
//
// Tensor inputs are read in place, not copied (F32Data): an op that writes
// into an input declares it by taking it through writable(), which copies
// unless the caller handed that buffer over (the consumed `addTo` of
// lib/ops.ts).
// Device tensors (Kind::Device) are shared, never copied: an op must not write them.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "buffer.h"
#include "dfe_weights.h"
#include "error.h"
#include "numeric_checks.h"
#include "ops/device_tensor.h"

namespace mghf {
namespace ops {

// State an op returns for a later op (the DFE tape): opaque to JavaScript,
// freed when its handle is disposed or collected. Every live one is counted
// (live_state_count/live_state_bytes) so that a leak shows in memory().
class OpState {
 public:
  explicit OpState(std::string kind) : kind_(std::move(kind)) { count_.fetch_add(1); }
  virtual ~OpState() {
    count_.fetch_sub(1);
    bytes_.fetch_sub(counted_);
  }
  OpState(const OpState&) = delete;
  OpState& operator=(const OpState&) = delete;
  const std::string& kind() const { return kind_; }
  int64_t bytes() const { return counted_; }
  static int64_t live_count() { return count_.load(); }
  static int64_t live_bytes() { return bytes_.load(); }

 protected:
  // Called once the state holds its buffers.
  void set_bytes(int64_t b) {
    bytes_.fetch_add(b - counted_);
    counted_ = b;
  }

 private:
  std::string kind_;
  int64_t counted_ = 0;
  static inline std::atomic<int64_t> count_{0}, bytes_{0};
};

enum class Kind { None, F32, I32, F64, Scalar, State, Weights, Device };

// A float32 tensor's storage. Owned storage (an op's outputs; an input the
// caller handed over) may be written through mut(); borrowed storage (a
// JavaScript array read in place, or a buffer JavaScript shares) is read-only,
// so an op can only write into what it owns: writes into an input go through
// writable(), which copies borrowed storage first. `shared()` is the buffer's
// owner when there is one (null for a bare view of memory the caller keeps
// alive): the binding hands owned buffers to JavaScript without a copy and
// keeps a shared one alive while an async op reads it.
class F32Data {
 public:
  const float* data() const { return p_; }
  size_t size() const { return n_; }
  bool owned() const { return owned_; }
  float* mut() {
    if (!owned_) throw Error("E_NATIVE", "internal error: an op wrote into a read-only input");
    return p_;
  }
  void zero() {
    if (n_) std::memset(static_cast<void*>(mut()), 0, n_ * sizeof(float));
  }
  const std::shared_ptr<Buffer<float>>& shared() const { return buf_; }

  // Fresh owned storage of n floats (contents unspecified).
  static F32Data allocate(size_t n) { return own(std::make_shared<Buffer<float>>(n)); }
  // Owned storage over a buffer nobody else writes or reads any more.
  static F32Data own(std::shared_ptr<Buffer<float>> b) {
    F32Data d;
    d.p_ = b->data();
    d.n_ = b->size();
    d.owned_ = true;
    d.buf_ = std::move(b);
    return d;
  }
  // Read-only storage over n floats at p, kept alive by `keep` (or by the caller when null).
  static F32Data view(const float* p, size_t n, std::shared_ptr<Buffer<float>> keep = nullptr) {
    F32Data d;
    d.p_ = const_cast<float*>(p);  // written only through mut(), which refuses a view
    d.n_ = n;
    d.buf_ = std::move(keep);
    return d;
  }
  // An owned copy.
  F32Data copy() const {
    F32Data d = allocate(n_);
    if (n_) std::memcpy(d.p_, p_, n_ * sizeof(float));
    return d;
  }

 private:
  std::shared_ptr<Buffer<float>> buf_;
  float* p_ = nullptr;
  size_t n_ = 0;
  bool owned_ = false;
};

struct Value {
  Kind kind = Kind::None;
  std::vector<int64_t> dims;  // F32: the tensor's dims; I32/F64: {length}
  F32Data f32;
  std::vector<int32_t> i32;
  std::vector<double> f64;
  double scalar = 0;
  std::shared_ptr<OpState> state;
  std::shared_ptr<const DfeWeights<float>> weights;  // Kind::Weights
  std::shared_ptr<DeviceTensor> device;              // Kind::Device (dims: its dims)

  int64_t count() const {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
  }
  // A new owned tensor (contents unspecified: the op writes every element).
  static Value tensor(std::vector<int64_t> dims) {
    Value v;
    v.kind = Kind::F32;
    v.dims = std::move(dims);
    v.f32 = F32Data::allocate(size_t(v.count()));
    return v;
  }
  static Value on_device(std::shared_ptr<DeviceTensor> t) {
    Value v;
    v.kind = Kind::Device;
    v.dims = t->dims();
    v.device = std::move(t);
    return v;
  }
  static Value number(double x) {
    Value v;
    v.kind = Kind::Scalar;
    v.scalar = x;
    return v;
  }
  // An index (Int32) or weight (Float64) vector.
  template <class T>
  static Value vector(std::vector<T> x) {
    static_assert(std::is_same_v<T, int32_t> || std::is_same_v<T, double>, "Int32 or Float64 only");
    Value v;
    v.dims = {int64_t(x.size())};
    if constexpr (std::is_same_v<T, int32_t>) {
      v.kind = Kind::I32;
      v.i32 = std::move(x);
    } else {
      v.kind = Kind::F64;
      v.f64 = std::move(x);
    }
    return v;
  }
};

// An attribute: a number, a boolean or a string (lib/ops.ts has checked each).
struct Attr {
  enum class Type { Number, Bool, String } type = Type::Number;
  double number = 0;
  bool flag = false;
  std::string text;
};

class Attrs {
 public:
  void set(const std::string& name, Attr a) { map_[name] = std::move(a); }
  double number(const char* name, double fallback) const {
    auto it = map_.find(name);
    return it != map_.end() && it->second.type == Attr::Type::Number ? it->second.number : fallback;
  }
  // An integer in [lo, hi] (memory safety: sizes and counts), else E_OPTION.
  int integer(const char* name, int fallback, int lo, int hi) const {
    const double d = number(name, fallback);
    if (!(d >= lo && d <= hi) || d != double(int(d)))
      throw Error("E_OPTION", std::string(name) + " must be an integer in [" + std::to_string(lo) +
                                  ", " + std::to_string(hi) + "]");
    return int(d);
  }
  bool flag(const char* name, bool fallback) const {
    auto it = map_.find(name);
    return it != map_.end() && it->second.type == Attr::Type::Bool ? it->second.flag : fallback;
  }
  std::string text(const char* name, const std::string& fallback) const {
    auto it = map_.find(name);
    return it != map_.end() && it->second.type == Attr::Type::String ? it->second.text : fallback;
  }

 private:
  std::map<std::string, Attr> map_;
};

using Outputs = std::vector<std::pair<std::string, Value>>;
using OpFn = Outputs (*)(std::vector<Value>& inputs, const Attrs& attrs);

// ------------------------------------------------------------ input checks
// Memory safety only: lib/ops.ts has checked shapes and options with messages
// for users; these keep a direct caller from reading out of bounds.

[[noreturn]] inline void op_fail(const std::string& op, const std::string& msg,
                                 const char* code = "E_ARGUMENT") {
  throw Error(code, op + ": " + msg);
}

inline Value& input(std::vector<Value>& in, size_t i, const std::string& op, const char* name) {
  if (i >= in.size()) op_fail(op, std::string("missing input ") + name);
  return in[i];
}

inline bool present(const std::vector<Value>& in, size_t i) {
  return i < in.size() && in[i].kind != Kind::None;
}

// An F32 tensor with `rank` dims, each in [1, 2^24], at most 2^34 elements.
inline Value& tensor_input(std::vector<Value>& in, size_t i, const std::string& op,
                           const char* name, size_t rank) {
  Value& v = input(in, i, op, name);
  if (v.kind != Kind::F32) op_fail(op, std::string(name) + " must be a float32 tensor", "E_DTYPE");
  if (v.dims.size() != rank)
    op_fail(op, std::string(name) + " must have " + std::to_string(rank) + " dims", "E_SHAPE");
  double n = 1;
  for (int64_t d : v.dims) {
    if (d < 1 || d > (int64_t(1) << 24)) op_fail(op, std::string(name) + " has a bad dim", "E_SHAPE");
    n *= double(d);
  }
  if (n > double(int64_t(1) << 34) || int64_t(v.f32.size()) != v.count())
    op_fail(op, std::string(name) + " has the wrong number of elements", "E_SHAPE");
  return v;
}

inline void same_dims(const Value& a, const Value& b, const std::string& op, const char* an,
                      const char* bn) {
  if (a.dims != b.dims)
    op_fail(op, std::string(bn) + " must have the dims of " + an, "E_SHAPE");
}

// An input the op writes into (the dS accumulator, dfeBackward's dF used as
// scratch): as is when the caller handed its buffer over (the binding then
// gives it to the op as owned: `consume` in lib/ops.ts), else an owned copy, so
// a caller's array is never changed behind its back.
inline Value writable(Value& v) {
  Value w = std::move(v);
  if (!w.f32.owned()) w.f32 = w.f32.copy();
  return w;
}

// The optional accumulator `dS` at input i (the gradient so far, the dims of
// `like`), or zeros: the op adds its term's gradient into it (writable()).
inline Value gradient_accumulator(std::vector<Value>& in, size_t i, const Value& like,
                                  const std::string& op) {
  if (!present(in, i)) {
    Value d = Value::tensor(like.dims);
    d.f32.zero();
    return d;
  }
  Value& d = tensor_input(in, i, op, "dS", like.dims.size());
  same_dims(like, d, op, "S", "dS");
  return writable(d);
}

// The G, S pair of feature tensors [B, N, H, W] every term op reads first.
struct FeaturePair {
  Value& G;
  Value& S;
};
inline FeaturePair feature_pair(std::vector<Value>& in, const std::string& op) {
  Value& G = tensor_input(in, 0, op, "G", 4);
  Value& S = tensor_input(in, 1, op, "S", 4);
  same_dims(G, S, op, "G", "S");
  return {G, S};
}

// The cancel flag of the loss composition running on this thread (loss_ops.cpp sets it for the
// duration of one compose_loss): the long ops (dfe, lip) read it, so a cancel raised mid-stage
// stops the DFE between blocks and Sinkhorn between iterations. An op runs on
// the thread that calls it, so a thread-local is exactly "the call this op belongs to".
inline const CancelFlag*& ambient_cancel() {
  static thread_local const CancelFlag* flag = nullptr;
  return flag;
}
class AmbientCancel {
 public:
  explicit AmbientCancel(const CancelFlag* f) : prev_(ambient_cancel()) { ambient_cancel() = f; }
  ~AmbientCancel() { ambient_cancel() = prev_; }
  AmbientCancel(const AmbientCancel&) = delete;
  AmbientCancel& operator=(const AmbientCancel&) = delete;

 private:
  const CancelFlag* prev_;
};

// The dfe op's optional attr `of` ("gt" or "sr"): which image's features these are, so that the
// loss composition's E_NUMERIC names the loss's stage (DfeForwardGt/Sr); absent: the
// plain op's Features.
inline NumericStage features_stage(const Attrs& attrs, const char** what) {
  const std::string of = attrs.text("of", "");
  if (of == "gt") {
    *what = "the features of gt";
    return NumericStage::DfeForwardGt;
  }
  if (of == "sr") {
    *what = "the features of sr";
    return NumericStage::DfeForwardSr;
  }
  *what = "the features";
  return NumericStage::Features;
}

}  // namespace ops
}  // namespace mghf
