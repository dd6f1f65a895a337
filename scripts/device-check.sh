#!/usr/bin/env bash
# The GPU machine's check, in one go (about 5 minutes; no Node there), in this order: the
# machine (nvidia-smi, versions); configure and build the core with the CUDA backend for sm_90;
# every C++ test (ctest: CPU tests and cuda_parity); the CUDA benchmark (mghf_bench_cuda); the
# PyTorch peers on the GPU, eager; compute-sanitizer's memcheck and racecheck on mghf_cuda_tests;
# the PyTorch peers under torch.compile; then one summary (step statuses and a table of ours vs
# torch). The short, bounded steps come first so that a slow sanitizer or compiler cannot starve
# them of the budget.
#
#   scripts/device-check.sh            # from anywhere; it works in the repository root
#   scripts/device-check.sh --dry-run  # print the steps and their commands, run nothing
#
# Each step runs under `timeout` (its own cap, clipped to what is left of the whole budget) with
# its output in ${OUT:-/tmp}/device-check/<step>.log; a failing step is recorded and the next one
# still runs. Exit status: 1 when a test failed (configure or build of the tests, ctest — a
# skipped cuda_parity counts as failed here — or errors reported by a sanitizer), else 0. Bench
# and peer failures are reported in the summary but do not change the exit status.
#
# Environment:
#   OUT                     where logs (device-check/) and bench_cuda.json go (default /tmp)
#   DEVICE_CHECK_BUDGET_S   wall-clock budget of the whole run, default 300; a step that would
#                           start with under 5 s left is skipped and reported as such
#   DEVICE_CHECK_COMPILE    0: skip the torch.compile peers (the slowest, last steps)
#   DEVICE_CHECK_REPEAT     timed calls per case, bench and peers (default 20)
#   JOBS                    build parallelism (default 16)
# The sanitizer steps export MGHF_CUDA_TEST_QUICK=1 (a smaller case set) and
# MGHF_CUDA_NO_CACHE=1 (exact-size cudaMalloc per buffer, so memcheck sees real bounds): the
# summary says whether test_cuda.cpp / the allocator honour them yet.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "device-check: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD=build-gpu
JOBS="${JOBS:-16}"
BUDGET="${DEVICE_CHECK_BUDGET_S:-300}"
REPEAT="${DEVICE_CHECK_REPEAT:-20}"
COMPILE="${DEVICE_CHECK_COMPILE:-1}"
RESERVE=8  # seconds kept for the summary
PYTHON="${PYTHON:-python3}"
if [[ $DRY_RUN == 1 ]]; then
  LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/device-check-dry.XXXXXX")"  # no stale results in the summary
else
  LOG_DIR="${OUT:-/tmp}/device-check"
  rm -rf "$LOG_DIR"
fi
mkdir -p "$LOG_DIR"
BENCH_JSON="${OUT:+$OUT/bench_cuda.json}"
BENCH_JSON="${BENCH_JSON:-$LOG_DIR/bench_cuda.json}"

# nvcc and compute-sanitizer live in /usr/local/cuda/bin on a stock toolkit install.
if [[ -d /usr/local/cuda/bin && ":$PATH:" != *":/usr/local/cuda/bin:"* ]]; then
  PATH="$PATH:/usr/local/cuda/bin"
fi
SANITIZER="$(command -v compute-sanitizer || true)"
if [[ -z $SANITIZER && -x /usr/local/cuda/compute-sanitizer/compute-sanitizer ]]; then
  SANITIZER=/usr/local/cuda/compute-sanitizer/compute-sanitizer
fi

T0=$SECONDS
STEPS=()
declare -A STATUS=() SECS=() LOGS=()
TEST_FAILED=0

remaining() { echo $((BUDGET - (SECONDS - T0) - RESERVE)); }

