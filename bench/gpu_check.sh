#!/usr/bin/env bash
# GPU check of ghn_ext's CUDA kernels, prepared for a lent H100/H200 machine (python3 with torch and CUDA,
# no internet): builds the extension in place with CUDA, runs the CUDA tests and the GPU benchmarks, times
# the paper-space search on the GPU (issue 28), runs the commands with --device cuda, and compute-sanitizer
# on one small case while time remains. Every stage has a time limit and the whole run stays within
# GPU_CHECK_TOTAL_S (default 570 s); a failing stage is recorded and the next one still runs. Logs and
# results go to $OUT:
#
#   summary.txt      machine, versions, and each stage's status and duration
#   build.log        the build          tests.log       the CUDA tests
#   bench.log        the benchmarks     bench_gpu.json  their pytest-benchmark JSON (ratios in extra_info)
#   search.log       bench/gpu_search_rate.py           search_rate.json  its measurements and projection
#   raise.log        whether an error raised in the extension reaches Python (a backtrace when it crashes)
#   commands.log     ghn train / search (also --finetune-steps) / train-final with --device cuda on random
#                    stand-in images
#   sanitizer.log    compute-sanitizer (memcheck, then racecheck and synccheck if time allows)
# At the end the logs are packed into logs.tgz (the device tool returns at most 8 files).
#
# The search needs the real validation images: GHN_DATA_DIR, else .device_data/cifar10 (a val-only copy
# made for the device machine, which cannot reach ../shared), else ../shared/data/cifar10.
#
#   bash bench/gpu_check.sh          (from anywhere; OUT defaults to ./gpu_check_out, PYTHON to python3)
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
OUT="${OUT:-$REPO/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SUMMARY="$OUT/summary.txt"
TOTAL_S="${GPU_CHECK_TOTAL_S:-570}"   # the whole run's budget in seconds
T0=$SECONDS
: >"$SUMMARY"

say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((TOTAL_S - (SECONDS - T0))); }

# stage NAME MAX_SECONDS RESERVE_SECONDS LOG COMMAND...: runs COMMAND with a limit of MAX_SECONDS, cut so
# that RESERVE_SECONDS stay for the stages after it; appends its output to LOG; records the status.
stage() {
  local name=$1 max=$2 reserve=$3 log=$4
  shift 4
  local limit
  limit=$(( $(left) - reserve ))
  (( limit > max )) && limit=$max
  if (( limit < 10 )); then
    say "SKIPPED  $name: no time left ($(left) s of the budget remain)"
    return 0
  fi
  echo "=== $name (limit ${limit}s): $*" >>"$log"
  local start=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local took=$((SECONDS - start))
  if (( rc == 0 )); then
    say "OK       $name (${took}s)"
  elif (( rc == 124 || rc == 137 )); then
    say "TIMEOUT  $name after ${took}s (limit ${limit}s); see $(basename "$log")"
  else
    say "FAILED   $name: exit $rc after ${took}s; see $(basename "$log")"
  fi
  return "$rc"
}

has_module() { "$PY" -c "import $1" >/dev/null 2>&1; }

# --- the machine --------------------------------------------------------------------------------------
say "ghn_ext GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' + local changes')"
say "python: $("$PY" --version 2>&1) at $(command -v "$PY")"
say "torch: $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "| device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")' 2>&1 | tail -1)"
say "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
say "nvcc: $( (nvcc --version 2>/dev/null || "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version 2>&1) | grep -o 'release [0-9.]*' | head -1)"
HAVE_PYTEST=1 HAVE_BENCH=1
for m in pytest pytest_benchmark hypothesis; do
  if has_module "$m"; then
    say "python module $m: $("$PY" -c "import $m; print(getattr($m, '__version__', 'present'))" 2>/dev/null)"
  else
    say "python module $m: MISSING"
  fi
done
"$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null \
  || say "WARNING: torch sees no CUDA device: the CUDA tests and benchmarks below will only skip"
has_module pytest || HAVE_PYTEST=0
has_module pytest_benchmark || HAVE_BENCH=0
has_module hypothesis || say "note: without hypothesis the tests and the sanitizer case cannot import python_tests/test_propagate_op.py"
say ""

# --- 1. build the extension in place, with CUDA ---------------------------------------------------------
if [[ -z "${CUDA_HOME:-}" ]]; then
  if [[ -x /usr/local/cuda/bin/nvcc ]]; then
    CUDA_HOME=/usr/local/cuda
  elif command -v nvcc >/dev/null; then
    CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  fi
