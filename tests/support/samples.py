"""Synthetic records of every kind, for the report's tests, its benchmark and demos.

Test-only code: it lives under ``tests/`` and nothing in the package imports it.

Each function returns one record as a check's ``to_dict()`` would (gradient
records are made with the real result classes of ``gradcheck_kit._src.results``,
so they follow ``schema.json``); :func:`sample_document` puts many together.
Values are drawn from a seeded ``random.Random``: the same arguments give the
same records. Imports no torch.

Examples:
    >>> doc = sample_document(20, failed_every=5, seed=1)
    >>> doc["summary"]["checks"], doc["summary"]["failed"] >= 4
    (20, True)
"""

from __future__ import annotations

import random
from typing import Any

from gradcheck_kit._src.results import (
    ErrorMap,
    GradcheckResult,
    Hint,
    PairResult,
    WorstElement,
)
from gradcheck_kit.report.document import make_document

__all__ = [
    "gradient_record",
    "manual_record",
    "training_record",
    "device_benchmark_record",
    "device_parity_record",
    "sample_environment",
    "sample_document",
]


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for n in reversed(shape):
        flat, i = divmod(flat, n)
        index.append(i)
    return tuple(reversed(index))


def gradient_record(
    name: str = "f",
    *,
    passed: bool = True,
    pattern: str = "transposed",
    n: int = 8,
    error_map: bool = True,
    test_id: str | None = "tests/test_model.py::test_grad",
    hint: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A gradient check of an ``n``-vector function, failing in ``pattern`` unless ``passed``.

    Args:
        name: The checked function's name.
        passed: Whether the check passed.
        pattern: Where a failing Jacobian is wrong: ``"transposed"`` (J instead
            of its transpose), ``"region"`` (one corner), ``"factor"`` (everywhere).
        n: The input and output size.
        error_map: Whether the pair carries an ``error_map`` (full mode).
        test_id: The test's id.
        hint: The hint's text (default: one that fits ``pattern``).
        seed: Seed of the values.

    Returns:
        ``GradcheckResult.to_dict()`` of a made-up check.

    Examples:
        >>> r = gradient_record(passed=False, n=4)
        >>> r["kind"], r["passed"], r["pairs"][0]["mismatched"] > 0
        ('gradient', False, True)
    """
    rng = random.Random(seed)
    a = [[rng.uniform(-1, 1) for _ in range(n)] for _ in range(n)]
    numeric = a
    if passed:
        analytic = [[v + rng.uniform(-1e-9, 1e-9) for v in row] for row in a]
    elif pattern == "transposed":
        analytic = [[a[j][i] for j in range(n)] for i in range(n)]
    elif pattern == "region":
        analytic = [
            [v * (2.0 if i < n // 2 and j < n // 2 else 1.0) for j, v in enumerate(row)]
            for i, row in enumerate(a)
        ]
    else:
        analytic = [[2.0 * v for v in row] for row in a]
    atol, rtol = 1e-5, 1e-3
    diff = [[abs(analytic[i][j] - numeric[i][j]) for j in range(n)] for i in range(n)]
    allowed = [[atol + rtol * abs(numeric[i][j]) for j in range(n)] for i in range(n)]
    over = [[diff[i][j] > allowed[i][j] for j in range(n)] for i in range(n)]
    order = sorted(
        ((i, j) for i in range(n) for j in range(n)),
        key=lambda ij: diff[ij[0]][ij[1]] - allowed[ij[0]][ij[1]],
        reverse=True,
    )
    worst = tuple(
        WorstElement(
            output_index=(i,),
            input_index=(j,),
            analytic=analytic[i][j],
            numeric=numeric[i][j],
            abs_error=diff[i][j],
            rel_error=diff[i][j] / max(abs(numeric[i][j]), 1e-300),
            allowed=allowed[i][j],
        )
        for i, j in order[: 1 if passed else 5]
    )
    mismatched = sum(map(sum, over))
    emap = None
    if error_map:
        emap = ErrorMap(
            rows=n,
            cols=n,
            row_step=1,
            col_step=1,
            abs_error=tuple(tuple(float(f"{v:.4g}") for v in row) for row in diff),
            mismatched=tuple(tuple(int(v) for v in row) for row in over),
        )
    pair = PairResult(
        output="output",
        input="input",
        output_shape=(n,),
        input_shape=(n,),
        passed=passed,
        max_abs_error=max(map(max, diff)),
        max_rel_error=max(w.rel_error for w in worst),
        mismatched=mismatched,
        total=n * n,
        worst=worst,
        error_map=emap,
    )
    hints: tuple[Hint, ...] = ()
    if not passed:
        default = {
            "transposed": "analytic ≈ numericᵀ: the gradient is transposed?",
            "region": "wrong only where both indices are below n/2",
        }.get(pattern, "analytic ≈ 2 × numeric on every mismatched element — an extra factor of 2?")
        hints = (Hint(kind=pattern, text=hint or default),)
    return GradcheckResult(
        name=name,
        passed=passed,
        status="passed" if passed else "mismatch",
        mode="full",
        mode_requested="auto",
        dtype="float64",
        dtype_policy="float64",
        eps=1e-6,
        atol=atol,
        rtol=rtol,
        seed=seed,
        rng="fixed",
        pairs=(pair,),
        hints=hints,
        duration_s=round(rng.uniform(0.001, 0.05), 6),
        evaluations=3,
        vectorized=True,
        test_id=test_id,
    ).to_dict()


def manual_record(
    name: str = "loss", *, passed: bool = False, test_id: str | None = None
) -> dict[str, Any]:
    """A hand-written derivative compared three ways (``kind="manual"``).

    Examples:
        >>> manual_record()["pairs"][0]["worst"][0]["odd_one_out"]
        'manual'
    """
    worst = (
        []
        if passed
        else [
            {
                "output_index": [],
                "input_index": [i],
                "manual": 2.0 * i,
                "autograd": float(i),
                "numeric": float(i),
                "allowed": 0.001,
                "odd_one_out": "manual",
            }
            for i in (3, 2, 1)
        ]
    )
    return {
        "kind": "manual",
        "schema_version": 1,
        "name": name,
        "check": "check_matches_manual",
        "test_id": test_id,
        "passed": passed,
        "status": "passed" if passed else "mismatch",
        "odd_one_out": None if passed else "manual",
        "mode": "full",
        "mode_requested": "auto",
        "dtype": "float64",
        "dtype_policy": "float64",
        "eps": 1e-6,
        "atol": 1e-5,
        "rtol": 1e-3,
        "seed": 0,
        "rng": "fixed",
        "interface": "grad",
        "duration_s": 0.004,
        "evaluations": 4,
        "max_abs_error": 0.0 if passed else 3.0,
        "hint": None if passed else "your derivative disagrees with both autograd and FD",
        "hints": [],
        "notes": [],
        "pairs": [
            {
                "output": "output",
                "input": "w",
                "output_shape": [],
                "input_shape": [4],
                "passed": passed,
                "total": 4,
                "manual_wrong": 0 if passed else 3,
                "autograd_wrong": 0,
                "numeric_wrong": 0,
                "all_differ": 0,
                "max_abs_error": 0.0 if passed else 3.0,
                "worst": worst,
            }
        ],
    }


def training_record(
    name: str = "Net",
    *,
    passed: bool = False,
    parameter: str = "fc1.weight",
    test_id: str | None = None,
) -> dict[str, Any]:
    """A training-loop check (``kind="training"``), with one finding unless ``passed``.

    Examples:
        >>> training_record()["findings"][0]["parameter"]
        'fc1.weight'
    """
    findings = (
        []
        if passed
        else [
            {
                "kind": "grad_not_reset",
                "title": "Gradient not reset between optimizer steps",
                "parameter": parameter,
                "step": 2,
                "optimizer": "SGD",
                "expected": "one backward pass per optimizer step",
                "found": "2 backward passes accumulated",
                "cause": "optimizer.zero_grad() is never called",
                "fix": "call optimizer.zero_grad() before loss.backward()",
                "location": "train.py:12 in train: `loss.backward()`",
                "steps": [2, 3, 4],
                "occurrences": 3,
            }
        ]
    )
    return {
        "kind": "training",
        "schema_version": 1,
        "name": name,
        "check": "watch_training",
        "test_id": test_id,
        "passed": passed,
        "optimizer_steps": 4,
        "backward_passes": 4,
        "accumulation_steps": None,
        "duration_s": 0.02,
        "notes": [],
        "findings": findings,
    }


def _timing(median: float) -> dict[str, Any]:
    return {"median_s": median, "iqr_s": median * 0.04, "runs": 50}


def device_benchmark_record(
    name: str = "DynamicNet step", *, test_id: str | None = None, cuda: bool = True
) -> dict[str, Any]:
    """A CPU vs CUDA benchmark with a size sweep (``kind="device_benchmark"``).

    With ``cuda=False`` the CUDA device is reported as skipped.

    Examples:
        >>> device_benchmark_record()["crossover"]
        256
    """
    sizes = (64, 256, 1024, 4096)
    cpu = {64: 0.00092, 256: 0.0031, 1024: 0.0095, 4096: 0.034}
    gpu = {64: 0.00139, 256: 0.00131, 1024: 0.00133, 4096: 0.00134}
    devices: list[dict[str, Any]] = [
        {
            "device": "cpu",
            "name": "16 threads",
            "forward": _timing(cpu[64] * 0.4),
            "forward_backward": _timing(cpu[64]),
        }
    ]
    if cuda:
        devices.append(
            {
                "device": "cuda",
                "name": "NVIDIA H100",
                "forward": _timing(gpu[64] * 0.35),
                "forward_backward": _timing(gpu[64]),
            }
        )
    else:
        devices.append({"device": "cuda", "skipped": "no CUDA device"})
    record: dict[str, Any] = {
        "kind": "device_benchmark",
        "schema_version": 1,
        "name": name,
        "test_id": test_id,
        "passed": True,
        "backward": True,
        "size_name": "batch",
        "devices": devices,
        "duration_s": 3.2,
    }
    if cuda:
        record["sweep"] = [
            {
                "size": size,
                "devices": [
                    {"device": "cpu", "forward_backward": _timing(cpu[size])},
                    {"device": "cuda", "forward_backward": _timing(gpu[size])},
                ],
                "speedup": {"forward_backward": cpu[size] / gpu[size]},
            }
            for size in sizes
        ]
        record["crossover"] = 256
    return record


def device_parity_record(
    name: str = "MLP", *, passed: bool = True, test_id: str | None = None
) -> dict[str, Any]:
    """CPU vs CUDA gradients compared (``kind="device_parity"``).

    Examples:
        >>> device_parity_record(passed=False)["passed"]
        False
    """
    error = 2e-7 if passed else 3e-3
    return {
        "kind": "device_parity",
        "schema_version": 1,
        "name": name,
        "test_id": test_id,
        "passed": passed,
        "devices": ["cpu", "cuda"],
        "message": "" if passed else "gradients differ: TF32 matmuls on CUDA (set allow_tf32)",
        "leaves": [
            {"leaf": "params/0.weight", "max_abs_error": error, "allowed": 1e-5},
            {"leaf": "output", "max_abs_error": error / 3, "allowed": 1e-5},
        ],
        "duration_s": 0.4,
    }


def sample_environment() -> dict[str, Any]:
    """An environment block as the plugin writes it.

    Examples:
        >>> sample_environment()["torch"]
        '2.13.0+cpu'
    """
    return {
        "devices": ["cpu: Intel(R) Xeon(R) CPU", "cuda:0: NVIDIA H100 80GB HBM3"],
        "cuda": "12.6",
        "numpy": "2.4.6",
        "platform": "Linux-6.1-x86_64-with-glibc2.36",
        "python": "3.11.7",
        "torch": "2.13.0+cpu",
        "seeds": {"per_check": [0], "PYTHONHASHSEED": "0"},
        "options": {"gradcheck": True, "gradcheck_json": "reports/gradcheck.json"},
    }


def sample_document(
    n_checks: int,
    *,
    failed_every: int = 20,
    seed: int = 0,
    error_map_size: int = 16,
    passing_error_maps: bool = False,
) -> dict[str, Any]:
    """A document of ``n_checks`` records of every kind, one in ``failed_every`` failing.

    Mostly gradient checks (as in a real run), with a training check, a manual
    derivative and a parity check every 50 records and a benchmark every 500.

    Args:
        n_checks: How many records.
        failed_every: One record in this many fails.
        seed: Seed of the values.
        error_map_size: Size of the failing gradient checks' Jacobians.
        passing_error_maps: Give passed gradient checks (4 x 4) an error map too.

    Returns:
        A document of the current schema.

    Examples:
        >>> sorted(sample_document(100)["summary"]["by_kind"])
        ['device_benchmark', 'device_parity', 'gradient', 'manual', 'training']
    """
    records: list[dict[str, Any]] = []
    patterns = ("transposed", "region", "factor")
    for i in range(n_checks):
        failed = i % failed_every == 0
        test_id = f"tests/test_ops_{i // 100}.py::test_op[{i}]"
        slot = i % 50
        if slot == 10:
            records.append(training_record(passed=not failed, test_id=test_id))
        elif slot == 20:
            records.append(manual_record(passed=not failed, test_id=test_id))
        elif slot == 30:
            records.append(device_parity_record(passed=not failed, test_id=test_id))
        elif i % 500 == 40:
            records.append(device_benchmark_record(test_id=test_id))
        else:
            records.append(
                gradient_record(
                    f"op_{i}",
                    passed=not failed,
                    pattern=patterns[i % 3],
                    n=error_map_size if failed else 4,
                    error_map=failed or passing_error_maps,
                    test_id=test_id,
                    seed=seed,
                )
            )
    return make_document(records, environment=sample_environment(), duration_s=12.5)
