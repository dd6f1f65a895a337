// `adam` (p₀, g₀, m₀, v₀, p₁, … → p₀, m₀, v₀, …): one step of PyTorch's Adam
// (train/adam.h's adam_update) over every parameter of a model at once.
// Inputs are read in place, so the op updates owned copies and returns the new p, m, v;
// lib/trainer-ops.ts writes them back into the caller's arrays.
#include <string>

#include "ops/trainer_ops.h"
#include "parallel.h"
#include "train/adam.h"

namespace mghf {
namespace ops {

// attrs: lr, beta1, beta2, eps, step (≥ 1, the step being taken).
AdamConfig adam_config(const Attrs& attrs, const std::string& op, int64_t* step) {
  AdamConfig c;
  c.lr = attrs.number("lr", 1e-3);
  c.beta1 = attrs.number("beta1", 0.9);
  c.beta2 = attrs.number("beta2", 0.999);
  c.eps = attrs.number("eps", 1e-8);
  const double s = attrs.number("step", 1);
  if (!(s >= 1 && s <= 9e15) || s != double(int64_t(s))) op_fail(op, "step must be a positive integer", "E_OPTION");
  *step = int64_t(s);
  return c;
}

namespace {

// inputs: 4 per parameter (p, g, m, v, any equal dims). attrs: lr, beta1, beta2, eps, step (≥ 1,
// the step being taken). outputs: p<i>, m<i>, v<i>.
Outputs adam(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "adam";
  if (in.empty() || in.size() % 4) op_fail(op, "inputs must be (p, g, m, v) per parameter");
  int64_t step = 0;
  const AdamConfig c = adam_config(attrs, op, &step);
  const size_t params = in.size() / 4;
  for (size_t i = 0; i < in.size(); ++i) {
    const Value& v = input(in, i, op, "a tensor");
    tensor_input(in, i, op, "a tensor", v.dims.empty() ? 1 : v.dims.size());
    same_dims(in[i - i % 4], v, op, "p", "g, m and v");
  }
  parallel_for(int64_t(params), [&](int64_t i) {
    Value* q = &in[size_t(i) * 4];
    // p, m and v are read in place (op.h): the update goes into owned copies, returned as outputs.
    for (int k : {0, 2, 3}) q[k] = writable(q[k]);
    adam_update(q[0].count(), q[0].f32.mut(), q[2].f32.mut(), q[3].f32.mut(), q[1].f32.data(), c.lr,
                c, step);
  });
  Outputs out;
  for (size_t i = 0; i < params; ++i) {
    const std::string n = std::to_string(i);
    out.emplace_back("p" + n, std::move(in[i * 4]));
    out.emplace_back("m" + n, std::move(in[i * 4 + 2]));
    out.emplace_back("v" + n, std::move(in[i * 4 + 3]));
  }
  return out;
}

}  // namespace

void register_adam_ops(std::vector<OpInfo>& list) { list.push_back({"adam", adam}); }

}  // namespace ops
}  // namespace mghf