fi
export CUDA_HOME TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="${MAX_JOBS:-16}" GHN_EXT_CUDA=1
BUILD_OK=0
if stage "build (pip install --no-build-isolation -e ., CUDA_HOME=${CUDA_HOME:-unset})" 300 330 "$OUT/build.log" \
     "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . ; then
  BUILD_OK=1
elif stage "build fallback (setup.py build_ext --inplace)" 300 330 "$OUT/build.log" \
     "$PY" setup.py build_ext --inplace ; then
  BUILD_OK=1
fi
if (( BUILD_OK )); then
  stage "extension has CUDA kernels" 60 320 "$OUT/build.log" "$PY" -c '
import ghn_ext.ops._extension as e
assert e.HAS_EXTENSION, e.IMPORT_ERROR
for op in ("propagate", "emit_weights", "emit_edge_weights", "dag_schedule"):
    assert e.has_kernel(op, "cuda"), op
print("extension:", e._C.__file__)' || BUILD_OK=0
fi
grep -n -i "warning" "$OUT/build.log" | grep -i "propagate_cuda\|propagate_kernel" >>"$SUMMARY" || true

# An error raised in the extension's C++ must reach Python as an exception. On the H200 image of
# 2026-12-04 (Ubuntu 24.04, g++ 13.3, torch 2.11.0+cu130) every such error segfaulted the process (19
# tests crashed, CPU ops too), which the CPU machines never showed: when it happens, record a backtrace.
RAISE='
import torch, ghn_ext.ops
from ghn_ext.ops.schedule import dag_schedule
try:
    dag_schedule(torch.tensor([[0, 1], [1, 0]]), torch.tensor([0, 2]), 2)
except ValueError as e:
    print("raised ValueError:", e)'
if (( BUILD_OK )) && ! stage "an error raised in the extension reaches Python" 30 300 "$OUT/raise.log" "$PY" -X faulthandler -c "$RAISE"; then
  GDB="$(command -v cuda-gdb || echo "${CUDA_HOME:-/usr/local/cuda}/bin/cuda-gdb")"
  [[ -x "$GDB" ]] && stage "backtrace of that crash (cuda-gdb)" 60 290 "$OUT/raise.log" \
    "$GDB" -batch -ex run -ex "bt 40" --args "$PY" -c "$RAISE"
  { echo "== g++: $(g++ --version 2>&1 | head -1)"; ldd ghn_ext/_C*.so; } >>"$OUT/raise.log" 2>&1
fi

# --- 2. the CUDA tests ----------------------------------------------------------------------------------
if (( BUILD_OK && HAVE_PYTEST )); then
  XDIST=(); has_module xdist && XDIST=(-n 4)  # four workers share the GPU; the tests are mostly launch-bound
  stage "CUDA tests" 170 270 "$OUT/tests.log" env PYTHONUNBUFFERED=1 \
    "$PY" -m pytest -q -rs -p no:cacheprovider "${XDIST[@]}" -k cuda python_tests/test_propagate_cuda.py \
    python_tests/test_emit_op.py python_tests/test_emit_edges_op.py python_tests/test_schedule_op.py
  grep -E "passed|failed|error" "$OUT/tests.log" | tail -1 | sed 's/^/         /' >>"$SUMMARY"
else
  say "SKIPPED  CUDA tests: $( ((BUILD_OK)) && echo 'pytest missing' || echo 'no build')"
fi

# --- 3. the GPU benchmarks ------------------------------------------------------------------------------
if (( BUILD_OK && HAVE_PYTEST && HAVE_BENCH )); then
  stage "GPU benchmarks" 140 190 "$OUT/bench.log" env PYTHONUNBUFFERED=1 \
    "$PY" -m pytest -q -s -p no:cacheprovider bench/test_bench_gpu.py --benchmark-columns=mean,stddev,rounds \
    --benchmark-json="$OUT/bench_gpu.json"
  if [[ -s "$OUT/bench_gpu.json" ]]; then
    "$PY" - "$OUT/bench_gpu.json" >>"$SUMMARY" 2>&1 <<'EOF'
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    ratios = ", ".join(f"{k} {v}" for k, v in b.get("extra_info", {}).items())
    print(f"         {b['name']}: mean {b['stats']['mean'] * 1e3:.3f} ms{'; ' + ratios if ratios else ''}")
EOF
  fi
else
  say "SKIPPED  GPU benchmarks: $( ((BUILD_OK)) || echo 'no build'; ((HAVE_PYTEST)) || echo 'pytest missing'; ((HAVE_BENCH)) || echo 'pytest-benchmark missing')"
