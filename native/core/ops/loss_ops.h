// mghfLoss as a composition of the registry's ops (issue 15 item 3, "written once"): the
// options of the mghfLoss op (attrs, by their mghfLoss names) and the loss composed from dfe,
// mseTerm, entropyPruneReweight, csc, lip and dfeBackward through run_op, so it runs on
// whichever device its tensors are on.
#pragma once
#include "loss.h"
#include "ops/registry.h"

namespace mghf {
namespace ops {

// LossOptions from the mghfLoss op's attrs (lib/loss.ts has checked them) and its optional
// `selected` input at index 3 (B·M indices, M = min(M, N)); E_OPTION when it does not fit.
LossOptions loss_options(std::vector<Value>& in, const Attrs& attrs, int B, int N);

// inputs: sr, gt [B, 3, H, W], weights, selected (optional). outputs as the mghfLoss op (see
// ops_cuda.cu): loss, n, mse, corr, gram, csc, lip, skipped, grad, importance/selected.
// Each term's gradient is added onto the previous one's (addTo) in the order n, csc, lip: on
// CUDA that is CudaBackend::loss's in-place accumulation, so both give the same bits.
Outputs compose_mghf_loss(std::vector<Value>& in, const Attrs& attrs);

}  // namespace ops
}  // namespace mghf
