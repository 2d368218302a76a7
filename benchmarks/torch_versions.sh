#!/usr/bin/env bash
# The README's "Supported torch versions" runs: for each torch version given, a venv outside
# the repository with that torch, the package installed editable, then the test suite and the
# examples under --gradcheck. Not run by CI (each version is a few GB of wheels).
#
#     NUMPY='numpy<2' bash benchmarks/torch_versions.sh 2.3.1   # built against NumPy 1
#     bash benchmarks/torch_versions.sh 2.4.1 2.11.0
#
# VENVS (default /tmp/gradcheck-torch-venvs) holds one venv per version, kept for reruns;
# OUT (default benchmarks/results/torch-versions) gets one log per version. The exit status
# is the first failing step's; every step runs regardless.
set -u -o pipefail
cd "$(dirname "$0")/.."
VENVS=${VENVS:-/tmp/gradcheck-torch-venvs}
OUT=${OUT:-benchmarks/results/torch-versions}
PY=${PYTHON:-python3}
WORKERS=${WORKERS:-2}
NUMPY=${NUMPY:-numpy}
mkdir -p "$VENVS" "$OUT"
[ $# -gt 0 ] || { echo "usage: $0 TORCH_VERSION..." >&2; exit 2; }
status=0
for version in "$@"; do
    venv="$VENVS/torch-$version"
    log="$OUT/torch-$version.log"
    : >"$log"
    run() {
        echo "=== $*" | tee -a "$log"
        "$@" 2>&1 | tee -a "$log"
        local rc=$?
        echo "=== exit $rc" | tee -a "$log"
        [ $rc -ne 0 ] && [ $status -eq 0 ] && status=$rc
        return $rc
    }
    # the package's dependencies and test extras, torch pinned in the same command so pip
    # never picks another build; the package itself without dependencies, so nothing moves
    [ -x "$venv/bin/python" ] || run "$PY" -m venv "$venv" || continue
    run "$venv/bin/python" -m pip install --progress-bar off "torch==$version" "$NUMPY" \
        'pytest>=7' hypothesis pytest-benchmark jinja2 pytest-xdist expecttest jsonschema \
        || continue
    run "$venv/bin/python" -m pip install --no-deps -e . || continue
    run "$venv/bin/python" -c 'import torch, numpy; print("torch", torch.__version__, "| numpy", numpy.__version__)'
    run "$venv/bin/python" -m pytest tests -q -n "$WORKERS" -p no:cacheprovider -rfEs
    run "$venv/bin/python" -m pytest examples --gradcheck -q -p no:cacheprovider --gradcheck-no-report
done
exit $status
