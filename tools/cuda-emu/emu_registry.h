// Every __global__ kernel of the emulated sources (kernels.gen.cpp, written by transform.py
// --registry), so the emulator can say how many of them a run executed.
#pragma once

namespace emu {

struct KernelInfo {
  const char* name;
  const char* file;
};
extern const KernelInfo kKernels[];
extern const int kKernelCount;

}  // namespace emu
