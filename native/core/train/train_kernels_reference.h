// Plain reference kernels for pretraining (SPEC §2 weight gradients, SPEC §10
// head convolutions), added to ReferenceKernels<T> so one kernel set serves the
// forward, the input backward and the weight backward. Templated on the scalar
// so the tests check them in double against finite differences; the fast float
// kernels (train_kernels_fast.h) are tested against these.
//
// Every *_weight_grad accumulates (+=) into its outputs: the caller zeroes the
// gradients once per batch and each sample adds its share.
#pragma once
#include <cstdint>

#include "head_weights.h"
#include "kernels_reference.h"

namespace mghf {

template <class T>
struct ReferenceTrainKernels : ReferenceKernels<T> {
  using grad_type = T;  // type of the weight-gradient accumulators

  // dW[M×K] += dout[M×P]·in[K×P]ᵀ; db[M] += Σ_p dout (db may be null).
  static void conv1x1_weight_grad(int M, int K, int64_t P, const T* dout, const T* in, T* dW,
                                  T* db) {
    for (int m = 0; m < M; ++m) {
      for (int k = 0; k < K; ++k) {
        T acc = 0;
        for (int64_t p = 0; p < P; ++p) acc += dout[m * P + p] * in[k * P + p];
        dW[m * K + k] += acc;
      }
      if (db) {
        T acc = 0;
        for (int64_t p = 0; p < P; ++p) acc += dout[m * P + p];
        db[m] += acc;
      }
    }
  }

  // Stem (3×3, stride 1, zero padding 1, 3 → N): dW [N×27] and db [N] given dz [N×P].
  static void stem_weight_grad(int N, int H, int Wd, const T* xh, const T* dz, T* dW, T* db) {
    const int64_t P = int64_t(H) * Wd;
    for (int n = 0; n < N; ++n) {
      for (int ci = 0; ci < 3; ++ci)
        for (int dy = 0; dy < 3; ++dy)
          for (int dx = 0; dx < 3; ++dx) {
            T acc = 0;
            for (int y = 0; y < H; ++y)
              for (int x = 0; x < Wd; ++x) {
                const int yy = y + dy - 1, xx = x + dx - 1;
                if (yy < 0 || yy >= H || xx < 0 || xx >= Wd) continue;
                acc += dz[n * P + int64_t(y) * Wd + x] * xh[ci * P + int64_t(yy) * Wd + xx];
              }
            dW[((n * 3 + ci) * 3 + dy) * 3 + dx] += acc;
          }
      T acc = 0;
      for (int64_t p = 0; p < P; ++p) acc += dz[n * P + p];
      db[n] += acc;
    }
  }

  // Depthwise 3×3 on the reflection-padded input: dW[C×9] += Σ_{y,x} g[c,y,x] ·
  // in[c, reflect(y+dy−1), reflect(x+dx−1)]. g is ∂L/∂(depthwise output), already
  // masked by the following ReLU6.
  static void depthwise_weight_grad(int C, int H, int Wd, const T* g, const T* in, T* dW) {
    const int64_t P = int64_t(H) * Wd;
    for (int ch = 0; ch < C; ++ch)
      for (int dy = 0; dy < 3; ++dy)
        for (int dx = 0; dx < 3; ++dx) {
          T acc = 0;
          for (int y = 0; y < H; ++y)
            for (int x = 0; x < Wd; ++x)
              acc += g[ch * P + int64_t(y) * Wd + x] *
                     in[ch * P + int64_t(reflect_index(y + dy - 1, H)) * Wd +
                        reflect_index(x + dx - 1, Wd)];
          dW[ch * 9 + dy * 3 + dx] += acc;
        }
  }

  // out[Co×Ho·Wo] = conv3x3(in [Ci×H·W]; w [Co×Ci·9], b [Co]), stride 2, zero
  // padding 1 (before the head's ReLU).
  static void conv3x3s2(int Co, int Ci, int H, int Wd, const T* w, const T* b, const T* in,
                        T* out) {
    const int Ho = conv_s2_out(H), Wo = conv_s2_out(Wd);
    const int64_t P = int64_t(H) * Wd, Po = int64_t(Ho) * Wo;
    for (int o = 0; o < Co; ++o)
      for (int y = 0; y < Ho; ++y)
        for (int x = 0; x < Wo; ++x) {
          T acc = b[o];
          for (int ci = 0; ci < Ci; ++ci)
            for (int dy = 0; dy < 3; ++dy)
              for (int dx = 0; dx < 3; ++dx) {
                const int yy = 2 * y + dy - 1, xx = 2 * x + dx - 1;
                if (yy < 0 || yy >= H || xx < 0 || xx >= Wd) continue;
                acc += w[(int64_t(o) * Ci + ci) * 9 + dy * 3 + dx] *
                       in[ci * P + int64_t(yy) * Wd + xx];
              }
          out[o * Po + int64_t(y) * Wo + x] = acc;
        }
  }

  // din [Ci×H·W] = input gradient of conv3x3s2 given dout [Co×Ho·Wo].
  static void conv3x3s2_backward(int Co, int Ci, int H, int Wd, const T* w, const T* dout,
                                 T* din) {
    const int Ho = conv_s2_out(H), Wo = conv_s2_out(Wd);
    const int64_t P = int64_t(H) * Wd, Po = int64_t(Ho) * Wo;
    for (int64_t i = 0; i < int64_t(Ci) * P; ++i) din[i] = 0;
    for (int o = 0; o < Co; ++o)
      for (int y = 0; y < Ho; ++y)
        for (int x = 0; x < Wo; ++x) {
          const T g = dout[o * Po + int64_t(y) * Wo + x];
          for (int ci = 0; ci < Ci; ++ci)
            for (int dy = 0; dy < 3; ++dy)
              for (int dx = 0; dx < 3; ++dx) {
                const int yy = 2 * y + dy - 1, xx = 2 * x + dx - 1;
                if (yy < 0 || yy >= H || xx < 0 || xx >= Wd) continue;
                din[ci * P + int64_t(yy) * Wd + xx] += w[(int64_t(o) * Ci + ci) * 9 + dy * 3 + dx] * g;
              }
        }
  }

  // dW [Co×Ci·9] += weight gradient of conv3x3s2, db [Co] += Σ dout.
  static void conv3x3s2_weight_grad(int Co, int Ci, int H, int Wd, const T* in, const T* dout,
                                    T* dW, T* db) {
    const int Ho = conv_s2_out(H), Wo = conv_s2_out(Wd);
    const int64_t P = int64_t(H) * Wd, Po = int64_t(Ho) * Wo;
    for (int o = 0; o < Co; ++o) {
      for (int ci = 0; ci < Ci; ++ci)
        for (int dy = 0; dy < 3; ++dy)
          for (int dx = 0; dx < 3; ++dx) {
            T acc = 0;
            for (int y = 0; y < Ho; ++y)
              for (int x = 0; x < Wo; ++x) {
                const int yy = 2 * y + dy - 1, xx = 2 * x + dx - 1;
                if (yy < 0 || yy >= H || xx < 0 || xx >= Wd) continue;
                acc += dout[o * Po + int64_t(y) * Wo + x] * in[ci * P + int64_t(yy) * Wd + xx];
              }
            dW[(int64_t(o) * Ci + ci) * 9 + dy * 3 + dx] += acc;
          }
      T acc = 0;
      for (int64_t p = 0; p < Po; ++p) acc += dout[o * Po + p];
      db[o] += acc;
    }
  }
};

}  // namespace mghf
