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
    register_trainer_ops(l);
    register_cuda_ops(l);
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
  // Where the tensor inputs are: all on the host, or all on one device.
  int first = -1;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Kind k = inputs[i].kind;
    if (k != Kind::F32 && k != Kind::Device) continue;
    if (first < 0) {
      first = int(i);
    } else if (location_of(inputs[i]) != location_of(inputs[size_t(first)])) {
      throw Error("E_DEVICE", name + ": input " + std::to_string(first) + " is on " +
                                  location_of(inputs[size_t(first)]) + " but input " + std::to_string(i) +
                                  " is on " + location_of(inputs[i]) +
                                  "; move one with to() (ops never copy between devices)");
    }
  }
  if (first >= 0 && inputs[size_t(first)].kind == Kind::Device) {
    if (!op->cuda) throw Error("E_UNSUPPORTED", name + " has no CUDA implementation: pass host tensors");
    return op->cuda(inputs, attrs);
  }
  if (!op->run) throw Error("E_ARGUMENT", name + " takes a CUDA tensor");
  return op->run(inputs, attrs);
}

std::string location_of(const Value& v) {
  if (v.kind == Kind::Device && v.device) return "cuda:" + std::to_string(v.device->device());
  return "cpu";
}

}  // namespace ops
}  // namespace mghf
