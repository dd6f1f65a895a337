// The classifier head of SPEC §10 on one image's features F [N, H, W]: forward
// to the logits, and backward to ∂L/∂F and the head's weight gradients.
// Written once over a train kernel set (train_kernels_reference.h or
// train_kernels_fast.h).
#pragma once
#include <cstdint>

#include "buffer.h"
#include "dfe.h"
#include "head_weights.h"

namespace mghf {

template <class T>
struct HeadTape {
  int H[kHeadConvs + 1] = {}, W[kHeadConvs + 1] = {};  // input size of each conv, then the pooled map's
  Buffer<T> act[kHeadConvs];                          // post-ReLU output of each conv
  Buffer<T> pooled;                                   // [N]
};

// logits [classes] = head(F [N, H·W]).
template <class T, class Kn>
void head_forward(const HeadWeights<T>& hw, const T* F, int H, int W, HeadTape<T>& tape,
                  T* logits) {
  const int N = hw.channels;
  tape.H[0] = H;
  tape.W[0] = W;
  const T* in = F;
  for (int i = 0; i < kHeadConvs; ++i) {
    const int Ho = conv_s2_out(tape.H[i]), Wo = conv_s2_out(tape.W[i]);
    tape.H[i + 1] = Ho;
    tape.W[i + 1] = Wo;
    const int64_t n = int64_t(N) * Ho * Wo;
    tape.act[i].resize(size_t(n));
    T* out = tape.act[i].data();
    Kn::conv3x3s2(N, N, tape.H[i], tape.W[i], hw.conv_weight[i].data(), hw.conv_bias[i].data(),
                  in, out);
    detail::elementwise(n, [&](int64_t j) { out[j] = out[j] > T(0) ? out[j] : T(0); });
    in = out;
  }
  const int64_t P3 = int64_t(tape.H[kHeadConvs]) * tape.W[kHeadConvs];
  tape.pooled.resize(size_t(N));
  for (int ch = 0; ch < N; ++ch) {
    double sum = 0;
    for (int64_t p = 0; p < P3; ++p) sum += double(in[ch * P3 + p]);
    tape.pooled[size_t(ch)] = T(sum / double(P3));
  }
  for (int k = 0; k < hw.classes; ++k) {
    T acc = hw.fc_bias[size_t(k)];
    for (int ch = 0; ch < N; ++ch) acc += hw.fc_weight[size_t(k) * N + ch] * tape.pooled[size_t(ch)];
    logits[k] = acc;
  }
}

// grad += ∂L/∂(head weights); dF [N, H·W] = ∂L/∂F, given dlogits = ∂L/∂logits
// and the tape of head_forward on F.
template <class T, class Kn, class G>
void head_backward(const HeadWeights<T>& hw, const T* F, HeadTape<T>& tape, const T* dlogits,
                   HeadWeights<G>& grad, T* dF) {
  const int N = hw.channels;
  for (int k = 0; k < hw.classes; ++k) {
    grad.fc_bias[size_t(k)] += G(dlogits[k]);
    for (int ch = 0; ch < N; ++ch)
      grad.fc_weight[size_t(k) * N + ch] += G(dlogits[k] * tape.pooled[size_t(ch)]);
  }
  // ∂ of the last conv's ReLU output: the pooled gradient spread evenly.
  int64_t Po = int64_t(tape.H[kHeadConvs]) * tape.W[kHeadConvs];
  Buffer<T> dout(size_t(N) * Po), din;
  for (int ch = 0; ch < N; ++ch) {
    T g = 0;
    for (int k = 0; k < hw.classes; ++k) g += hw.fc_weight[size_t(k) * N + ch] * dlogits[k];
    g /= T(Po);
    for (int64_t p = 0; p < Po; ++p) dout[size_t(ch * Po + p)] = g;
  }
  for (int i = kHeadConvs - 1; i >= 0; --i) {
    const int H = tape.H[i], W = tape.W[i];
    const int64_t P = int64_t(H) * W;
    // ReLU'(pre) = 1 where the output is > 0 (0 at 0, as PyTorch).
    const T* act = tape.act[i].data();
    T* d = dout.data();
    detail::elementwise(int64_t(N) * Po, [&](int64_t j) { d[j] = act[j] > T(0) ? d[j] : T(0); });
    const T* in = i > 0 ? tape.act[i - 1].data() : F;
    Kn::conv3x3s2_weight_grad(N, N, H, W, in, d, grad.conv_weight[i].data(),
                              grad.conv_bias[i].data());
    if (i > 0) {
      din.resize(size_t(N) * P);
      Kn::conv3x3s2_backward(N, N, H, W, hw.conv_weight[i].data(), d, din.data());
      dout.swap(din);
      Po = P;
    } else {
      Kn::conv3x3s2_backward(N, N, H, W, hw.conv_weight[i].data(), d, dF);
    }
  }
}

}  // namespace mghf
