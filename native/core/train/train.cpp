#include "train.h"

#include <chrono>
#include <cmath>
#include <utility>
#include <vector>

#include "error.h"
#include "train_kernels_fast.h"

namespace mghf {

Trainer::Trainer(DfeWeights<float> dfe, HeadWeights<float> head, const TrainConfig& cfg)
    : config(cfg),
      w_(std::move(dfe)),
      m_dfe_(w_.arch),
      v_dfe_(w_.arch),
      head_(std::move(head)),
      m_head_(head_.channels, head_.classes),
      v_head_(head_.channels, head_.classes),
      grads_(w_.arch, head_.classes) {
  check_head_fits(w_.arch, head_);
}

void Trainer::for_each_param(
    const std::function<void(const std::string&, Buffer<float>&, Buffer<float>&, Buffer<float>&)>&
        fn) {
  // The three structures share one layout, so visiting them in step pairs the tensors.
  std::vector<Buffer<float>*> m, v;
  m_dfe_.for_each([&](const std::string&, Buffer<float>& b) { m.push_back(&b); });
  m_head_.for_each([&](const std::string&, Buffer<float>& b) { m.push_back(&b); });
  v_dfe_.for_each([&](const std::string&, Buffer<float>& b) { v.push_back(&b); });
  v_head_.for_each([&](const std::string&, Buffer<float>& b) { v.push_back(&b); });
  size_t i = 0;
  auto visit = [&](const std::string& name, Buffer<float>& p) {
    fn(name, p, *m[i], *v[i]);
    ++i;
  };
  w_.for_each(visit);
  head_.for_each(visit);
}

void Trainer::for_each_tensor(const std::function<void(const std::string&, Buffer<float>&)>& fn) {
  std::vector<std::pair<std::string, Buffer<float>*>> m, v;
  for_each_param([&](const std::string& name, Buffer<float>& p, Buffer<float>& mb,
                     Buffer<float>& vb) {
    fn(name, p);
    m.emplace_back("adam.m." + name, &mb);
    v.emplace_back("adam.v." + name, &vb);
  });
  for (auto& e : m) fn(e.first, *e.second);
  for (auto& e : v) fn(e.first, *e.second);
}

Buffer<float>* Trainer::tensor(const std::string& name) {
  Buffer<float>* found = nullptr;
  for_each_tensor([&](const std::string& n, Buffer<float>& b) {
    if (n == name) found = &b;
  });
  return found;
}

StepStats Trainer::step(const float* x, const int* labels, int B, int H, int W,
                        const CancelFlag* cancel) {
  last_times.clear();
  grads_.zero();
  const StepStats st = classifier_batch<float, FastTrainKernels>(w_, head_, x, labels, B, H, W,
                                                                  &grads_, &last_times, cancel);
  throw_if_cancelled(cancel);  // the last chance to leave the state untouched
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::pair<Buffer<double>*, std::string>> g;
  grads_.dfe.for_each([&](const std::string& n, Buffer<double>& b) { g.emplace_back(&b, n); });
  grads_.head.for_each([&](const std::string& n, Buffer<double>& b) { g.emplace_back(&b, n); });
  if (!std::isfinite(st.loss))
    throw Error("E_NONFINITE", "the loss is not finite (" + std::to_string(st.loss) +
                                   "); no update was made");
  for (auto& e : g)
    for (size_t i = 0; i < e.first->size(); ++i)
      if (!std::isfinite((*e.first)[i]))
        throw Error("E_NONFINITE", "the gradient of " + e.second + " is not finite at index " +
                                       std::to_string(i) + "; no update was made");
  const double lr = current_lr();
  size_t i = 0;
  for_each_param([&](const std::string&, Buffer<float>& p, Buffer<float>& m, Buffer<float>& v) {
    adam_update(int64_t(p.size()), p.data(), m.data(), v.data(), g[i++].first->data(), lr, config,
                steps + 1);
  });
  ++steps;
  last_times.emplace_back(
      "adam", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  return st;
}

StepStats Trainer::evaluate(const float* x, const int* labels, int B, int H, int W,
                            const CancelFlag* cancel) const {
  return classifier_batch<float, FastTrainKernels>(w_, head_, x, labels, B, H, W, nullptr, nullptr,
                                                   cancel);
}

}  // namespace mghf
