// The plain (default-target) build of monce.inc, for the reference kernels.
#pragma once
#include <cmath>
#include <vector>

#include "lip_params.h"

namespace mghf {
namespace ref {
#include "monce.inc"
}  // namespace ref
}  // namespace mghf
