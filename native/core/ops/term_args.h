// The arguments of the loss-term ops (entropyPruneReweight, csc, lip/monce),
// read and checked once for both backends: the CPU functions in ops/*_ops.cpp
// and the CUDA ones in cuda/ops_cuda.cu call these, so a default, a range or an
// error message cannot differ between the two (ATen's one declaration, many
// backends). What a backend computes stays in its own file.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "csc.h"
#include "entropy.h"
#include "lip_params.h"
#include "numeric_checks.h"
#include "ops/op.h"

namespace mghf {
namespace ops {

// entropyPruneReweight. inputs[2]: selected (optional, Int32 [B·M]). attrs: M, alpha, gamma.
struct PruneArgs {
  int M = 64;
  double alpha = 1, gamma = 1;
  std::vector<int> selected;  // empty: chosen by importance
  NumericContext context() const {
    NumericContext c;
    c.alpha = alpha;
    c.gamma = gamma;
    return c;
  }
};

inline PruneArgs prune_args(std::vector<Value>& in, const Attrs& attrs, int B, int N, const std::string& op) {
  PruneArgs a;
  a.M = attrs.integer("M", 64, 1, N);
  a.alpha = attrs.number("alpha", 1);
  a.gamma = attrs.number("gamma", 1);
  if (present(in, 2)) {
    Value& sel = in[2];
    if (sel.kind != Kind::I32 || sel.i32.size() != size_t(B) * a.M)
      op_fail(op, "selected must be an Int32Array of B·M channel indices", "E_OPTION");
    for (int32_t v : sel.i32)
      if (v < 0 || v >= N) op_fail(op, "selected holds a channel index out of range", "E_OPTION");
    a.selected.assign(sel.i32.begin(), sel.i32.end());
  }
  return a;
}

// The op's outputs from the importance a backend computed: the kept channels and their weights
// (SPEC §4's selection runs on the host for both backends: B·N numbers).
inline Outputs prune_outputs(std::vector<double> imp, const PruneArgs& a, int B, int N) {
  const NumericContext ctx = a.context();
  auto context = [&] { return ctx; };
  check_finite(imp.data(), int64_t(imp.size()), NumericStage::Importance, "the importance", context);
  ChannelSelection chosen = select_channels(imp, B, N, a.M, a.selected, a.alpha, a.gamma);
  check_finite(chosen.weights.data(), int64_t(chosen.weights.size()), NumericStage::Importance,
               "the weights w", context);
  Outputs out;
  out.emplace_back("importance", Value::vector(std::move(imp)));
  out.emplace_back("selected", Value::vector(std::vector<int32_t>(chosen.sel.begin(), chosen.sel.end())));
  out.emplace_back("weights", Value::vector(std::move(chosen.weights)));
  return out;
}

// csc. inputs[2]: selected (Int32 [B·M]), inputs[3]: weights (Float64 [B·M]).
// attrs: beta1, beta2, beta3 (a 0 skips its part), scale (∂L/∂L_csc), grad.
struct CscArgs {
  int M = 0;
  const int* selected = nullptr;  // B·M, into the input's array
  const double* weights = nullptr;
  CscWeights w{0.1333, 1, 0.1333, 1};
  bool grad = true;
  NumericContext context() const {
    NumericContext c;
    c.beta1 = w.beta1;
    c.beta2 = w.beta2;
    c.beta3 = w.beta3;
    c.gamma2 = w.scale;
    return c;
  }
};

inline CscArgs csc_args(std::vector<Value>& in, const Attrs& attrs, int B, int N, const std::string& op) {
  Value& sel = input(in, 2, op, "selected");
  Value& wts = input(in, 3, op, "weights");
  if (sel.kind != Kind::I32 || sel.i32.empty() || sel.i32.size() % size_t(B) != 0 ||
      sel.i32.size() / size_t(B) > size_t(N))
    op_fail(op, "selected must be an Int32Array of B·M channel indices, M ≤ N", "E_SHAPE");
  for (int32_t v : sel.i32)
    if (v < 0 || v >= N) op_fail(op, "selected holds a channel index out of range", "E_SHAPE");
  if (wts.kind != Kind::F64 || wts.f64.size() != sel.i32.size())
    op_fail(op, "weights must be a Float64Array of B·M weights", "E_SHAPE");
  static_assert(sizeof(int32_t) == sizeof(int), "selected is passed as int");
  CscArgs a;
  a.M = int(sel.i32.size() / size_t(B));
  a.selected = reinterpret_cast<const int*>(sel.i32.data());
  a.weights = wts.f64.data();
  a.w = {attrs.number("beta1", 0.1333), attrs.number("beta2", 1), attrs.number("beta3", 0.1333),
         attrs.number("scale", 1)};
  a.grad = attrs.flag("grad", true);
  return a;
}

inline double csc_total(const CscParts& r, const CscArgs& a) {
  return a.w.beta1 * r.mse + a.w.beta2 * r.corr + a.w.beta3 * r.gram;
}

// The parts as the op reports them: a part whose β is 0 is not computed (0, as mghf_loss reports
// it); E_NUMERIC naming the first non-finite one.
inline CscParts csc_reported(const CscParts& p, const CscArgs& a) {
  CscParts r;
  r.mse = a.w.beta1 != 0 ? p.mse : 0;
  r.corr = a.w.beta2 != 0 ? p.corr : 0;
  r.gram = a.w.beta3 != 0 ? p.gram : 0;
  const NumericContext ctx = a.context();
  auto context = [&] { return ctx; };
  check_finite_value(r.mse, NumericStage::Csc, "mse", context);
  check_finite_value(r.corr, NumericStage::Csc, "corr", context);
  check_finite_value(r.gram, NumericStage::Csc, "gram", context);
  check_finite_value(csc_total(r, a), NumericStage::Csc, "csc", context);
  return r;
}

// With grad, the gradient goes out as `grad_name`: dS, or dKept (the M kept maps' gradient alone).
inline Outputs csc_outputs(const CscParts& r, const CscArgs& a, Value grad, const char* grad_name = "dS") {
  Outputs out;
  out.emplace_back("mse", Value::number(r.mse));
  out.emplace_back("corr", Value::number(r.corr));
  out.emplace_back("gram", Value::number(r.gram));
  out.emplace_back("csc", Value::number(csc_total(r, a)));
  if (a.grad) out.emplace_back(grad_name, std::move(grad));
  return out;
}

// lip (monce). attrs: patch, stride, pmax, tau, epsOt, Q, iters, sinkhornGrad, scale (∂L/∂L_lip),
// grad. E_TOO_SMALL when the H×W maps cannot hold one patch.
struct LipArgs {
  LipOptions o;
  double scale = 1;
  bool grad = true;
  NumericContext context() const {
    NumericContext c;
    c.tau = o.monce.tau;
    c.eps_ot = o.monce.eps_ot;
    c.Q = o.monce.Q;
    c.gamma3 = scale;
    return c;
  }
};

inline LipArgs lip_args(const Attrs& attrs, int H, int W, const std::string& op) {
  LipArgs a;
  a.o.patch = attrs.integer("patch", 32, 1, 256);
  a.o.stride = attrs.integer("stride", 16, 1, 256);
  a.o.pmax = attrs.integer("pmax", 256, 1, 4096);
  a.o.monce.tau = attrs.number("tau", 0.07);
  a.o.monce.eps_ot = attrs.number("epsOt", 1);
  a.o.monce.Q = attrs.number("Q", 1);
  a.o.monce.iters = attrs.integer("iters", 50, 1, 10000);
  a.o.monce.sinkhorn_grad = attrs.flag("sinkhornGrad", true);
  a.o.monce.cancel = ambient_cancel();  // a loss composition's cancel (op.h)
  if (H < a.o.patch || W < a.o.patch) op_fail(op, "the maps must be at least patch×patch", "E_TOO_SMALL");
  a.scale = attrs.number("scale", 1);
  a.grad = attrs.flag("grad", true);
  return a;
}

}  // namespace ops
}  // namespace mghf