fi

# --- 4. the paper-space search on the GPU (issue 28) ---------------------------------------------------
DATA="${GHN_DATA_DIR:-}"
[[ -z "$DATA" && -f "$REPO/.device_data/cifar10/cifar10.npz" ]] && DATA="$REPO/.device_data/cifar10"
[[ -z "$DATA" ]] && DATA="$REPO/../shared/data/cifar10"
if (( BUILD_OK )) && [[ -f "$DATA/cifar10.npz" ]]; then
  stage "paper-space search rate (bench/gpu_search_rate.py)" 150 60 "$OUT/search.log" env PYTHONUNBUFFERED=1 \
    GHN_DATA_DIR="$DATA" "$PY" bench/gpu_search_rate.py --out "$OUT/search" --device cuda
  grep -E "^paper-space|^  " "$OUT/search.log" | tail -3 | sed 's/^/         /' >>"$SUMMARY"
  cp "$OUT/search/search_rate.json" "$OUT/" 2>/dev/null
  rm -rf "$OUT/search"
else
  say "SKIPPED  paper-space search: $( ((BUILD_OK)) && echo "no CIFAR-10 at $DATA" || echo 'no build')"
fi

# --- 5. the commands on the GPU (--device cuda), on random images shaped like CIFAR-10 -------------------
if (( BUILD_OK )); then
  stage "ghn train / search / train-final --device cuda (random stand-in data)" 90 0 "$OUT/commands.log" \
    env GHN_DATA_DIR="$OUT/standin_cifar10" "$PY" -c '
import os, numpy as np
from ghn_ext.cli import main
d, out = os.environ["GHN_DATA_DIR"], os.path.dirname(os.environ["GHN_DATA_DIR"]) + "/cmd_runs"
os.makedirs(d, exist_ok=True)
r = np.random.default_rng(0)
np.savez(d + "/cifar10.npz", train_x=r.integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8),
         train_y=r.integers(0, 10, 50000), test_x=r.integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8),
         test_y=r.integers(0, 10, 10000))
small = ["--num-blocks", "2", "--channels", "8", "--quiet", "--device", "cuda"]
assert main(["train", "--out", out + "/ghn", "--steps", "20", "--eval-images", "200", *small]) == 0
assert main(["search", "--ckpt", out + "/ghn/ghn.pt", "--out", out + "/search", "--num-archs", "8",
             "--val-images", "200", *small]) == 0
assert main(["search", "--ckpt", out + "/ghn/ghn.pt", "--out", out + "/search_ft", "--num-archs", "4",
             "--val-images", "200", "--finetune-steps", "2", *small]) == 0  # GHN+SGD-k trains on the GPU
assert main(["train-final", "--ranking", out + "/search/ranking.json", "--out", out + "/final", "--epochs", "1",
             "--train-images", "640", "--val-images", "200", *small]) == 0
print("commands ran on cuda")'
  rm -rf "$OUT/standin_cifar10" "$OUT/cmd_runs"
fi

# --- 6. compute-sanitizer on one small case while time remains -----------------------------------------------
SAN="$(command -v compute-sanitizer)"
for candidate in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer \
                 /usr/local/cuda/compute-sanitizer/compute-sanitizer /opt/nvidia/compute-sanitizer/compute-sanitizer; do
  [[ -z "$SAN" && -x "$candidate" ]] && SAN=$candidate
done
SAN="${SAN:-compute-sanitizer}"
sanitize() {  # sanitize TOOL MAX RESERVE
  local tool=$1
  stage "compute-sanitizer $tool" "$2" "$3" "$OUT/sanitizer.log" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    "$SAN" --tool "$tool" --error-exitcode 3 "$PY" bench/gpu_sanitize_case.py
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer.log" | tail -1 | sed 's/^/         /' >>"$SUMMARY"
}
if (( BUILD_OK )) && [[ -x "$SAN" ]]; then
  sanitize memcheck 120 0
  sanitize racecheck 150 0
  sanitize synccheck 100 0
else
  say "SKIPPED  compute-sanitizer: $( ((BUILD_OK)) && echo "not found at $SAN" || echo 'no build')"
fi

say ""
say "done in $((SECONDS - T0))s (budget ${TOTAL_S}s)"
# the device tool returns at most 8 files: the logs travel as one archive beside the summary and the JSON
(cd "$OUT" && tar czf logs.tgz ./*.log && rm -f ./*.log)
exit 0