# run_step NAME CAP CMD...: runs CMD under `timeout` (CAP seconds, clipped to the budget left),
# output to $LOG_DIR/NAME.log; records STATUS[NAME]: ok, FAILED (rc N), TIMEOUT after Ns, skipped.
# Shows the log's last TAIL_OK lines (default 3) on success, 25 on failure. Never fails itself,
# so `set -e` does not stop the run.
run_step() {
  local name=$1 cap=$2
  shift 2
  local log="$LOG_DIR/$name.log" left t rc=0 start
  STEPS+=("$name")
  LOGS[$name]=$log
  left=$(remaining)
  t=$((cap < left ? cap : left))
  if [[ $DRY_RUN == 1 ]]; then
    printf '[dry-run] %-22s timeout %4ss  %s> %s\n' "$name" "$cap" "$(printf '%q ' "$@")" "$log"
    STATUS[$name]="dry-run"
    SECS[$name]=0
    return 0
  fi
  if ((t < 5)); then
    STATUS[$name]="skipped (time budget spent)"
    SECS[$name]=0
    echo "== $name: skipped, ${left}s of the ${BUDGET}s budget left"
    return 0
  fi
  echo "== $name (timeout ${t}s): $*"
  start=$SECONDS
  timeout --kill-after=10 "$t" "$@" >"$log" 2>&1 </dev/null || rc=$?
  SECS[$name]=$((SECONDS - start))
  case $rc in
    0) STATUS[$name]="ok" ;;
    124 | 137) STATUS[$name]="TIMEOUT after ${t}s" ;;
    *) STATUS[$name]="FAILED (rc $rc)" ;;
  esac
  if [[ $rc == 0 ]]; then
    tail -n "${TAIL_OK:-3}" "$log" | sed 's/^/   | /'
  else
    tail -n 25 "$log" | sed 's/^/   | /'
  fi
  echo "   -> ${STATUS[$name]} in ${SECS[$name]}s (log: $log)"
  return 0
}

mark_test_failure() { TEST_FAILED=1; }

# Sanitizer verdicts: errors in the log count even when the run timed out; a timeout with none is
# reported as incomplete, not as a failure.
sanitizer_verdict() {
  local name=$1 log=${LOGS[$1]}
  if [[ $DRY_RUN == 1 || ! -f $log ]]; then return 0; fi
  local errs=0
  if grep -Eq 'ERROR SUMMARY: [1-9][0-9]* error' "$log"; then errs=1; fi
  if grep -Eq 'RACECHECK SUMMARY: .*\(([1-9][0-9]*) error' "$log"; then errs=1; fi
  if grep -Eq '^SKIP: no usable CUDA device' "$log"; then
    STATUS[$name]="FAILED (mghf_cuda_tests skipped: no usable CUDA device)"
    mark_test_failure
  elif [[ $errs == 1 ]]; then
    STATUS[$name]="FAILED (sanitizer errors, see log)"
    mark_test_failure
  elif [[ ${STATUS[$name]} == TIMEOUT* ]]; then
    STATUS[$name]="${STATUS[$name]}, incomplete: no errors in the part that ran"
  elif [[ ${STATUS[$name]} == FAILED* ]]; then
    mark_test_failure
  fi
}

# --- 1. the machine -----------------------------------------------------------------------------
# shellcheck disable=SC2317  # run by the child bash below
machine_summary() {
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm,clocks.max.memory,power.limit \
    --format=csv
  echo "nvcc: $(nvcc --version | tail -n 1)"
  echo "cmake: $(cmake --version | head -n 1)"
  echo "compute-sanitizer: ${SANITIZER:-not found}"
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())'
}
# A shell function cannot run under `timeout`: a child bash runs it.
export -f machine_summary
export SANITIZER PYTHON
TAIL_OK=40 run_step machine 20 bash -c machine_summary

# --- 2. configure and build ---------------------------------------------------------------------
run_step configure 90 cmake -S . -B "$BUILD" -DMGHF_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release
if [[ ${STATUS[configure]} == FAILED* || ${STATUS[configure]} == TIMEOUT* ]]; then mark_test_failure; fi
# The tests first, the bench apart: a bench that does not build leaves the tests standing.
# Every executable ctest runs: a test whose binary is missing reports "Not Run" and fails ctest.
run_step build_tests 240 cmake --build "$BUILD" -j "$JOBS" --target mghf_core_tests mghf_train_tests \
  mghf_nn_tests mghf_cuda_tests mghf_cuda_train_tests mghf_cuda_trainer_ops_tests
if [[ ${STATUS[build_tests]} == FAILED* || ${STATUS[build_tests]} == TIMEOUT* ]]; then mark_test_failure; fi
run_step build_bench 90 cmake --build "$BUILD" -j "$JOBS" --target mghf_bench_cuda mghf_bench_train

# --- 3. tests -----------------------------------------------------------------------------------
run_step ctest 150 ctest --test-dir "$BUILD" --output-on-failure --timeout 120
if [[ $DRY_RUN == 0 ]]; then
  if [[ ${STATUS[ctest]} != ok ]]; then
    mark_test_failure
  elif grep -Eq 'cuda_(train_|trainer_ops_)?parity .*(Skipped|Not Run)' "${LOGS[ctest]}"; then
    STATUS[ctest]="FAILED (a CUDA parity test was skipped: no usable GPU, see log)"
    mark_test_failure
  fi
fi

