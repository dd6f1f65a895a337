// mghfLoss as a composition of the registry's ops (issue 15 item 3, "written once"): the loss
// composed from dfe, mseTerm, entropyPruneReweight, csc, lip and dfeBackward through run_op, so it
// runs on whichever device its tensors are on. It is THE loss of the CUDA backend (CudaBackend::loss
// and the mghfLoss op on device tensors both call compose_loss); the CPU backend runs loss.h's
// mghf_loss, whose stages are the very functions the CPU ops call (README "Layout" says why).
#pragma once
#include "loss.h"
#include "ops/registry.h"

namespace mghf {
namespace ops {

// LossOptions from the mghfLoss op's attrs (lib/loss.ts has checked them) and its optional
// `selected` input at index 3 (B·M indices, M = min(M, N)); E_OPTION when it does not fit.
LossOptions loss_options(std::vector<Value>& in, const Attrs& attrs, int B, int N);

// What compose_loss returns: the parts, skipped, importance/selected and timings as mghf_loss
// returns them (r.grad stays empty), and ∂L/∂sr as a value on sr's device (None without grad).
struct ComposedLoss {
  LossResult<float> r;
  Value grad;
};

// The loss of sr, gt [B, 3, H, W] (both host or both on one device) under `o`, every option as
// mghf_loss has it: the cancel flag checked between stages (and passed to the ops, ambient_cancel,
// so the DFE and Sinkhorn stop inside a stage), E_NUMERIC naming the first stage that produced a
// NaN/Inf, profile laps with mghf_loss's stage names, grad false: no tape, no ∂L/∂S, no backward.
// Each term's gradient is added onto the previous one's (addTo) in the order n, csc, lip.
ComposedLoss compose_loss(const Value& sr, const Value& gt, const Value& weights, const LossOptions& o);

// The mghfLoss op's form of compose_loss. inputs: sr, gt [B, 3, H, W], weights, selected
// (optional). outputs as the mghfLoss op (see ops_cuda.cu): loss, n, mse, corr, gram, csc, lip,
// skipped, grad, importance/selected.
Outputs compose_mghf_loss(std::vector<Value>& in, const Attrs& attrs);
// A ComposedLoss as the mghfLoss op's outputs (moves the grad and details out of c).
Outputs loss_outputs(ComposedLoss& c);

}  // namespace ops
}  // namespace mghf
