// mghfLoss as a composition of the registry's ops (issue 15 item 3, "written once"): the loss
// composed from dfe, mseTerm, entropyPruneReweight, csc, lip and dfeBackward through run_op, so it
// runs on whichever device its tensors are on. It is THE loss of every backend: the CPU backend's
// loss, CudaBackend::loss and the mghfLoss op (host or device tensors) all call compose_loss. On
// host tensors the last term op writes ∂L/∂S over S (ops/deferred_gradient.h), so its peak memory
// is the fused loss's it replaced on the CPU (kept as the tests' oracle, tests/reference_loss.h).
#pragma once
#include "loss.h"
#include "ops/registry.h"

namespace mghf {
namespace ops {

// LossOptions from the mghfLoss op's attrs (lib/loss.ts has checked them) and its optional
// `selected` input at index 3 (B·M indices, M = min(M, N)); E_OPTION when it does not fit.
LossOptions loss_options(std::vector<Value>& in, const Attrs& attrs, int B, int N);

// What compose_loss returns: the parts, skipped, importance/selected and timings as a LossResult
// holds them (r.grad stays empty), and ∂L/∂sr as a value on sr's device (None without grad).
struct ComposedLoss {
  LossResult<float> r;
  Value grad;
};

// The loss of sr, gt [B, 3, H, W] (both host or both on one device) under `o`, every option of
// LossOptions: the cancel flag checked between stages (and passed to the ops, ambient_cancel,
// so the DFE and Sinkhorn stop inside a stage), E_NUMERIC naming the first stage that produced a
// NaN/Inf, profile laps named after the stages (dfe_forward, n, importance, csc, lip,
// dfe_backward), grad false: no tape, no ∂L/∂S, no backward. The terms' gradients are summed per
// element in the order n, csc, lip: on a device each onto the previous one's (addTo), on the host
// by the last term op over S.
ComposedLoss compose_loss(const Value& sr, const Value& gt, const Value& weights, const LossOptions& o);

// The mghfLoss op's form of compose_loss. inputs: sr, gt [B, 3, H, W], weights, selected
// (optional). outputs as the mghfLoss op (see ops_cuda.cu): loss, n, mse, corr, gram, csc, lip,
// skipped, grad, importance/selected.
Outputs compose_mghf_loss(std::vector<Value>& in, const Attrs& attrs);
// A ComposedLoss as the mghfLoss op's outputs (moves the grad and details out of c).
Outputs loss_outputs(ComposedLoss& c);

}  // namespace ops
}  // namespace mghf