# --- 4. our benchmark (before the sanitizers: short and bounded; theirs is open-ended) ---------
run_step bench_cuda 90 "$BUILD/mghf_bench_cuda" --repeat "$REPEAT" --warmup 3 --json "$BENCH_JSON"
if [[ $DRY_RUN == 0 && ${STATUS[bench_cuda]} == ok ]]; then sed -n '/^case /,$p' "${LOGS[bench_cuda]}"; fi
# Pretraining throughput on the GPU (SPEC §10 step, batch 32, crop 128, N=128, 10 classes, 10 steps).
TAIL_OK=8 run_step bench_train_cuda 60 "$BUILD/mghf_bench_train" --cuda 32 128 128 10 10

# --- 5. PyTorch peers on the GPU ----------------------------------------------------------------
SIZES=("4 256 256" "16 128 128")
for sz in "${SIZES[@]}"; do
  read -r b h w <<<"$sz"
  run_step "torch_eager_B${b}_${h}x${w}" 60 "$PYTHON" bench/torch_peer.py --device cuda --peer mghf-n mghf-c vgg16 \
    --batch "$b" --size "$h" "$w" --repeat "$REPEAT" --warmup 3 --json
done

# --- 6. compute-sanitizer -----------------------------------------------------------------------
QUICK_NOTE="MGHF_CUDA_TEST_QUICK=1: not read by test_cuda.cpp yet (full case set)"
if grep -q MGHF_CUDA_TEST_QUICK native/core/tests/test_cuda.cpp 2>/dev/null; then
  QUICK_NOTE="MGHF_CUDA_TEST_QUICK=1: honoured by test_cuda.cpp"
fi
NOCACHE_NOTE="MGHF_CUDA_NO_CACHE=1: not read by native/core/cuda yet (cached blocks hide small overruns)"
if grep -rqs MGHF_CUDA_NO_CACHE native/core/cuda; then
  NOCACHE_NOTE="MGHF_CUDA_NO_CACHE=1: honoured by native/core/cuda"
fi
if [[ -z $SANITIZER && $DRY_RUN == 0 ]]; then
  for s in memcheck racecheck; do
    STEPS+=("$s"); STATUS[$s]="skipped (compute-sanitizer not found)"; SECS[$s]=0; LOGS[$s]=-
  done
else
  run_step memcheck 75 env MGHF_CUDA_TEST_QUICK=1 MGHF_CUDA_NO_CACHE=1 "${SANITIZER:-compute-sanitizer}" \
    --tool memcheck --error-exitcode 99 --print-limit 50 "$BUILD/mghf_cuda_tests"
  sanitizer_verdict memcheck
  run_step racecheck 75 env MGHF_CUDA_TEST_QUICK=1 MGHF_CUDA_NO_CACHE=1 "${SANITIZER:-compute-sanitizer}" \
    --tool racecheck --error-exitcode 99 --print-limit 50 "$BUILD/mghf_cuda_tests"
  sanitizer_verdict racecheck
fi

# --- 7. torch.compile peers (last: compiling takes the longest; best effort within the budget) ---
if [[ $COMPILE != 0 ]]; then
  for sz in "${SIZES[@]}"; do
    read -r b h w <<<"$sz"
    # One process per size: the import, CUDA context and inductor's compile workers are paid once.
    run_step "torch_compile_B${b}_${h}x${w}" 150 "$PYTHON" bench/torch_peer.py --device cuda --compile \
      --peer mghf-n mghf-c --batch "$b" --size "$h" "$w" --repeat "$REPEAT" --warmup 3 --json
  done
fi

# --- 8. summary ---------------------------------------------------------------------------------
echo
echo "================ device-check summary ($((SECONDS - T0))s of a ${BUDGET}s budget; logs in $LOG_DIR) ================"
for s in "${STEPS[@]}"; do
  printf '  %-34s %-62s %4ss\n' "$s" "${STATUS[$s]}" "${SECS[$s]}"
