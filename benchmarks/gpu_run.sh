#!/usr/bin/env bash
# Everything measured on a GPU, in one go: the CUDA tests, then the whole test suite, the
# examples, the gradient checker's cost against torch's, and the CPU-vs-CUDA sweep with its
# independent timing check.
#
# Run from the repository root on a machine with CUDA and torch installed:
#     OUT=/some/dir bash benchmarks/gpu_run.sh
# One log ($OUT/run.log) and four JSON/HTML files land in $OUT (default
# benchmarks/results/gpu). Each step runs even if an earlier one fails; the exit
# status is the first failure's.
set -u -o pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
: >"$OUT/run.log"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
step() {
    local name=$1
    shift
    echo "=== $name: $*" | tee -a "$OUT/run.log"
    "$@" 2>&1 | tee -a "$OUT/run.log"
    local rc=$?
    echo "=== $name: exit $rc" | tee -a "$OUT/run.log"
    [ $rc -ne 0 ] && [ $status -eq 0 ] && status=$rc
    return 0
}

step env sh -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; \
$PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.get_num_threads())'"
# The package itself, without touching the machine's torch.
step install "$PY" -m pip install -q --no-deps --no-build-isolation -e .
step tests "$PY" -m pytest -q -rs -p no:cacheprovider \
    tests/test_cuda_gradcheck.py tests/test_devices.py tests/test_state.py \
    tests/test_diagnose.py tests/test_precision.py
# The whole suite, in parallel where pytest-xdist is there; jsonschema is optional (tests that
# compare against it skip, naming it).
if "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n "${WORKERS:-auto}"); else XDIST=(); fi
step suite "$PY" -m pytest -q -rs -p no:cacheprovider "${XDIST[@]}" tests
step examples "$PY" -m pytest -q -rs -p no:cacheprovider examples --gradcheck \
    --gradcheck-json "$OUT/gradcheck.json" --gradcheck-report "$OUT/gradcheck.html"
step gradcheck_cost "$PY" benchmarks/gradcheck_cuda_cost.py --json "$OUT/gradcheck_cuda_cost.json"
step sweep "$PY" benchmarks/devices_sweep.py --sizes 64 256 1024 4096 --check \
    --json "$OUT/devices_sweep.json"
exit $status
