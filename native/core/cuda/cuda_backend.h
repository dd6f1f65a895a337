// The CUDA backend: the same Backend interface as the CPU one (backend.h).
#pragma once
#include <string>

#include "../backend.h"

namespace mghf {

struct CudaStatus {
  bool available = false;
  std::string reason;  // why not, when not: no driver, driver too old, no device, no kernel image
  int device_count = 0;
  int runtime_version = 0, driver_version = 0;  // e.g. 13000
  std::string device_name;                       // of device 0 (or the selected one)
  int cc_major = 0, cc_minor = 0;
};

// Probes the driver and devices once (cheap afterwards). Never throws.
CudaStatus cuda_status(int device = 0);

// The backend on `device`; throws Error("E_UNSUPPORTED", reason) when CUDA is
// unusable. Built without CUDA, reason says so. Its loss is the composition of the
// ops (ops/loss_ops.h's compose_loss), the one place the loss is assembled for CUDA;
// the mghfLoss op on device tensors (ops_cuda.cu) calls that composition directly.
Backend& cuda_backend(int device = 0);

}  // namespace mghf
