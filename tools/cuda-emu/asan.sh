#!/usr/bin/env bash
# The emulated CUDA parity tests under AddressSanitizer instead of the emulator's own memory
# checks (README.md, "ASan mode"): a second opinion on out-of-bounds accesses of device and
# shared memory, with ASan's reports and stacks. Slower to build (every emulated source again);
# not part of npm test.
#
#   tools/cuda-emu/asan.sh [BUILD_DIR]     # default build-emu-asan/ (git-ignored)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/build-emu-asan}"
cmake -S "$ROOT" -B "$OUT" -DCMAKE_BUILD_TYPE=Release -DMGHF_CUDA_EMU_SANITIZER=address >/dev/null
cmake --build "$OUT" -j "${JOBS:-2}" --target mghf_cuda_tests_emu mghf_cuda_train_tests_emu mghf_cuda_trainer_ops_tests_emu
ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}" ctest --test-dir "$OUT" -R 'parity_emu' --output-on-failure
