#include "ops/registry.h"

namespace mghf {
namespace ops {
namespace {

const std::vector<OpInfo>& table() {
  static const std::vector<OpInfo> list = [] {
    std::vector<OpInfo> l;
    register_dfe_ops(l);
    register_dfe_piece_ops(l);
    register_entropy_ops(l);
    register_csc_ops(l);
    register_lip_ops(l);
    register_n_ops(l);
    return l;
  }();
  return list;
}

}  // namespace

const OpInfo* find_op(const std::string& name) {
  for (const OpInfo& op : table())
    if (name == op.name) return &op;
  return nullptr;
}

std::vector<std::string> op_names() {
  std::vector<std::string> names;
  for (const OpInfo& op : table()) names.push_back(op.name);
  return names;
}

Outputs run_op(const std::string& name, std::vector<Value>& inputs, const Attrs& attrs) {
  const OpInfo* op = find_op(name);
  if (!op) {
    std::string known;
    for (const std::string& n : op_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("E_ARGUMENT", "unknown op '" + name + "'; the ops are: " + known);
  }
  return op->run(inputs, attrs);
}

}  // namespace ops
}  // namespace mghf
