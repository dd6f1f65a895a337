// The arguments of the DFE ops (dfe, the pieces), read once for both backends
// (ops/dfe_ops.cpp, ops/dfe_piece_ops.cpp, cuda/ops_cuda.cu, cuda/dfe_piece_ops_cuda.cu),
// as ops/term_args.h does for the loss terms.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "dfe.h"
#include "ops/op.h"

namespace mghf {
namespace ops {

// attr inputRange: "unit" ([0, 1], the default) or "symmetric" ([-1, 1]; SPEC §1).
inline InputRange range_attr(const Attrs& attrs) {
  return attrs.text("inputRange", "unit") == "symmetric" ? InputRange::Symmetric : InputRange::Unit;
}

// Input i as DFE weights, else E_WEIGHTS.
inline std::shared_ptr<const DfeWeights<float>> weights_input(std::vector<Value>& in, size_t i, const std::string& op) {
  Value& wv = input(in, i, op, "weights");
  if (wv.kind != Kind::Weights || !wv.weights) op_fail(op, "weights must be DFE weights", "E_WEIGHTS");
  return wv.weights;
}

}  // namespace ops
}  // namespace mghf
