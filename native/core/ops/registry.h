// The op list: every op by name, for the binding's one generic entry
// (addon.op(name, inputs, attrs)). Adding an op: a function in its group's
// file under native/core/ops/ and one line in that group's register function.
#pragma once
#include <string>
#include <vector>

#include "ops/op.h"

namespace mghf {
namespace ops {

// An op's implementations: `run` on host tensors, `cuda` on tensors of one
// CUDA device (null: none). run_op picks one by where the tensor inputs are.
struct OpInfo {
  const char* name;
  OpFn run;
  OpFn cuda = nullptr;
};

// The op called `name`, or nullptr.
const OpInfo* find_op(const std::string& name);
std::vector<std::string> op_names();
// Runs op `name` (E_ARGUMENT naming the known ops when there is none) on the
// device its tensor inputs are on: E_DEVICE when they are on different ones
// (naming both inputs and their locations: nothing is copied between devices).
Outputs run_op(const std::string& name, std::vector<Value>& inputs, const Attrs& attrs);

// One per group (dfe_ops.cpp, entropy_ops.cpp, csc_ops.cpp, lip_ops.cpp, n_ops.cpp).
void register_dfe_ops(std::vector<OpInfo>& list);
void register_dfe_piece_ops(std::vector<OpInfo>& list);  // normalize, stem, coupling
void register_entropy_ops(std::vector<OpInfo>& list);
void register_csc_ops(std::vector<OpInfo>& list);
void register_lip_ops(std::vector<OpInfo>& list);
void register_n_ops(std::vector<OpInfo>& list);
// The trainer ops of issue 16 (ops/trainer_ops.h lists their groups).
void register_trainer_ops(std::vector<OpInfo>& list);
// The CUDA implementations (cuda/ops_cuda.cu; cuda_stub.cpp in a CPU build):
// fills `cuda` of the ops above and adds the transfers toDevice and toHost and
// mghfLoss (the stub adds toDevice, which throws E_UNSUPPORTED, and mghfLoss).
void register_cuda_ops(std::vector<OpInfo>& list);
// The DFE pieces' CUDA functions (cuda/dfe_piece_ops_cuda.cu), called by register_cuda_ops in a CUDA build.
void register_cuda_dfe_piece_ops(std::vector<OpInfo>& list);

// "cpu" or "cuda:N": where input value v is (for messages).
std::string location_of(const Value& v);

}  // namespace ops
}  // namespace mghf
