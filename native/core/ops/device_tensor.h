// A float32 tensor in one CUDA device's memory (issue 15): the Kind::Device op
// value. This header needs no CUDA: the buffer behind data() belongs to the
// CUDA backend's subclass (cuda/ops_cuda.cu), so the CPU build, the binding and
// the registry pass device tensors around without knowing how they are held.
// Owned through shared_ptr: the JavaScript handle holds one reference and a
// running op another, so disposing a tensor mid-call frees nothing under it.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace mghf {
namespace ops {

class DeviceTensor {
 public:
  DeviceTensor(int device, std::vector<int64_t> dims) : device_(device), dims_(std::move(dims)) {
    count_ = 1;
    for (int64_t d : dims_) count_ *= d;
    Live& l = live();
    std::lock_guard<std::mutex> lock(l.m);
    l.per_device[device_].first += 1;
    l.per_device[device_].second += bytes();
  }
  virtual ~DeviceTensor() {
    Live& l = live();
    std::lock_guard<std::mutex> lock(l.m);
    l.per_device[device_].first -= 1;
    l.per_device[device_].second -= bytes();
  }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  int device() const { return device_; }
  const std::vector<int64_t>& dims() const { return dims_; }
  int64_t count() const { return count_; }
  int64_t bytes() const { return count_ * int64_t(sizeof(float)); }
  // Device memory of count() floats (null for an empty tensor).
  virtual float* data() = 0;

  // Live device tensors per device: device → {tensors, bytes}, for memory(): a
  // native count, so a handle the finalizer has not yet freed still shows.
  static std::map<int, std::pair<int64_t, int64_t>> live_per_device() {
    Live& l = live();
    std::lock_guard<std::mutex> lock(l.m);
    return l.per_device;
  }

 private:
  struct Live {
    std::mutex m;
    std::map<int, std::pair<int64_t, int64_t>> per_device;
  };
  static Live& live() {
    static Live* l = new Live();  // leaked: a tensor freed at exit still finds it
    return *l;
  }
  int device_;
  std::vector<int64_t> dims_;
  int64_t count_ = 1;
};

}  // namespace ops
}  // namespace mghf
