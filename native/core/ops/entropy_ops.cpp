// SPEC §4 as an op: `entropyPruneReweight` (G, S [, selected] → importance,
// selected, weights) with the channel_importance and select_channels the loss
// runs. The importance is piecewise constant in the features, so this op has
// no backward: the gather-and-scale that carries the gradient is inside csc.
#include "entropy.h"
#include "kernels_fast.h"
#include "numeric_checks.h"
#include "ops/registry.h"

namespace mghf {
namespace ops {
namespace {

// inputs: G, S [B, N, H, W], selected (Int32 [B·M], optional). attrs: M (≤ N), alpha, gamma.
// outputs: importance (Float64 [B·N]), selected (Int32 [B·M]), weights (Float64 [B·M]).
Outputs entropy_prune_reweight(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "entropyPruneReweight";
  auto [G, S] = feature_pair(in, op);
  const int B = int(G.dims[0]), N = int(G.dims[1]);
  const int64_t P = G.dims[2] * G.dims[3];
  const int M = attrs.integer("M", 64, 1, N);
  const double alpha = attrs.number("alpha", 1), gamma = attrs.number("gamma", 1);
  std::vector<int> selected;
  if (present(in, 2)) {
    Value& sel = in[2];
    if (sel.kind != Kind::I32 || sel.i32.size() != size_t(B) * M)
      op_fail(op, "selected must be an Int32Array of B·M channel indices", "E_OPTION");
    for (int32_t v : sel.i32)
      if (v < 0 || v >= N) op_fail(op, "selected holds a channel index out of range", "E_OPTION");
    selected.assign(sel.i32.begin(), sel.i32.end());
  }
  NumericContext ctx;
  ctx.alpha = alpha;
  ctx.gamma = gamma;
  auto context = [&] { return ctx; };
  std::vector<double> imp = channel_importance<float, FastKernels>(G.f32.data(), S.f32.data(), B, N, P);
  check_finite(imp.data(), int64_t(imp.size()), NumericStage::Importance, "the importance", context);
  ChannelSelection chosen = select_channels(imp, B, N, M, selected, alpha, gamma);
  check_finite(chosen.weights.data(), int64_t(chosen.weights.size()), NumericStage::Importance,
               "the weights w", context);
  Outputs out;
  out.emplace_back("importance", Value::vector(std::move(imp)));
  out.emplace_back("selected", Value::vector(std::vector<int32_t>(chosen.sel.begin(), chosen.sel.end())));
  out.emplace_back("weights", Value::vector(std::move(chosen.weights)));
  return out;
}

}  // namespace

void register_entropy_ops(std::vector<OpInfo>& list) {
  list.push_back({"entropyPruneReweight", entropy_prune_reweight});
}

}  // namespace ops
}  // namespace mghf