done
echo "  sanitizers: $QUICK_NOTE; $NOCACHE_NOTE"
echo
summary_table() {
  "$PYTHON" - "$BENCH_JSON" "$LOG_DIR" <<'PY'
import glob, json, os, sys

bench_path, log_dir = sys.argv[1], sys.argv[2]
ours = {}
try:
    with open(bench_path) as f:
        doc = json.load(f)
    if not doc.get("available", True):
        print(f"  ours: CUDA unavailable: {doc.get('reason')}")
    for r in doc.get("results", []):
        ours[(r["variant"], r["batch"], r["height"], r["width"])] = r
except (OSError, ValueError) as e:
    print(f"  ours: no bench results ({e})")

def records(pattern):
    out = {}
    for path in sorted(glob.glob(os.path.join(log_dir, pattern))):
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith('{"peer"'):
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    out[(r["peer"], r["batch"], r["height"], r["width"])] = r
    return out

eager, comp = records("torch_eager_*.log"), records("torch_compile_*.log")

def counted_gflop(variant, b, h, w):
    """bench/NOTES.md (as bench/run.js and bench_cuda.cpp): 3-pass DFE convs; MGHF-c adds the LIP
    GEMM and its backward, the unrolled Sinkhorn and the CSC Grams."""
    n, c, hid = 128, 64, 128
    dfe = 3 * 2 * (27 * n + n * n + 3 * (2 * c * hid + 9 * hid)) * b * h * w
    if variant == "n":
        return dfe / 1e9
    grid = lambda x: (x - 32) // 16 + 1
    p = min(256, grid(h) * grid(w))
    pairs = b * n
    return (dfe + pairs * 2 * p * p * 1024 * 2 + pairs * 800 * p * p + b * 3 * 2 * 64 * 64 * h * w) / 1e9

def f(v, fmt):
    return "-" if v is None else format(v, fmt)

head = ["case", "ours ms", "eager ms", "compile ms", "eager/ours", "compile/ours", "ours GFLOP/s",
        "floor GFLOP", "ours/floor", "MiB ours", "MiB eager", "MiB compile"]
rows = []
for variant in ("n", "c"):
    for b, h, w in ((4, 256, 256), (16, 128, 128)):
        o = ours.get((variant, b, h, w), {})
        e = eager.get((f"mghf-{variant}", b, h, w), {})
        c = comp.get((f"mghf-{variant}", b, h, w), {})
        o_ms = o.get("median_ms") if not o.get("error") else None
        e_ms = e["median_s"] * 1e3 if e else None
        c_ms = c["median_s"] * 1e3 if c.get("compiled") else None
        c_txt = f(c_ms, ".2f") if c_ms is not None else ("eager-fallback" if c else "-")
        rows.append([
            f"MGHF-{variant} B={b} {h}x{w}" + (" (ours FAILED)" if o.get("error") else ""),
            f(o_ms, ".2f"), f(e_ms, ".2f"), c_txt,
            f(e_ms / o_ms if e_ms and o_ms else None, ".2f"),
            f(c_ms / o_ms if c_ms and o_ms else None, ".2f"),
            f(o.get("gflop") / o_ms * 1e3 if o_ms and o.get("gflop") else None, ".0f"),
            f(o.get("gflop", counted_gflop(variant, b, h, w)), ".1f"),
            f(o_ms / o["floor_ms"] if o_ms and o.get("floor_ms") else None, ".2f"),
            f(o.get("peak_mib"), ".0f"), f(e.get("max_memory_allocated_mib"), ".0f"),
            f(c.get("max_memory_allocated_mib") if c.get("compiled") else None, ".0f"),
        ])
widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
line = lambda r: "  " + "  ".join(str(x).ljust(widths[i]) if i == 0 else str(x).rjust(widths[i]) for i, x in enumerate(r))
print(line(head))
print("  " + "  ".join("-" * n for n in widths))
for r in rows:
    print(line(r))
for (peer, b, h, w), r in sorted(comp.items()):
    if not r.get("compiled"):
        print(f"  torch.compile {peer} B={b} {h}x{w}: failed, timed eager: {r.get('compile_error')}")
    elif r.get("first_call_s") is not None:
        print(f"  torch.compile {peer} B={b} {h}x{w}: first call (compilation) {r['first_call_s']:.1f} s")
for (peer, b, h, w), r in sorted(eager.items()):
    if peer == "vgg16":
        print(f"  vgg16 (for scale) B={b} {h}x{w}: eager {r['median_s'] * 1e3:.2f} ms, "
              f"{r.get('max_memory_allocated_mib', 0):.0f} MiB")
print("  (ratios > 1: ours is faster; ours = the whole Backend::loss call with host inputs and gradient,"
      " torch = inputs already on the GPU;\n   floor = max(counted GFLOP / 51 TFLOP/s, fewest bytes / 3.35 TB/s),"
      " bench/NOTES.md \"CUDA floor\"; MiB ours = device memory held, torch = max_memory_allocated)")
PY
}
summary_table || echo "  (the summary table could not be printed: $PYTHON failed)"

if [[ $DRY_RUN == 1 ]]; then
  rm -rf "$LOG_DIR"
  echo "dry run: nothing was executed"
  exit 0
fi
if [[ $TEST_FAILED == 1 ]]; then
  echo "device-check: FAILED (a build or test step failed; see above)"
  exit 1
fi
echo "device-check: tests passed"
exit 0
