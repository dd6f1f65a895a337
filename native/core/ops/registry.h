// The op list: every op by name, for the binding's one generic entry
// (addon.op(name, inputs, attrs)). Adding an op: a function in its group's
// file under native/core/ops/ and one line in that group's register function.
#pragma once
#include <string>
#include <vector>

#include "ops/op.h"

namespace mghf {
namespace ops {

struct OpInfo {
  const char* name;
  OpFn run;
};

// The op called `name`, or nullptr.
const OpInfo* find_op(const std::string& name);
std::vector<std::string> op_names();
// Runs op `name` (E_ARGUMENT naming the known ops when there is none).
Outputs run_op(const std::string& name, std::vector<Value>& inputs, const Attrs& attrs);

// One per group (dfe_ops.cpp, entropy_ops.cpp, csc_ops.cpp, lip_ops.cpp, n_ops.cpp).
void register_dfe_ops(std::vector<OpInfo>& list);
void register_dfe_piece_ops(std::vector<OpInfo>& list);  // normalize, stem, coupling
void register_entropy_ops(std::vector<OpInfo>& list);
void register_csc_ops(std::vector<OpInfo>& list);
void register_lip_ops(std::vector<OpInfo>& list);
void register_n_ops(std::vector<OpInfo>& list);

}  // namespace ops
}  // namespace mghf
