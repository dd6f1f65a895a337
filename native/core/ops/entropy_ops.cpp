// SPEC §4 as an op: `entropyPruneReweight` (G, S [, selected] → importance,
// selected, weights) with the channel_importance and select_channels the loss
// runs. The importance is piecewise constant in the features, so this op has
// no backward: the gather-and-scale that carries the gradient is inside csc.
#include "entropy.h"
#include "kernels_fast.h"
#include "numeric_checks.h"
#include "ops/registry.h"
#include "ops/term_args.h"

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
  const PruneArgs args = prune_args(in, attrs, B, N, op);
  return prune_outputs(channel_importance<float, FastKernels>(G.f32.data(), S.f32.data(), B, N, P), args, B, N);
}

}  // namespace

void register_entropy_ops(std::vector<OpInfo>& list) {
  list.push_back({"entropyPruneReweight", entropy_prune_reweight});
}

}  // namespace ops
}  // namespace mghf
