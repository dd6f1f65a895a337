// DFE parameters (SPEC §2, names of §9), as flat row-major arrays.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "buffer.h"

namespace mghf {

struct DfeArchitecture {
  int channels = 128;  // N
  int blocks = 1;      // K
  int expand = 2;      // e
  int half() const { return channels / 2; }        // c
  int hidden() const { return expand * half(); }  // h
};

// The fan-in of a DFE tensor by its SPEC §9 name (the stem's 3·3·3, a mix
// conv's N, an expand's c, a depthwise 3·3, a project's h): PyTorch's default
// initialisation draws from ±1/√fan_in. Tests and benchmarks initialise so.
inline double dfe_fan_in(const std::string& name, const DfeArchitecture& a) {
  if (name.find("mix") != std::string::npos) return a.channels;
  if (name.find("expand") != std::string::npos) return a.half();
  if (name.find("depthwise") != std::string::npos) return 9;
  if (name.find("project") != std::string::npos) return a.hidden();
  return 27;
}

template <class T>
struct IrbWeights {
  Buffer<T> expand;     // [h, c]
  Buffer<T> depthwise;  // [h, 9]
  Buffer<T> project;    // [c, h]
};

template <class T>
struct BlockWeights {
  Buffer<T> mix_weight;  // [N, N]
  Buffer<T> mix_bias;    // [N]
  IrbWeights<T> phi, rho, eta;
};

template <class T>
struct DfeWeights {
  DfeArchitecture arch;
  Buffer<T> stem_weight;  // [N, 3·3·3]
  Buffer<T> stem_bias;    // [N]
  std::vector<BlockWeights<T>> block;

  // Allocates every tensor for `a`, zeroed.
  explicit DfeWeights(const DfeArchitecture& a = DfeArchitecture()) : arch(a) {
    const size_t N = a.channels, c = a.half(), h = a.hidden();
    stem_weight.resize(N * 27);
    stem_bias.resize(N);
    block.resize(a.blocks);
    for (auto& b : block) {
      b.mix_weight.resize(N * N);
      b.mix_bias.resize(N);
      for (IrbWeights<T>* irb : {&b.phi, &b.rho, &b.eta}) {
        irb->expand.resize(h * c);
        irb->depthwise.resize(h * 9);
        irb->project.resize(c * h);
      }
    }
    for_each([](const std::string&, Buffer<T>& b) { b.zero(); });
  }

  // Visits every tensor with its SPEC §9 name, in the order of weight_names().
  void for_each(const std::function<void(const std::string&, Buffer<T>&)>& fn) {
    fn("stem.weight", stem_weight);
    fn("stem.bias", stem_bias);
    for (size_t k = 0; k < block.size(); ++k) {
      const std::string p = "inn." + std::to_string(k) + ".";
      fn(p + "mix.weight", block[k].mix_weight);
      fn(p + "mix.bias", block[k].mix_bias);
      const char* names[] = {"phi", "rho", "eta"};
      IrbWeights<T>* irbs[] = {&block[k].phi, &block[k].rho, &block[k].eta};
      for (int i = 0; i < 3; ++i) {
        fn(p + names[i] + ".expand.weight", irbs[i]->expand);
        fn(p + names[i] + ".depthwise.weight", irbs[i]->depthwise);
        fn(p + names[i] + ".project.weight", irbs[i]->project);
      }
    }
  }

  template <class U>
  DfeWeights<U> cast() const {
    DfeWeights<U> out(arch);
    auto& self = const_cast<DfeWeights&>(*this);
    std::vector<const Buffer<T>*> src;
    self.for_each([&](const std::string&, Buffer<T>& b) { src.push_back(&b); });
    size_t i = 0;
    out.for_each([&](const std::string&, Buffer<U>& b) {
      for (size_t j = 0; j < b.size(); ++j) b[j] = U((*src[i])[j]);
      ++i;
    });
    return out;
  }
};

}  // namespace mghf
