// The classifier head of SPEC §10 (pretraining only): 3 × (conv3x3 stride 2,
// padding 1, N→N, bias → ReLU) → global average pool → FC(N → classes).
#pragma once
#include <functional>
#include <string>

#include "buffer.h"

namespace mghf {

constexpr int kHeadConvs = 3;

// Output size of a 3×3 stride-2 convolution with padding 1: floor((n + 2 − 3)/2) + 1.
inline int conv_s2_out(int n) { return (n - 1) / 2 + 1; }

// The fan-in of a head tensor by name (SPEC §10): N for the fully connected
// layer, N·3·3 for the convolutions (weights and biases alike, as PyTorch).
inline double head_fan_in(const std::string& name, int channels) {
  return name.find("fc") != std::string::npos ? channels : 9.0 * channels;
}

template <class T>
struct HeadWeights {
  int channels = 0;  // N
  int classes = 0;
  Buffer<T> conv_weight[kHeadConvs];  // [N, N·3·3]
  Buffer<T> conv_bias[kHeadConvs];    // [N]
  Buffer<T> fc_weight;                // [classes, N]
  Buffer<T> fc_bias;                  // [classes]

  // Allocates every tensor, zeroed.
  explicit HeadWeights(int N = 0, int num_classes = 0) : channels(N), classes(num_classes) {
    for (int i = 0; i < kHeadConvs; ++i) {
      conv_weight[i].resize(size_t(N) * N * 9);
      conv_bias[i].resize(size_t(N));
    }
    fc_weight.resize(size_t(num_classes) * N);
    fc_bias.resize(size_t(num_classes));
    for_each([](const std::string&, Buffer<T>& b) { b.zero(); });
  }

  // Visits every tensor with its checkpoint name (SPEC §10), in a fixed order.
  void for_each(const std::function<void(const std::string&, Buffer<T>&)>& fn) {
    for (int i = 0; i < kHeadConvs; ++i) {
      const std::string p = "head.conv." + std::to_string(i) + ".";
      fn(p + "weight", conv_weight[i]);
      fn(p + "bias", conv_bias[i]);
    }
    fn("head.fc.weight", fc_weight);
    fn("head.fc.bias", fc_bias);
  }

  template <class U>
  HeadWeights<U> cast() const {
    HeadWeights<U> out(channels, classes);
    for (int i = 0; i < kHeadConvs; ++i) {
      copy_cast(conv_weight[i], out.conv_weight[i]);
      copy_cast(conv_bias[i], out.conv_bias[i]);
    }
    copy_cast(fc_weight, out.fc_weight);
    copy_cast(fc_bias, out.fc_bias);
    return out;
  }

 private:
  template <class U>
  static void copy_cast(const Buffer<T>& src, Buffer<U>& dst) {
    for (size_t j = 0; j < src.size(); ++j) dst[j] = U(src[j]);
  }
};

}  // namespace mghf
