// The CUDA entry points of a build without CUDA (binding.gyp's install-time
// build, or CMake with MGHF_CUDA=OFF): CUDA is reported unavailable, with why.
#include "../error.h"
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

}  // namespace mghf
