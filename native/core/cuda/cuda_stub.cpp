// The CUDA entry points of a build without CUDA (binding.gyp's install-time
// build, or CMake with MGHF_CUDA=OFF): CUDA is reported unavailable, with why.
#include "../error.h"
#include "../ops/loss_ops.h"
#include "../ops/registry.h"
#include "cuda_backend.h"
#include "cuda_trainer.h"

namespace mghf {

CudaStatus cuda_status(int) {
  CudaStatus s;
  s.reason = "this binary was built without CUDA (the CPU-only build)";
  return s;
}

Backend& cuda_backend(int) { throw Error("E_UNSUPPORTED", cuda_status(0).reason); }

std::unique_ptr<CudaTrainer> make_cuda_trainer(int, DfeWeights<float>, HeadWeights<float>,
                                               const TrainConfig&) {
  throw Error("E_UNSUPPORTED", cuda_status(0).reason);
}

namespace ops {
namespace {
Outputs to_device_unsupported(std::vector<Value>&, const Attrs&) {
  throw Error("E_UNSUPPORTED", "toDevice: CUDA is not usable: " + cuda_status(0).reason);
}
}  // namespace

// No CUDA implementations: a CUDA tensor cannot be made, so none reaches an op. The mghfLoss op
// on host tensors is the loss composed from the CPU ops (ops/loss_ops.h), as in a CUDA build.
void register_cuda_ops(std::vector<OpInfo>& list) {
  list.push_back({"toDevice", to_device_unsupported, nullptr});
  list.push_back({"mghfLoss", compose_mghf_loss, nullptr});
}
}  // namespace ops

}  // namespace mghf
