// The emulator's own test: each broken kernel of broken_kernels.cu must be reported with its
// kind of error (and its launch must fail), and each correct one must pass without a report and
// compute the right value. Run by ctest (cuda_emu_selftest).
#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <vector>

#include "emu_internal.h"

float case_block_sum(cudaError_t* err);
unsigned case_histogram(cudaError_t* err, bool with_barrier);
void case_off_by_one(cudaError_t* err);
void case_missing_barrier(cudaError_t* err);
void case_uninitialised_shared(cudaError_t* err);
void case_wrong_shuffle(cudaError_t* err);
void case_partial_warp(cudaError_t* err);
void case_divergent_barrier(cudaError_t* err);
void case_early_exit_barrier(cudaError_t* err);
void case_deadlock(cudaError_t* err);
void case_global_race(cudaError_t* err);
void case_shared_race(cudaError_t* err);
void case_uninitialised_device(cudaError_t* err);
void case_launch_bounds(cudaError_t* err);
float case_host_dereference();
void case_copy_uninitialised();

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// Runs a case and checks that the emulator reported `kind` (a substring of the report).
template <class F>
void expect(const char* name, const char* kind, F&& run, bool launch_fails = true) {
  emu::take_errors();
  cudaError_t err = cudaSuccess;
  run(&err);
  const std::vector<std::string> errors = emu::take_errors();
  bool found = false;
  for (const auto& e : errors) found = found || e.find(kind) != std::string::npos;
  check(found, std::string(name) + ": reported as \"" + kind + "\"");
  if (!found)
    for (const auto& e : errors) std::printf("     got: %s\n", e.c_str());
  if (launch_fails) check(err != cudaSuccess, std::string(name) + ": the launch failed");
  if (found && !errors.empty()) std::printf("     %s\n", errors.front().c_str());
}

}  // namespace

int main() {
  emu::set_on_error(emu::OnError::Record);

  {
    cudaError_t err = cudaSuccess;
    const float s = case_block_sum(&err);
    const auto errors = emu::take_errors();
    check(err == cudaSuccess && errors.empty() && s == 2997.f, "a correct block reduction passes (sum " + std::to_string(s) + ")");
    for (const auto& e : errors) std::printf("     unexpected: %s\n", e.c_str());
    const unsigned total = case_histogram(&err, true);
    const auto errors2 = emu::take_errors();
    check(err == cudaSuccess && errors2.empty() && total == 500, "a correct atomic histogram passes");
    for (const auto& e : errors2) std::printf("     unexpected: %s\n", e.c_str());
  }
  expect("off-by-one index", "out-of-bounds device write", [](cudaError_t* e) { case_off_by_one(e); });
  expect("missing __syncthreads before a shared read", "race on shared memory", [](cudaError_t* e) { case_missing_barrier(e); });
  expect("shared memory read before any write", "uninitialised shared read", [](cudaError_t* e) { case_uninitialised_shared(e); });
  expect("wrong shuffle offset", "shuffle from a lane outside the mask", [](cudaError_t* e) { case_wrong_shuffle(e); });
  expect("full mask in a partial warp", "mask names absent lanes", [](cudaError_t* e) { case_partial_warp(e); });
  expect("divergent __syncthreads", "divergent __syncthreads", [](cudaError_t* e) { case_divergent_barrier(e); });
  expect("early return before a barrier", "__syncthreads not reached by every thread", [](cudaError_t* e) { case_early_exit_barrier(e); });
  expect("shuffle waiting on threads at a barrier", "deadlock", [](cudaError_t* e) { case_deadlock(e); });
  expect("blocks writing one element", "race on device memory", [](cudaError_t* e) { case_global_race(e); });
  expect("threads writing one shared word", "race on shared memory", [](cudaError_t* e) { case_shared_race(e); });
  expect("atomics racing the clearing write", "race on shared memory", [](cudaError_t* e) { case_histogram(e, false); });
  expect("device memory read before any write", "uninitialised device read", [](cudaError_t* e) { case_uninitialised_device(e); });
  expect("launch beyond __launch_bounds__", "launch exceeds __launch_bounds__", [](cudaError_t* e) { case_launch_bounds(e); });
  expect("host code reading device memory", "host access to device memory", [](cudaError_t*) { case_host_dereference(); }, false);
  expect("copy to the host of unwritten memory", "copy of uninitialised device memory", [](cudaError_t*) { case_copy_uninitialised(); }, false);

  std::printf(failures ? "FAILED (%d)\n" : "ok\n", failures);
  return failures ? 1 : 0;
}
