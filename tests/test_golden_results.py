"""The results JSON of a fixed set of checks stays byte-identical across refactors.

``golden/golden_checks.py`` (every record kind, seeded, explicit modes; ``auto`` runs as full
so no timing decides a mode) is run in a fresh process with ``--gradcheck-json``. What a run
cannot repeat (times, also those quoted in notes, dates, the environment, temporary paths,
memory addresses) is masked, so are errors at roundoff level (a passing check's worst
elements, whose digits follow the machine's kernels), and floats are written to six
significant digits; the rest is compared byte for byte with ``tests/golden/results.json``.
The run uses one thread and the same kernels on every x86-64 CPU. An intended change to the records
regenerates it::

    GRADCHECK_KIT_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_results.py

The golden file was made with one torch build on the CPU; under another build, or with a GPU,
the floats may legitimately differ and the test skips.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "results.json"
VOLATILE_KEYS = {"created", "duration_s", "launch_s", "environment", "speedup", "crossover"}
# Timing figures and their statistics: whatever the machine did at that moment.
TIMING_PARENTS = {"forward", "forward_backward", "train_step"}
# Times quoted in notes ("fast mode took 1.58 ms", "predicted at 824 ms").
TIME_IN_TEXT = re.compile(r"\d[\d.,]*(?:e[-+]?\d+)? (ms|s|us|µs)\b")
ADDRESS = re.compile(r"0x[0-9a-f]{6,}")
# An element's error under this share of what it was allowed is roundoff: its digits, and
# which element is the worst, follow the order of sums in the machine's kernels.
ROUNDOFF = 1e-3


def _mask_roundoff(value: Any) -> Any:
    """Worst-element entries at roundoff level, and maxima made only of them, as ``<roundoff>``."""
    if isinstance(value, list):
        return [_mask_roundoff(item) for item in value]
    if not isinstance(value, dict):
        return value
    value = {key: _mask_roundoff(item) for key, item in value.items()}
    error, allowed = value.get("abs_error"), value.get("allowed")
    if isinstance(error, float) and isinstance(allowed, float) and error <= ROUNDOFF * allowed:
        return "<roundoff>"
    if "max_abs_error" in value:
        lists = [value.get("worst"), *(p.get("worst") for p in value.get("pairs") or [])]
        entries = [e for worst in lists if isinstance(worst, list) for e in worst]
        if entries and all(e == "<roundoff>" for e in entries):
            value["max_abs_error"] = value["max_rel_error"] = "<roundoff>"
    return value


def _normalise(value: Any, parent: str, replacements: list[tuple[str, str]]) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in VOLATILE_KEYS or parent in TIMING_PARENTS:
                out[key] = "<volatile>"
            else:
                out[key] = _normalise(item, key, replacements)
        return out
    if isinstance(value, list):
        return [_normalise(item, parent, replacements) for item in value]
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, str):
        for old, new in replacements:
            value = value.replace(old, new)
        return ADDRESS.sub("<address>", TIME_IN_TEXT.sub(r"<t> \1", value))
    return value


def _golden_document(tmp_path: Path, **variables: str) -> str:
    out = tmp_path / "out"
    # The last digits of a passing check's roundoff-level errors follow the order of every
    # sum: one thread (a BLAS that picks its thread count by load sums in another order),
    # and the same kernels on every x86-64 machine (torch's and oneDNN's widest vector
    # kernels, AVX2 or AVX-512, and MKL's code path are picked by the CPU: this file
    # failed on an AVX-512 machine when made on another).
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MKL_DYNAMIC": "FALSE",
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        **variables,
    }
    env.pop("GITHUB_ACTIONS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/golden/golden_checks.py",
            "--gradcheck",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--gradcheck-mode=full",
            "--gradcheck-json",
            str(out / "gradcheck.json"),
            "--gradcheck-report",
            str(out / "gradcheck.html"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # A file inside testpaths is a subset run: its results go beside the full pair.
    document = json.loads((out / "gradcheck.subset.json").read_text())
    replacements = [(str(out), "<out>"), (str(ROOT), "<root>")]
    normalised = _normalise(_mask_roundoff(document), "", replacements)
    normalised["golden"] = {"torch": torch.__version__}
    return json.dumps(normalised, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def test_results_match_the_golden_file(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CUDA rows carry figures the golden file has not")
    if not GOLDEN.exists() and not os.environ.get("GRADCHECK_KIT_UPDATE_GOLDEN"):
        pytest.fail(f"{GOLDEN} is missing: run with GRADCHECK_KIT_UPDATE_GOLDEN=1 to make it")
    if GOLDEN.exists():
        made_with = json.loads(GOLDEN.read_text())["golden"]["torch"]
        if made_with != torch.__version__ and not os.environ.get("GRADCHECK_KIT_UPDATE_GOLDEN"):
            pytest.skip(f"golden file made with torch {made_with}, this is {torch.__version__}")
    actual = _golden_document(tmp_path)
    if os.environ.get("GRADCHECK_KIT_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(actual)
        return
    expected = GOLDEN.read_text()
    if actual != expected:
        import difflib

        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                "golden",
                "this run",
                n=2,
            )
        )
        pytest.fail(
            "the golden checks' results JSON changed; if intended, regenerate with "
            f"GRADCHECK_KIT_UPDATE_GOLDEN=1:\n{diff[:6000]}"
        )
