#!/usr/bin/env bash
# The CUDA prebuilt addon: cmake-js builds CMakeLists.txt with MGHF_CUDA=ON (every architecture in
# its CMAKE_CUDA_ARCHITECTURES list: SASS for sm_75 … sm_120 plus PTX), the result is stripped and
# copied to prebuilds/linux-x64/mghf.cuda.node, a name the loader (lib/native.ts) tries first and
# keeps only where CUDA is usable. Run by `npm run prebuilds:cuda`; needs nvcc (CUDA 13.0 here),
# cmake and a C++17 compiler. Linux x64 only.
#
# Environment:
#   JOBS                  build parallelism (default: the number of CPUs)
#   MGHF_CUDA_ARCHS       override the architecture list (e.g. "90-real") for a quick local test
#                         build; leave unset for a binary to publish
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
  echo "prebuild-cuda: the CUDA prebuild is made for linux-x64 only (this is $(uname -s)-$(uname -m))" >&2
  exit 1
fi
if [[ -d /usr/local/cuda/bin && ":$PATH:" != *":/usr/local/cuda/bin:"* ]]; then
  PATH="$PATH:/usr/local/cuda/bin"
fi
if ! command -v nvcc >/dev/null; then
  echo "prebuild-cuda: nvcc not found (install the CUDA toolkit, or put it on PATH)" >&2
  exit 1
fi
nvcc --version | tail -n 1

export CMAKE_BUILD_PARALLEL_LEVEL="${JOBS:-$(nproc)}"
BUILD=build-cuda-prebuild
# The list CMakeLists.txt ships, passed explicitly: cmake-js only configures a build folder that has
# no CMakeCache.txt yet, so the cache is removed first and nothing from an earlier (test) build stays.
ARCHS="$(sed -n 's/^ *set(CMAKE_CUDA_ARCHITECTURES "\([^"]*\)").*/\1/p' CMakeLists.txt | head -n 1)"
if [[ -z "$ARCHS" ]]; then
  echo "prebuild-cuda: could not read the CUDA architecture list from CMakeLists.txt" >&2
  exit 1
fi
if [[ -n "${MGHF_CUDA_ARCHS:-}" ]]; then
  echo "prebuild-cuda: MGHF_CUDA_ARCHS=$MGHF_CUDA_ARCHS (a test build, not the full list $ARCHS)"
  ARCHS="$MGHF_CUDA_ARCHS"
fi
echo "prebuild-cuda: CUDA architectures $ARCHS"
rm -f "$BUILD/CMakeCache.txt"
ARGS=(compile -O "$BUILD" --CDMGHF_CUDA=ON --CDMGHF_TESTS=OFF "--CDCMAKE_CUDA_ARCHITECTURES=$ARCHS")
START=$SECONDS
npx --no-install cmake-js "${ARGS[@]}"

SRC="$BUILD/Release/mghf.node"
DEST=prebuilds/linux-x64/mghf.cuda.node
mkdir -p "$(dirname "$DEST")"
strip --strip-unneeded -o "$DEST" "$SRC"
echo "prebuild-cuda: $DEST ($(du -h "$DEST" | cut -f1), from $(du -h "$SRC" | cut -f1) unstripped) in $((SECONDS - START)) s"
if command -v cuobjdump >/dev/null; then
  echo "prebuild-cuda: device code: $(cuobjdump --list-elf "$DEST" 2>/dev/null | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')" \
    "$(cuobjdump --list-ptx "$DEST" 2>/dev/null | grep -o 'sm_[0-9]*' | sort -u | sed 's/^/ptx:/' | tr '\n' ' ')"
fi
