// The DFE's pieces as ops (SPEC §2; issue 15 item 2): `normalize` (x → x̂),
// `stem` (x̂ → the 3×3 stem conv), `coupling` (block k: the 1×1 mix, then
// z2 += φ(z1) and z1 ← z1 ⊙ exp ρ(z2) + η(z2)), each with a backward. Composed
// normalize → stem → coupling 0 … K−1 they compute `dfe`'s features bit for
// bit: the lines of dfe.h's dfe_forward, block 0's mix as Kn::stem_mix does it
// (bias, then the product added). The input gradients are dfe_backward's lines;
// the weight gradients (weightGrad) are the pretraining kernels' (train/), with
// each IRB's ReLU6 outputs recomputed from the inputs the tape keeps.
#include "dfe.h"
#include "kernels_fast.h"
#include "numeric_checks.h"
#include "ops/dfe_args.h"
#include "ops/registry.h"
#include "train/dfe_train.h"
#include "train/train_kernels_fast.h"

namespace mghf {
namespace ops {
namespace {

using Kn = FastKernels;
using TK = FastTrainKernels;

// A kept copy of an input for a backward (JavaScript may write into its array after the forward).
Buffer<float> keep(const Value& v) {
  Buffer<float> b(v.f32.size());
  if (b.size()) std::memcpy(b.data(), v.f32.data(), b.size() * sizeof(float));
  return b;
}

// The weight gradients whose SPEC §9 names start with `prefix`, as Float64 vectors "grad:<name>".
void weight_grad_outputs(DfeWeights<double>& g, const std::string& prefix, Outputs& out) {
  g.for_each([&](const std::string& name, Buffer<double>& b) {
    if (name.compare(0, prefix.size(), prefix) != 0) return;
    out.emplace_back("grad:" + name, Value::vector(std::vector<double>(b.data(), b.data() + b.size())));
  });
}

// E_NUMERIC when a piece's output overflowed, naming the largest weight (as dfe does).
void check_output(const Value& v, NumericStage stage, const char* what, const DfeWeights<float>& w) {
  check_finite(v.f32.data(), v.count(), stage, what, [&] {
    NumericContext c;
    c.weights_hint = largest_weight_hint(w);
    return c;
  });
}

Value state_value(std::shared_ptr<OpState> s) {
  Value t;
  t.kind = Kind::State;
  t.state = std::move(s);
  return t;
}

// ------------------------------------------------------------------ normalize

// inputs: x [B, 3, H, W]. attrs: inputRange. outputs: xh, (x − mean)/std per channel (SPEC §2).
Outputs normalize(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "normalize";
  Value& x = tensor_input(in, 0, op, "x", 4);
  if (x.dims[1] != 3) op_fail(op, "x must have 3 channels", "E_SHAPE");
  const InputRange range = range_attr(attrs);
  const int64_t B = x.dims[0], P = x.dims[2] * x.dims[3];
  Value xh = Value::tensor(x.dims);
  for (int64_t b = 0; b < B; ++b)
    for (int ch = 0; ch < 3; ++ch) {
      const float mean = float(kMean[ch]), sd = float(kStd[ch]);
      const float* src = x.f32.data() + (b * 3 + ch) * P;
      float* dst = xh.f32.mut() + (b * 3 + ch) * P;
      if (range == InputRange::Symmetric)
        detail::elementwise(P, [&](int64_t i) { dst[i] = ((src[i] + 1.0f) / 2.0f - mean) / sd; });
      else
        detail::elementwise(P, [&](int64_t i) { dst[i] = (src[i] - mean) / sd; });
    }
  Outputs out;
  out.emplace_back("xh", std::move(xh));
  return out;
}

// inputs: dxh [B, 3, H, W]. attrs: inputRange. outputs: dx = dxh · ∂x̂/∂x (a constant per channel).
Outputs normalize_backward(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "normalizeBackward";
  Value& d = tensor_input(in, 0, op, "dxh", 4);
  if (d.dims[1] != 3) op_fail(op, "dxh must have 3 channels", "E_SHAPE");
  const InputRange range = range_attr(attrs);
  const int64_t B = d.dims[0], P = d.dims[2] * d.dims[3];
  Value dx = Value::tensor(d.dims);
  for (int64_t b = 0; b < B; ++b)
    for (int ch = 0; ch < 3; ++ch) {
      const float scale = (range == InputRange::Symmetric ? 0.5f : 1.0f) / float(kStd[ch]);
      const float* src = d.f32.data() + (b * 3 + ch) * P;
      float* dst = dx.f32.mut() + (b * 3 + ch) * P;
      detail::elementwise(P, [&](int64_t i) { dst[i] = src[i] * scale; });
    }
  Outputs out;
  out.emplace_back("dx", std::move(dx));
  return out;
}

// ------------------------------------------------------------------ stem

class StemTape final : public OpState {
 public:
  StemTape(std::shared_ptr<const DfeWeights<float>> w, int B, int H, int W, Buffer<float> xh)
      : OpState("stem tape"), weights(std::move(w)), B(B), H(H), W(W), xh(std::move(xh)) {
    set_bytes(int64_t(this->xh.size() * sizeof(float)));
  }
  std::shared_ptr<const DfeWeights<float>> weights;
  int B, H, W;
  Buffer<float> xh;  // the input, for the weight gradient
};

// inputs: xh [B, 3, H, W], weights. attrs: tape (default true). outputs: z [B, N, H, W], tape.
Outputs stem(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "stem";
  Value& xh = tensor_input(in, 0, op, "xh", 4);
  auto w = weights_input(in, 1, op);
  if (xh.dims[1] != 3) op_fail(op, "xh must have 3 channels", "E_SHAPE");
  if (xh.dims[2] < 2 || xh.dims[3] < 2) op_fail(op, "xh must be at least 2×2", "E_TOO_SMALL");
  const int B = int(xh.dims[0]), H = int(xh.dims[2]), W = int(xh.dims[3]), N = w->arch.channels;
  const int64_t P = int64_t(H) * W;
  Value z = Value::tensor({B, N, H, W});
  for (int b = 0; b < B; ++b)
    Kn::stem(N, H, W, w->stem_weight.data(), w->stem_bias.data(), xh.f32.data() + b * 3 * P,
             z.f32.mut() + int64_t(b) * N * P);
  check_output(z, NumericStage::Features, "the stem's output", *w);
  Outputs out;
  out.emplace_back("z", std::move(z));
  if (attrs.flag("tape", true)) out.emplace_back("tape", state_value(std::make_shared<StemTape>(w, B, H, W, keep(xh))));
  return out;
}

// inputs: tape (of stem), dz [B, N, H, W]. attrs: weightGrad. outputs: dxh, grad:stem.* (weightGrad).
Outputs stem_backward(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "stemBackward";
  Value& tv = input(in, 0, op, "tape");
  auto* tape = tv.kind == Kind::State ? dynamic_cast<StemTape*>(tv.state.get()) : nullptr;
  if (!tape) op_fail(op, "tape must be the tape of a stem op");
  Value& dz = tensor_input(in, 1, op, "dz", 4);
  const DfeWeights<float>& w = *tape->weights;
  const int B = tape->B, H = tape->H, W = tape->W, N = w.arch.channels;
  if (dz.dims != std::vector<int64_t>{B, N, H, W}) op_fail(op, "dz must have the dims of the stem's output", "E_SHAPE");
  const int64_t P = int64_t(H) * W;
  Value dxh = Value::tensor({B, 3, H, W});
  for (int b = 0; b < B; ++b)
    Kn::stem_backward(N, H, W, w.stem_weight.data(), dz.f32.data() + int64_t(b) * N * P, dxh.f32.mut() + b * 3 * P);
  check_output(dxh, NumericStage::DfeBackward, "the gradient", w);
  Outputs out;
  out.emplace_back("dxh", std::move(dxh));
  if (attrs.flag("weightGrad", false)) {
    DfeWeights<double> g(w.arch);
    for (int b = 0; b < B; ++b)
      TK::stem_weight_grad(N, H, W, tape->xh.data() + b * 3 * P, dz.f32.data() + int64_t(b) * N * P,
                           g.stem_weight.data(), g.stem_bias.data());
    weight_grad_outputs(g, "stem.", out);
  }
  return out;
}

// ------------------------------------------------------------------ coupling

class CouplingTape final : public OpState {
 public:
  CouplingTape(std::shared_ptr<const DfeWeights<float>> w, int k, int B, int H, int W)
      : OpState("coupling tape"), weights(std::move(w)), k(k), B(B), H(H), W(W) {}
  void count_bytes() {
    int64_t b = int64_t(z.size() + z2.size() + tape.z1.size() + tape.E.size()) * int64_t(sizeof(float));
    for (const IrbTape* it : {&tape.phi, &tape.rho, &tape.eta}) b += int64_t(it->m1.size() + it->m2.size());
    set_bytes(b);
  }
  std::shared_ptr<const DfeWeights<float>> weights;
  int k, B, H, W;
  BlockTape<float> tape;  // z1, exp ρ and the masks, as dfe_forward records them
  Buffer<float> z, z2;    // the block's input and z2 after φ: the weight gradients' inputs
};

// inputs: z [B, N, H, W], weights. attrs: block (k), tape (default true). outputs: y, tape.
Outputs coupling(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "coupling";
  Value& z = tensor_input(in, 0, op, "z", 4);
  auto wp = weights_input(in, 1, op);
  const DfeWeights<float>& w = *wp;
  const DfeArchitecture& a = w.arch;
  const int k = attrs.integer("block", 0, 0, a.blocks - 1);
  const int N = a.channels, c = a.half(), h = a.hidden();
  if (z.dims[1] != N) op_fail(op, "z must have the weights' N channels", "E_SHAPE");
  const int B = int(z.dims[0]), H = int(z.dims[2]), W = int(z.dims[3]);
  if (H < 2 || W < 2) op_fail(op, "z must be at least 2×2", "E_TOO_SMALL");
  const int64_t P = int64_t(H) * W, cP = int64_t(c) * P, mb = Kn::irb_mask_bytes(h, H, W);
  std::shared_ptr<CouplingTape> state;
  if (attrs.flag("tape", true)) {
    state = std::make_shared<CouplingTape>(wp, k, B, H, W);
    BlockTape<float>& bt = state->tape;
    bt.z1.resize(size_t(B) * cP);
    bt.E.resize(size_t(B) * cP);
    for (IrbTape* it : {&bt.phi, &bt.rho, &bt.eta}) {
      it->m1.resize(size_t(B * mb));
      it->m2.resize(size_t(B * mb));
    }
    state->z = keep(z);
    state->z2.resize(size_t(B) * cP);
  }
  const BlockWeights<float>& bw = w.block[k];
  Value y = Value::tensor(z.dims);
  Buffer<float> room{size_t(2) * cP};
  BlockTape<float>* bt = state ? &state->tape : nullptr;
  for (int b = 0; b < B; ++b) {
    const float* zb = z.f32.data() + int64_t(b) * N * P;
    float* yp = y.f32.mut() + int64_t(b) * N * P;
    if (k == 0) {
      // As Kn::stem_mix: the bias, then the product added (its slabs do not change a sum).
      for (int m = 0; m < N; ++m) std::fill(yp + m * P, yp + (m + 1) * P, bw.mix_bias[size_t(m)]);
      Kn::matmul(N, N, P, bw.mix_weight.data(), zb, P, yp, P, true);
    } else {
      Kn::conv1x1(N, N, P, bw.mix_weight.data(), bw.mix_bias.data(), zb, yp, false);
    }
    auto m1p = [&](IrbTape* it) { return it ? it->m1.data() + b * mb : nullptr; };
    auto m2p = [&](IrbTape* it) { return it ? it->m2.data() + b * mb : nullptr; };
    float* z1 = yp;
    float* z2 = yp + cP;
    detail::irb_forward<float, Kn>(bw.phi, c, h, H, W, z1, z2, true, m1p(bt ? &bt->phi : nullptr),
                                   m2p(bt ? &bt->phi : nullptr));
    float* tz1 = bt ? bt->z1.data() + b * cP : nullptr;
    float* tE = bt ? bt->E.data() + b * cP : nullptr;
    float* Rp = tE ? tE : room.data();
    float* Ep = tE ? room.data() : room.data() + cP;
    detail::irb_forward<float, Kn>(bw.rho, c, h, H, W, z2, Rp, false, m1p(bt ? &bt->rho : nullptr),
                                   m2p(bt ? &bt->rho : nullptr));
    detail::irb_forward<float, Kn>(bw.eta, c, h, H, W, z2, Ep, false, m1p(bt ? &bt->eta : nullptr),
                                   m2p(bt ? &bt->eta : nullptr));
    if (state) std::memcpy(state->z2.data() + b * cP, z2, size_t(cP) * sizeof(float));
    detail::coupling_forward<float, Kn>(cP, Rp, Ep, z1, tz1, tE);
  }
  check_output(y, NumericStage::Features, "the coupling's output", w);
  Outputs out;
  out.emplace_back("y", std::move(y));
  if (state) {
    state->count_bytes();
    out.emplace_back("tape", state_value(std::move(state)));
  }
  return out;
}

// inputs: tape (of coupling), dy [B, N, H, W]. attrs: weightGrad. outputs: dz, grad:inn.k.* (weightGrad).
Outputs coupling_backward(std::vector<Value>& in, const Attrs& attrs) {
  const std::string op = "couplingBackward";
  Value& tv = input(in, 0, op, "tape");
  auto* tape = tv.kind == Kind::State ? dynamic_cast<CouplingTape*>(tv.state.get()) : nullptr;
  if (!tape) op_fail(op, "tape must be the tape of a coupling op");
  const DfeWeights<float>& w = *tape->weights;
  const DfeArchitecture& a = w.arch;
  const int N = a.channels, c = a.half(), h = a.hidden(), B = tape->B, H = tape->H, W = tape->W;
  // The backward works in dy's memory (writable: a copy unless handed over).
  Value dy = writable(tensor_input(in, 1, op, "dy", 4));
  if (dy.dims != std::vector<int64_t>{B, N, H, W}) op_fail(op, "dy must have the dims of the block's output", "E_SHAPE");
  const bool weight_grad = attrs.flag("weightGrad", false);
  const int64_t P = int64_t(H) * W, cP = int64_t(c) * P, mb = Kn::irb_mask_bytes(h, H, W);
  const BlockWeights<float>& bw = w.block[tape->k];
  const BlockTape<float>& bt = tape->tape;
  Value dz = Value::tensor({B, N, H, W});
  Buffer<float> Dr{size_t(cP)};
  DfeWeights<double> g(weight_grad ? a : DfeArchitecture{a.channels, 0, a.expand});
  IrbTrainTape<float> tt[3];
  Buffer<float> g1, g2, discard;
  if (weight_grad) {
    for (IrbTrainTape<float>& t : tt)
      for (Buffer<float>* r : {&t.r1, &t.r2}) r->resize(size_t(h) * P);
    for (IrbTrainTape<float>& t : tt)
      for (Buffer<uint8_t>* m : {&t.m1, &t.m2}) m->resize(size_t(h) * P);
    g1.resize(size_t(h) * P);
    g2.resize(size_t(h) * P);
    discard.resize(size_t(cP));
  }
  for (int b = 0; b < B; ++b) {
    float* d = dy.f32.mut() + int64_t(b) * N * P;
    const float* z1 = bt.z1.data() + b * cP;
    const float* E = bt.E.data() + b * cP;
    float* dz1 = d;       // ∂L/∂z1 after the coupling, becomes ∂L/∂z1 before it
    float* da = d + cP;   // ∂L/∂z2 after φ
    float* Drp = Dr.data();
    float* dzb = dz.f32.mut() + int64_t(b) * N * P;
    // z1' = z1 ⊙ E + η(a), E = exp(ρ(a)):  ∂ρ = dz1' ⊙ z1 ⊙ E,  ∂η = dz1'
    detail::elementwise(cP, [&](int64_t i) { Drp[i] = dz1[i] * z1[i] * E[i]; });
    if (!weight_grad) {
      detail::irb_backward<float, Kn>(bw.eta, c, h, H, W, bt.eta.m1.data() + b * mb, bt.eta.m2.data() + b * mb, dz1, da);
      detail::irb_backward<float, Kn>(bw.rho, c, h, H, W, bt.rho.m1.data() + b * mb, bt.rho.m2.data() + b * mb, Drp, da);
      detail::elementwise(cP, [&](int64_t i) { dz1[i] *= E[i]; });
      detail::irb_backward<float, Kn>(bw.phi, c, h, H, W, bt.phi.m1.data() + b * mb, bt.phi.m2.data() + b * mb, da, dz1);
      Kn::conv1x1_backward(N, N, P, bw.mix_weight.data(), d, dzb, false);
      continue;
    }
    // With weight gradients: dfe_train_backward's block, its IRB tapes recomputed from the inputs.
    BlockWeights<double>& gw = g.block[size_t(tape->k)];
    const float* z2 = tape->z2.data() + b * cP;
    const float* zin = tape->z.data() + int64_t(b) * N * P;
    detail::irb_train_forward<float, TK>(bw.phi, c, h, H, W, z1, discard.data(), false, tt[0]);
    detail::irb_train_forward<float, TK>(bw.rho, c, h, H, W, z2, discard.data(), false, tt[1]);
    detail::irb_train_forward<float, TK>(bw.eta, c, h, H, W, z2, discard.data(), false, tt[2]);
    detail::irb_train_backward<float, TK>(bw.eta, c, h, H, W, tt[2], z2, dz1, da, gw.eta, g1.data(), g2.data());
    detail::irb_train_backward<float, TK>(bw.rho, c, h, H, W, tt[1], z2, Drp, da, gw.rho, g1.data(), g2.data());
    detail::elementwise(cP, [&](int64_t i) { dz1[i] *= E[i]; });
    detail::irb_train_backward<float, TK>(bw.phi, c, h, H, W, tt[0], z1, da, dz1, gw.phi, g1.data(), g2.data());
    TK::conv1x1_weight_grad(N, N, P, d, zin, gw.mix_weight.data(), gw.mix_bias.data());
    TK::conv1x1_backward(N, N, P, bw.mix_weight.data(), d, dzb, false);
  }
  check_output(dz, NumericStage::DfeBackward, "the gradient", w);
  Outputs out;
  out.emplace_back("dz", std::move(dz));
  if (weight_grad) weight_grad_outputs(g, "inn." + std::to_string(tape->k) + ".", out);
  return out;
}

}  // namespace

void register_dfe_piece_ops(std::vector<OpInfo>& list) {
  list.push_back({"normalize", normalize});
  list.push_back({"normalizeBackward", normalize_backward});
  list.push_back({"stem", stem});
  list.push_back({"stemBackward", stem_backward});
  list.push_back({"coupling", coupling});
  list.push_back({"couplingBackward", coupling_backward});
}

}  // namespace ops
}  // namespace mghf
