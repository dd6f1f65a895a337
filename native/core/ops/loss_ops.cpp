// mghfLoss composed from the ops (loss_ops.h). Built with the registry (it calls run_op).
#include "ops/loss_ops.h"

#include <algorithm>

namespace mghf {
namespace ops {
namespace {

Value& output(Outputs& out, const char* name) {
  for (auto& kv : out)
    if (kv.first == name) return kv.second;
  throw Error("E_NATIVE", std::string("mghfLoss: an op returned no ") + name);
}

Attr number(double v) {
  Attr a;
  a.type = Attr::Type::Number;
  a.number = v;
  return a;
}

Attr flag(bool v) {
  Attr a;
  a.type = Attr::Type::Bool;
  a.flag = v;
  return a;
}

Attr text(const std::string& v) {
  Attr a;
  a.type = Attr::Type::String;
  a.text = v;
  return a;
}

Outputs run(const char* name, std::vector<Value> inputs, const Attrs& attrs) {
  return run_op(name, inputs, attrs);
}

const std::vector<int64_t>& dims_of(const Value& v) { return v.kind == Kind::Device ? v.device->dims() : v.dims; }

// Where the composition is: the ops it runs check the cancel flag between stages, lap the
// stopwatch after each, and hold the ambient cancel flag (op.h) while it runs.
struct Stages {
  const LossOptions& o;
  detail::Stopwatch clock;
  AmbientCancel ambient;
  Stages(const LossOptions& opt, LossResult<float>& r)
      : o(opt), clock(opt.profile ? &r.timings : nullptr), ambient(opt.cancel) {}
  void next() const { throw_if_cancelled(o.cancel); }
};

}  // namespace

LossOptions loss_options(std::vector<Value>& in, const Attrs& attrs, int B, int N) {
  LossOptions o;
  o.variant = attrs.text("variant", "c") == "n" ? Variant::N : Variant::C;
  o.range = attrs.text("inputRange", "unit") == "symmetric" ? InputRange::Symmetric : InputRange::Unit;
  o.gamma1 = attrs.number("gamma1", o.gamma1);
  o.gamma2 = attrs.number("gamma2", o.gamma2);
  o.gamma3 = attrs.number("gamma3", o.gamma3);
  o.beta1 = attrs.number("beta1", o.beta1);
  o.beta2 = attrs.number("beta2", o.beta2);
  o.beta3 = attrs.number("beta3", o.beta3);
  o.M = attrs.integer("M", o.M, 1, 1 << 20);
  o.alpha = attrs.number("alpha", o.alpha);
  o.gamma = attrs.number("gamma", o.gamma);
  o.lip.patch = attrs.integer("patch", o.lip.patch, 1, 256);
  o.lip.stride = attrs.integer("stride", o.lip.stride, 1, 256);
  o.lip.pmax = attrs.integer("pmax", o.lip.pmax, 1, 4096);
  o.lip.monce.tau = attrs.number("tau", o.lip.monce.tau);
  o.lip.monce.eps_ot = attrs.number("epsOt", o.lip.monce.eps_ot);
  o.lip.monce.Q = attrs.number("Q", o.lip.monce.Q);
  o.lip.monce.iters = attrs.integer("iters", o.lip.monce.iters, 1, 10000);
  o.lip.monce.sinkhorn_grad = attrs.flag("sinkhornGrad", o.lip.monce.sinkhorn_grad);
  o.details = attrs.flag("returnDetails", false);
  o.grad = attrs.flag("grad", true);
  const int M = std::min(o.M, N);
  if (present(in, 3)) {
    Value& sel = in[3];
    if (sel.kind != Kind::I32 || sel.i32.size() != size_t(B) * size_t(M))
      op_fail("mghfLoss", "selected must be an Int32Array of B·M channel indices", "E_OPTION");
    for (int32_t v : sel.i32)
      if (v < 0 || v >= N) op_fail("mghfLoss", "selected holds a channel index out of range", "E_OPTION");
    o.selected.assign(sel.i32.begin(), sel.i32.end());
  }
  return o;
}

ComposedLoss compose_loss(const Value& sr, const Value& gt, const Value& weights, const LossOptions& o) {
  if (weights.kind != Kind::Weights || !weights.weights) op_fail("mghfLoss", "weights must be DFE weights", "E_WEIGHTS");
  ComposedLoss out;
  LossResult<float>& r = out.r;
  const TermPlan plan = plan_terms(o);
  r.skipped = plan.skipped;
  if (!plan.do_n && !plan.do_csc && !plan.do_lip) {
    // Every term off (SPEC §7: a Γ of 0 skips its work): loss 0, and with grad a zero gradient
    // of sr's dims on sr's device (mseTerm of sr against itself at scale 0: (sr − sr)·0).
    if (o.grad) {
      Attrs z;
      z.set("scale", number(0));
      Outputs g = run("mseTerm", {sr, sr}, z);
      out.grad = output(g, "dS");
    }
    return out;
  }
  const int N = weights.weights->arch.channels;
  const std::string range = o.range == InputRange::Symmetric ? "symmetric" : "unit";
  auto ctx = [&] { return numeric_context(o, *weights.weights); };
  Stages stage(o, r);
  stage.next();

  Attrs features;
  features.set("inputRange", text(range));
  features.set("tape", flag(false));
  features.set("of", text("gt"));
  const bool host = sr.kind != Kind::Device;
  const std::vector<int64_t>& d = dims_of(sr);  // the dfe op checks them; 0: no scratch asked for
  const int64_t count = d.size() == 4 ? d[0] * N * d[2] * d[3] : 0;
  // On the host, the DFE's scratch is the block the next buffer asked for takes from the block
  // cache (S after gt's DFE, the CSC's kept gradient after sr's), as the fused loss lent them.
  if (host) features.set("scratch", number(double(count)));
  Outputs g = run("dfe", {gt, weights}, features);
  stage.next();
  const bool keeps = host && o.grad && plan.do_csc;  // the csc op makes dKept (below)
  features.set("scratch", number(keeps ? double(count / N * std::min(o.M, N)) : 0.0));
  features.set("tape", flag(o.grad));
  features.set("of", text("sr"));
  Outputs s = run("dfe", {sr, weights}, features);
  Value G = output(g, "F"), S = output(s, "F");
  stage.clock.lap("dfe_forward");

  // On host tensors, ∂L/∂S gets no buffer of its own: the terms before the last one keep their
  // gradients small (L_n's as its scale, CSC's as the M kept maps, dKept) and the last term op,
  // the last reader of S, writes all of ∂L/∂S over S map by map (overS, ops/deferred_gradient.h):
  // the peak of the fused loss, G, S, the tape and M maps (bench/NOTES.md "One composition of the
  // loss"). On a device, each term adds into the gradient so far (dS, one N-map tensor more).
  const bool last_n = !plan.do_csc && !plan.do_lip, last_csc = plan.do_csc && !plan.do_lip;
  const bool defer = host && o.grad;
  Value dS;     // the gradient so far: each term adds onto it (None: zeros)
  Value dKept;  // deferred: the CSC term's gradient of the kept maps, and their channels
  Value keptSelected;
  auto term = [&](double scale, bool last) {
    Attrs a;
    a.set("scale", number(scale));
    a.set("grad", flag(o.grad && (!defer || last)));
    if (defer && last) {
      a.set("overS", flag(true));
      a.set("nScale", number(plan.do_n ? plan.g1 : 0));
    }
    return a;
  };
  if (plan.do_n) {
    stage.next();
    Outputs t = run("mseTerm", {G, S, dS}, term(plan.g1, last_n));
    r.n = output(t, "n").scalar;
    if (o.grad && (!defer || last_n)) dS = output(t, "dS");
    stage.clock.lap("n");
  }
  if (plan.do_csc) {
    stage.next();
    Attrs e;
    e.set("M", number(std::min(o.M, N)));
    e.set("alpha", number(o.alpha));
    e.set("gamma", number(o.gamma));
    Value chosen;
    if (!o.selected.empty()) chosen = Value::vector(std::vector<int32_t>(o.selected.begin(), o.selected.end()));
    Outputs sel = run("entropyPruneReweight", {G, S, chosen}, e);
    stage.clock.lap("importance");
    stage.next();
    Attrs c = term(plan.g2, last_csc);
    if (defer && !last_csc) {
      c.set("grad", flag(true));
      c.set("keptGrad", flag(true));
    }
    c.set("beta1", number(plan.b1 ? o.beta1 : 0));
    c.set("beta2", number(plan.b2 ? o.beta2 : 0));
    c.set("beta3", number(plan.b3 ? o.beta3 : 0));
    Outputs t = run("csc", {G, S, output(sel, "selected"), output(sel, "weights"), dS}, c);
    r.mse = output(t, "mse").scalar;
    r.corr = output(t, "corr").scalar;
    r.gram = output(t, "gram").scalar;
    r.csc = output(t, "csc").scalar;
    if (defer && !last_csc) {
      dKept = output(t, "dKept");
      keptSelected = output(sel, "selected");
    } else if (o.grad) {
      dS = output(t, "dS");
    }
    if (o.details) {
      r.importance = std::move(output(sel, "importance").f64);
      const std::vector<int32_t>& chosen_now = output(sel, "selected").i32;
      r.selected.assign(chosen_now.begin(), chosen_now.end());
    }
    stage.clock.lap("csc");
  }
  if (plan.do_lip) {
    stage.next();
    Attrs l = term(plan.g3, true);
    l.set("patch", number(o.lip.patch));
    l.set("stride", number(o.lip.stride));
    l.set("pmax", number(o.lip.pmax));
    l.set("tau", number(o.lip.monce.tau));
    l.set("epsOt", number(o.lip.monce.eps_ot));
    l.set("Q", number(o.lip.monce.Q));
    l.set("iters", number(o.lip.monce.iters));
    l.set("sinkhornGrad", flag(o.lip.monce.sinkhorn_grad));
    Outputs t = run("lip", {G, S, dS, dKept, keptSelected}, l);
    r.lip = output(t, "lip").scalar;
    if (o.grad) dS = output(t, "dS");
    dKept = Value();
    stage.clock.lap("lip");
  }
  r.loss = plan.c ? plan.g1 * r.n + plan.g2 * r.csc + plan.g3 * r.lip : r.n;
  check_finite_value(r.loss, NumericStage::Total, "the loss", ctx);
  if (!o.grad) return out;
  stage.next();
  // The backward needs neither feature tensor: free both before it runs (peak memory), here
  // and in the op outputs that still share them (on the host, S's buffer is dS's now).
  G = Value();
  S = Value();
  g.clear();
  output(s, "F") = Value();
  Outputs dx = run("dfeBackward", {output(s, "tape"), dS}, Attrs());
  out.grad = output(dx, "dx");
  stage.clock.lap("dfe_backward");
  return out;
}

Outputs compose_mghf_loss(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "mghfLoss";
  Value& sr = input(in, 0, op, "sr");
  Value& gt = input(in, 1, op, "gt");
  Value& weights = input(in, 2, op, "weights");
  if (weights.kind != Kind::Weights || !weights.weights) op_fail(op, "weights must be DFE weights", "E_WEIGHTS");
  const std::vector<int64_t> dims = dims_of(sr);
  if (dims.size() != 4) op_fail(op, "sr must have 4 dims", "E_SHAPE");
  const int B = int(dims[0]), N = weights.weights->arch.channels;
  const LossOptions o = loss_options(in, attrs, B, N);
  ComposedLoss c = compose_loss(sr, gt, weights, o);
  return loss_outputs(c);
}

Outputs loss_outputs(ComposedLoss& c) {
  LossResult<float>& r = c.r;
  Outputs out;
  out.emplace_back("loss", Value::number(r.loss));
  const std::pair<const char*, double> parts[] = {{"n", r.n},     {"mse", r.mse}, {"corr", r.corr},
                                                  {"gram", r.gram}, {"csc", r.csc}, {"lip", r.lip}};
  std::vector<int32_t> skipped;
  for (int i = 0; i < 6; ++i) {
    out.emplace_back(parts[i].first, Value::number(parts[i].second));
    if (std::find(r.skipped.begin(), r.skipped.end(), parts[i].first) != r.skipped.end()) skipped.push_back(i);
  }
  out.emplace_back("skipped", Value::vector(std::move(skipped)));
  if (c.grad.kind != Kind::None) out.emplace_back("grad", std::move(c.grad));
  if (!r.importance.empty()) {
    out.emplace_back("importance", Value::vector(std::move(r.importance)));
    out.emplace_back("selected", Value::vector(std::vector<int32_t>(r.selected.begin(), r.selected.end())));
  }
  return out;
}

}  // namespace ops
}  // namespace mghf
