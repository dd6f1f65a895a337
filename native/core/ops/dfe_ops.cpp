// The DFE as ops (SPEC §2): `dfe` (x → F and, unless tape: false, the tape its
// backward needs) and `dfeBackward` (tape, dF → dx). The same dfe_forward /
// dfe_backward over FastKernels, the loss's DFE stages (ops/loss_ops.h composes them).
#include "dfe.h"
#include "kernels_fast.h"
#include "ops/dfe_args.h"
#include "ops/registry.h"

namespace mghf {
namespace ops {
namespace {

// What dfe_forward recorded for one batch, with the weights and shape it ran with.
class DfeTapeState final : public OpState {
 public:
  DfeTapeState(std::shared_ptr<const DfeWeights<float>> w, int B, int H, int W, InputRange range)
      : OpState("dfe tape"), weights(std::move(w)), B(B), H(H), W(W), range(range) {}
  void count_bytes() {
    int64_t b = 0;
    for (const BlockTape<float>& bt : tape.block) {
      b += int64_t(bt.z1.size() + bt.E.size()) * int64_t(sizeof(float));
      for (const IrbTape* it : {&bt.phi, &bt.rho, &bt.eta}) b += int64_t(it->m1.size() + it->m2.size());
    }
    set_bytes(b);
  }
  std::shared_ptr<const DfeWeights<float>> weights;
  DfeTape<float> tape;
  int B, H, W;
  InputRange range;
};

NumericContext weights_context(const DfeWeights<float>& w) {
  NumericContext c;
  c.weights_hint = largest_weight_hint(w);
  return c;
}

// inputs: x [B, 3, H, W], weights. attrs: inputRange ('unit' | 'symmetric'), tape (default true);
// internal: scratch, the DFE's scratch made at least this many floats, so that the buffer a later op
// of the loss composition asks for (S, dKept) is that very block again from the block cache, as the
// fused loss lent those buffers to the DFE (without it, B=4 256²: +32 MiB peak).
// outputs: F [B, N, H, W], tape (when asked).
Outputs dfe(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "dfe";
  Value& x = tensor_input(in, 0, op, "x", 4);
  const std::shared_ptr<const DfeWeights<float>> wp = weights_input(in, 1, op);
  if (x.dims[1] != 3) op_fail(op, "x must have 3 channels", "E_SHAPE");
  if (x.dims[2] < 2 || x.dims[3] < 2) op_fail(op, "x must be at least 2×2", "E_TOO_SMALL");
  const DfeWeights<float>& w = *wp;
  const int B = int(x.dims[0]), H = int(x.dims[2]), W = int(x.dims[3]), N = w.arch.channels;
  const InputRange range = range_attr(attrs);
  Value F = Value::tensor({B, N, H, W});
  std::shared_ptr<DfeTapeState> state;
  if (attrs.flag("tape", true)) state = std::make_shared<DfeTapeState>(wp, B, H, W, range);
  const double ask = attrs.number("scratch", 0);
  const int64_t need = dfe_scratch_elems<float>(w.arch, H, W, state != nullptr);
  Buffer<float> scratch(size_t(ask > double(need) && ask <= double(F.count()) ? int64_t(ask) : need));
  dfe_forward<float, FastKernels>(w, x.f32.data(), B, H, W, range, F.f32.mut(),
                                  state ? &state->tape : nullptr, ambient_cancel(), scratch.data());
  const char* what = nullptr;
  const NumericStage stage = features_stage(attrs, &what);
  check_finite(F.f32.data(), F.count(), stage, what, [&] { return weights_context(w); });
  Outputs out;
  out.emplace_back("F", std::move(F));
  if (state) {
    state->count_bytes();
    Value t;
    t.kind = Kind::State;
    t.state = std::move(state);
    out.emplace_back("tape", std::move(t));
  }
  return out;
}

// inputs: tape (from dfe), dF [B, N, H, W]. outputs: dx [B, 3, H, W] = (∂F/∂x)ᵀ·dF.
Outputs dfe_backward_op(std::vector<Value>& in, const Attrs&) {
  const std::string op = "dfeBackward";
  Value& tv = input(in, 0, op, "tape");
  auto* tape = tv.kind == Kind::State ? dynamic_cast<DfeTapeState*>(tv.state.get()) : nullptr;
  if (!tape) op_fail(op, "tape must be the tape of a dfe op");
  // dfe_backward uses dF as scratch: the caller's own buffer only when handed over.
  Value dF = writable(tensor_input(in, 1, op, "dF", 4));
  const DfeWeights<float>& w = *tape->weights;
  const std::vector<int64_t> want = {tape->B, w.arch.channels, tape->H, tape->W};
  if (dF.dims != want) op_fail(op, "dF must have the dims of the features the tape was recorded for", "E_SHAPE");
  Value dx = Value::tensor({tape->B, 3, tape->H, tape->W});
  dfe_backward<float, FastKernels>(w, tape->tape, dF.f32.mut(), tape->B, tape->H, tape->W,
                                   tape->range, dx.f32.mut(), ambient_cancel());
  check_finite(dx.f32.data(), dx.count(), NumericStage::DfeBackward, "the gradient",
               [&] { return weights_context(w); });
  Outputs out;
  out.emplace_back("dx", std::move(dx));
  return out;
}

}  // namespace

void register_dfe_ops(std::vector<OpInfo>& list) {
  list.push_back({"dfe", dfe});
  list.push_back({"dfeBackward", dfe_backward_op});
}

}  // namespace ops
}  // namespace mghf
