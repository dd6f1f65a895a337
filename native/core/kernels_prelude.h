// Everything kernels_simd.inc uses from outside, included *before* a TU's
// `#pragma GCC target`, so standard-library code keeps the default target.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels_reference.h"
#include "lip_params.h"
#include "kernels_table.h"
#include "parallel.h"
