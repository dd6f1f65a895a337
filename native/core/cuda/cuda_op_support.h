// What every CUDA op function needs (ops_cuda.cu, trainer_ops_cuda.cu): the device
// tensor type, the call's own stream, and the checks of a device input. Host code
// only (no kernels), so it is shared by the nvcc build and the emulator alike.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../ops/op.h"
#include "../ops/registry.h"
#include "cuda_backend.h"
#include "call_stream.h"
#include "cuda_check.h"
#include "device_buffer.h"

namespace mghf {
namespace ops {

// A device tensor's memory: one DeviceBuffer from the device's cache.
class CudaTensor final : public DeviceTensor {
 public:
  CudaTensor(int device, std::vector<int64_t> dims) : DeviceTensor(device, std::move(dims)) {
    buf_.resize(size_t(count()));
  }
  float* data() override { return buf_.data(); }

 private:
  cuda::DeviceBuffer<float> buf_;
};

// The caller holds a DeviceScope for `device`.
inline std::shared_ptr<DeviceTensor> new_tensor(int device, std::vector<int64_t> dims) {
  return std::make_shared<CudaTensor>(device, std::move(dims));
}

using cuda::Stream;  // call_stream.h

inline void require_cuda(int device, const std::string& op) {
  const CudaStatus st = cuda_status(device);
  if (!st.available) throw Error("E_UNSUPPORTED", op + ": CUDA is not usable: " + st.reason);
}

// A device float32 tensor at input i, of `rank` dims (0: any rank). run_op has
// checked that every tensor input is on one device.
inline DeviceTensor& device_input(std::vector<Value>& in, size_t i, const std::string& op, const char* name,
                                  size_t rank) {
  Value& v = input(in, i, op, name);
  if (v.kind != Kind::Device || !v.device)
    op_fail(op, std::string(name) + " must be a CUDA tensor", "E_DEVICE");
  if (rank && v.device->dims().size() != rank)
    op_fail(op, std::string(name) + " must have " + std::to_string(rank) + " dims", "E_SHAPE");
  return *v.device;
}

inline void same_dims(const DeviceTensor& a, const DeviceTensor& b, const std::string& op, const char* an,
                      const char* bn) {
  if (a.dims() != b.dims()) op_fail(op, std::string(bn) + " must have the dims of " + an, "E_SHAPE");
}

// Gives op `name` of the list its CUDA function (E_NATIVE when there is no such op).
inline void set_cuda(std::vector<OpInfo>& list, const char* name, OpFn fn) {
  for (OpInfo& op : list)
    if (std::string(op.name) == name) {
      op.cuda = fn;
      return;
    }
  throw Error("E_NATIVE", std::string("no op ") + name + " to give a CUDA implementation");
}

}  // namespace ops
}  // namespace mghf
