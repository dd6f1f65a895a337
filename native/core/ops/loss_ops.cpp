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

// Every term off (SPEC §7: a Γ of 0 skips its work): loss 0, every part skipped, and with grad a
// zero gradient of sr's dims (mseTerm of sr against itself at scale 0: (sr − sr)·0 added to zeros).
Outputs nothing_to_compute(const Value& sr, bool grad) {
  Outputs out;
  out.emplace_back("loss", Value::number(0));
  for (const char* part : {"n", "mse", "corr", "gram", "csc", "lip"}) out.emplace_back(part, Value::number(0));
  out.emplace_back("skipped", Value::vector(std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  if (grad) {
    Attrs z;
    z.set("scale", number(0));
    Outputs r = run("mseTerm", {sr, sr}, z);
    out.emplace_back("grad", output(r, "dS"));
  }
  return out;
}

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
  const TermPlan plan = plan_terms(o);
  const std::string range = o.range == InputRange::Symmetric ? "symmetric" : "unit";
  if (!plan.do_n && !plan.do_csc && !plan.do_lip) return nothing_to_compute(sr, o.grad);

  Attrs features;
  features.set("inputRange", text(range));
  features.set("tape", flag(false));
  Outputs g = run("dfe", {gt, weights}, features);
  features.set("tape", flag(o.grad));
  Outputs s = run("dfe", {sr, weights}, features);
  const Value G = output(g, "F"), S = output(s, "F");

  double n = 0, mse = 0, corr = 0, gram = 0, csc = 0, lip = 0;
  Value dS;  // the gradient so far: each term adds onto it (None: zeros)
  std::vector<double> importance;
  std::vector<int32_t> selected;
  auto term = [&](double scale) {
    Attrs a;
    a.set("scale", number(scale));
    a.set("grad", flag(o.grad));
    return a;
  };
  if (plan.do_n) {
    Outputs r = run("mseTerm", {G, S, dS}, term(plan.g1));
    n = output(r, "n").scalar;
    if (o.grad) dS = output(r, "dS");
  }
  if (plan.do_csc) {
    Attrs e;
    e.set("M", number(std::min(o.M, N)));
    e.set("alpha", number(o.alpha));
    e.set("gamma", number(o.gamma));
    Value chosen;
    if (!o.selected.empty()) chosen = Value::vector(std::vector<int32_t>(o.selected.begin(), o.selected.end()));
    Outputs sel = run("entropyPruneReweight", {G, S, chosen}, e);
    Attrs c = term(plan.g2);
    c.set("beta1", number(plan.b1 ? o.beta1 : 0));
    c.set("beta2", number(plan.b2 ? o.beta2 : 0));
    c.set("beta3", number(plan.b3 ? o.beta3 : 0));
    Outputs r = run("csc", {G, S, output(sel, "selected"), output(sel, "weights"), dS}, c);
    mse = output(r, "mse").scalar;
    corr = output(r, "corr").scalar;
    gram = output(r, "gram").scalar;
    csc = output(r, "csc").scalar;
    if (o.grad) dS = output(r, "dS");
    if (o.details) {
      importance = output(sel, "importance").f64;
      selected = output(sel, "selected").i32;
    }
  }
  if (plan.do_lip) {
    Attrs l = term(plan.g3);
    l.set("patch", number(o.lip.patch));
    l.set("stride", number(o.lip.stride));
    l.set("pmax", number(o.lip.pmax));
    l.set("tau", number(o.lip.monce.tau));
    l.set("epsOt", number(o.lip.monce.eps_ot));
    l.set("Q", number(o.lip.monce.Q));
    l.set("iters", number(o.lip.monce.iters));
    l.set("sinkhornGrad", flag(o.lip.monce.sinkhorn_grad));
    Outputs r = run("lip", {G, S, dS}, l);
    lip = output(r, "lip").scalar;
    if (o.grad) dS = output(r, "dS");
  }
  const double loss = plan.c ? plan.g1 * n + plan.g2 * csc + plan.g3 * lip : n;
  check_finite_value(loss, NumericStage::Total, "the loss", [&] { return numeric_context(o, *weights.weights); });

  Outputs out;
  out.emplace_back("loss", Value::number(loss));
  const std::pair<const char*, double> parts[] = {{"n", n},     {"mse", mse}, {"corr", corr},
                                                  {"gram", gram}, {"csc", csc}, {"lip", lip}};
  std::vector<int32_t> skipped;
  for (int i = 0; i < 6; ++i) {
    out.emplace_back(parts[i].first, Value::number(parts[i].second));
    if (std::find(plan.skipped.begin(), plan.skipped.end(), parts[i].first) != plan.skipped.end())
      skipped.push_back(i);
  }
  out.emplace_back("skipped", Value::vector(std::move(skipped)));
  if (o.grad) {
    Outputs dx = run("dfeBackward", {output(s, "tape"), dS}, Attrs());
    out.emplace_back("grad", output(dx, "dx"));
  }
  if (!importance.empty()) {
    out.emplace_back("importance", Value::vector(std::move(importance)));
    out.emplace_back("selected", Value::vector(std::move(selected)));
  }
  return out;
}

}  // namespace ops
}  // namespace mghf
