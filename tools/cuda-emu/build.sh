#!/usr/bin/env bash
# Builds mghf_emu.node: the addon with the CUDA backend's DFE and trainer kernels (dfe_kernels.cu,
# train_kernels.cu, cuda_trainer.cu, cuda_backend.cu, device_buffer.cu) compiled by g++ and run by a
# host emulator, so that the `device: 'cuda'` paths of the binding and lib/ run on a machine with
# no GPU. The emulator (emu.h) runs the blocks of a launch one after another and each CUDA thread
# of a block as a std::thread, __syncthreads as a barrier: it checks indexing, synchronisation
# and host/device bookkeeping, not speed (a tiny training step takes seconds). The MGHF-c terms
# (cuda_mghfc_*.cu) are replaced by the CPU reference (mghfc_on_cpu.cpp); the runtime calls by
# runtime_shim.cpp. What passes here has still to pass on a GPU.
#
#   tools/cuda-emu/build.sh [OUT]      # default build-emu/ (git-ignored)
#   EMU_CXXFLAGS=-fsanitize=address tools/cuda-emu/build.sh build-emu-asan   # the emulated parts under
#     ASan; run node with LD_PRELOAD="$(g++ -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0
#   MGHF_BINARY=build-emu/mghf_emu.node npx tap --grep "pretraining: the CUDA trainer" test/cuda.test.ts
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/build-emu}" && cd "${1:-$ROOT/build-emu}" && pwd)"
CUDA_INC="${CUDA_INC:-/usr/local/cuda/include}"
JOBS="${JOBS:-2}"
read -r -a EXTRA <<<"${EMU_CXXFLAGS:-}"

# The CPU core, position-independent, without cuda_stub.cpp (the emulated backend replaces it).
cmake -S "$ROOT" -B "$OUT/core" -DCMAKE_BUILD_TYPE=Release -DMGHF_TESTS=OFF \
  -DCMAKE_POSITION_INDEPENDENT_CODE=ON >/dev/null
cmake --build "$OUT/core" -j "$JOBS" --target mghf_core >/dev/null
rm -rf "$OUT/coreobj" && mkdir -p "$OUT/coreobj" "$OUT/obj"
(cd "$OUT/coreobj" && ar x "$OUT/core/libmghf_core.a" && rm -f cuda_stub.cpp.o)

EMU=(g++ -std=c++20 -O1 -fPIC "${EXTRA[@]}" -Wno-attributes -include "$HERE/emu.h" -I "$ROOT/native/core/cuda"
  -I "$ROOT/native/core" -I "$CUDA_INC" -pthread)
HOST=(g++ -std=c++20 -O1 -fPIC "${EXTRA[@]}" -I "$ROOT/native/core" -I "$CUDA_INC" -pthread)
for f in dfe_kernels cuda_backend device_buffer train_kernels cuda_trainer; do
  python3 "$HERE/transform.py" "$ROOT/native/core/cuda/$f.cu" >"$OUT/obj/${f}_emu.cpp"
  "${EMU[@]}" -c "$OUT/obj/${f}_emu.cpp" -o "$OUT/obj/$f.o"
done
"${HOST[@]}" -c "$HERE/runtime_shim.cpp" -o "$OUT/obj/runtime_shim.o"
"${HOST[@]}" -c "$HERE/mghfc_on_cpu.cpp" -o "$OUT/obj/mghfc_on_cpu.o"
g++ -std=c++17 -O1 -fPIC "${EXTRA[@]}" -fexceptions -pthread -DMGHF_WITH_CUDA -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS \
  -DNODE_ADDON_API_DISABLE_DEPRECATED \
  -I "$(node -p "require('node-addon-api').include_dir")" \
  -I "$(node -p "require('node-api-headers').include_dir")" \
  -I "$ROOT/native/core" -c "$ROOT/native/binding/addon.cc" -o "$OUT/obj/addon.o"
g++ -shared -pthread "${EXTRA[@]}" -o "$OUT/mghf_emu.node" "$OUT"/obj/*.o "$OUT"/coreobj/*.o
echo "built $OUT/mghf_emu.node"
