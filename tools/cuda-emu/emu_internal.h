// What the emulator's runtime files (emu_runtime.cpp, cuda_runtime_shim.cpp) and its self-test
// share. Not included by the emulated CUDA sources.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace emu {

// ---- device memory: one reserved region, a first-fit allocator with red zones, and a shadow
// byte state for every byte of it (emu_runtime.cpp). The CUDA runtime calls of the shim use these.
void* device_malloc(size_t bytes);           // null when the emulated device is full
bool device_free(void* p);                   // false: not the start of a live allocation
size_t device_total_bytes();
size_t device_free_bytes();
bool is_device_pointer(const void* p);
// Whether [p, p + n) lies inside one live allocation; when not, `why` says how not.
bool device_range_ok(const void* p, size_t n, std::string* why);
// Marks [p, p + n) written (a copy from the host, a memset).
void device_mark_initialised(void* p, size_t n);
// dst's bytes take src's written / unwritten state (a device-to-device copy).
void device_copy_state(void* dst, const void* src, size_t n);
// The first byte of [p, p + n) never written, or -1.
long device_first_uninitialised(const void* p, size_t n);

// ---- errors -----------------------------------------------------------------------------------------
enum class OnError { Fail, Record, Abort };
// Reports an error found outside a kernel (the runtime calls): printed, counted, and failing the
// process at exit unless recording.
void report_host_error(const char* kind, const std::string& message);
// The last launch's error for cudaGetLastError (thread-local; reading clears it).
cudaError_t take_last_error();
cudaError_t peek_last_error();
void set_last_error(cudaError_t e);

// ---- for the emulator's self-test ---------------------------------------------------------------
void set_on_error(OnError mode);
long error_count();
std::vector<std::string> take_errors();  // the messages recorded since the last call (Record mode)

}  // namespace emu
