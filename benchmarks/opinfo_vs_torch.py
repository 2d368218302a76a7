#!/usr/bin/env python
"""Our gradient checker against ``torch.autograd.gradcheck`` on PyTorch's OpInfo database.

Every op variant of ``op_db`` that supports autograd is checked with its first
sample (CPU; float64, and separately float32) by a set of *checkers*: small
adapters that take one case and return a verdict. torch's checkers use the
baseline ``check_batched_grad=False, check_undefined_grad=False,
check_forward_ad=False, check_backward_ad=True`` ("does the backward formula
agree with finite differences"); ours call ``gradcheck_kit.check_gradients``.

Run from the repository root::

    python benchmarks/opinfo_vs_torch.py                      # everything, ~minutes
    python benchmarks/opinfo_vs_torch.py --checkers torch-full,ours-full --ops linalg
    python benchmarks/opinfo_vs_torch.py --list-checkers

See ``benchmarks/README.md`` for what each figure of the summary means.
This is a script, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import re
import sys
import time
import types
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import _opinfo_corpus as corpus  # noqa: E402 - found through the sys.path entry above
from _peak_memory import CallTimeout, time_limit  # noqa: E402 - the same folder

DEFAULT_JSON = _HERE / "results" / "opinfo.json"
SCHEMA = "gradcheck_kit.bench.opinfo/1"

VERDICTS = ("pass", "fail")
BASELINE = {
    "check_batched_grad": False,
    "check_undefined_grad": False,
    "check_forward_ad": False,
    "check_backward_ad": True,
}
LOOSE_F32 = {"eps": 1e-3, "atol": 1e-3, "rtol": 1e-2}

# Checks known to take far longer than --timeout, skipped unless --include-slow
# (recorded as verdict "slow-skip"). Measured with torch-full, torch 2.13, 2 CPU
# threads, 8000- to 16000-element first samples; all four pass:
# nn.functional.ctc_loss 463 s, slice_scatter 100 s, msort 45 s, sort 40 s.
_SLOW_FULL_TORCH = frozenset({"nn.functional.ctc_loss", "slice_scatter", "msort", "sort"})
SLOW_OPS: dict[str, frozenset[str]] = {
    "torch-full": _SLOW_FULL_TORCH,
    # ctc_loss takes ours-full about 35 s; the other three exceed its memory guard.
    "ours-full": _SLOW_FULL_TORCH,
    "ours-f32-full": _SLOW_FULL_TORCH,
    "torch-f32": _SLOW_FULL_TORCH,
    "torch-f32-loose": _SLOW_FULL_TORCH,
}


# --------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """What one checker said about one case."""

    verdict: str  # pass | fail | invalid | error | timeout | slow-skip
    seconds: float = 0.0
    message: str = ""
    hint: str | None = None
    status: str | None = None
    mode: str | None = None
    max_abs_error: float | None = None
    detail: str | None = None
    traces: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"verdict": self.verdict, "seconds": round(self.seconds, 6)}
        for key in ("message", "hint", "status", "mode", "detail", "traces"):
            value = getattr(self, key)
            if value:
                data[key] = value
        err = self.max_abs_error
        if err is not None:
            data["max_abs_error"] = err if math.isfinite(err) else repr(err)
        return data


def _first_line(text: str) -> str:
    for line in str(text).strip().splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_first_line(str(exc))}"


# --------------------------------------------------------------------------- checkers


@dataclass(frozen=True)
class Checker:
    """A named adapter: one case in, one :class:`Outcome` out."""

    name: str
    dtype: str  # which case it consumes: "float64" or "float32"
    family: str  # "torch" or "ours"
    description: str
    run: Callable[[corpus.OpCase], Outcome]


def _torch_gradcheck(case: corpus.OpCase, **options: Any) -> Outcome:
    from torch.autograd.gradcheck import GradcheckError

    # raise_exception=True and catching GradcheckError gives exactly the verdict of
    # raise_exception=False (torch does the same inside) but keeps the reason.
    try:
        ok = torch.autograd.gradcheck(
            case.fn, case.inputs, raise_exception=True, **BASELINE, **options
        )
    except GradcheckError as exc:
        return Outcome("fail", message=_first_line(str(exc)), detail=str(exc)[:2000])
    return Outcome("pass" if ok else "fail")


class OursUnavailable(RuntimeError):
    """gradcheck_kit's check_gradients cannot be imported (yet)."""


_KIT: types.SimpleNamespace | None = None


def _load_ours() -> types.SimpleNamespace:
    """``check_gradients`` and ``InvalidArgument``: the public names first, then ``_src``."""
    global _KIT
    if _KIT is not None:
        return _KIT
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))
    problems = []
    for check_mod, err_mod in (
        ("gradcheck_kit", "gradcheck_kit"),
        ("gradcheck_kit._src.gradcheck", "gradcheck_kit._src.errors"),
    ):
        try:
            check = importlib.import_module(check_mod).check_gradients
            invalid = importlib.import_module(err_mod).InvalidArgument
        except Exception as exc:  # a half-written package fails in many ways
            problems.append(f"{check_mod}: {_error_text(exc)}")
            continue
        _KIT = types.SimpleNamespace(
            check_gradients=check, InvalidArgument=invalid, source=check_mod
        )
        return _KIT
    raise OursUnavailable("; ".join(problems))


class _StandinInvalid(ValueError):
    pass


def _standin_check_gradients(
    fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], *, mode: str, dtype: str
) -> Any:
    """Mimics check_gradients' interface on top of torch's gradcheck (plumbing tests only)."""
    if not inputs:
        raise _StandinInvalid("inputs is empty")
    options: dict[str, Any] = dict(BASELINE)
    if dtype == "native" and any(t.dtype != torch.float64 for t in inputs):
        options.update(LOOSE_F32)
    from torch.autograd.gradcheck import GradcheckError

    try:
        torch.autograd.gradcheck(
            fn, inputs, fast_mode=mode == "fast", raise_exception=True, **options
        )
        passed, text = True, "stand-in: passed"
    except GradcheckError as exc:
        passed, text = False, f"stand-in: {_first_line(str(exc))}"
    return types.SimpleNamespace(
        passed=passed,
        status="passed" if passed else "mismatch",
        hint=None if passed else "stand-in hint",
        max_abs_error=float("nan"),
        mode=mode,
        summary=lambda: text,
    )


def use_standin() -> None:
    """Replace gradcheck_kit by a stand-in built on torch's gradcheck (to test this script)."""
    global _KIT
    _KIT = types.SimpleNamespace(
        check_gradients=_standin_check_gradients,
        InvalidArgument=_StandinInvalid,
        source="stand-in",
    )


def _ours(case: corpus.OpCase, *, mode: str, dtype: str) -> Outcome:
    kit = _load_ours()
    try:
        result = kit.check_gradients(case.fn, case.inputs, mode=mode, dtype=dtype)
    except kit.InvalidArgument as exc:
        return Outcome("invalid", message="invalid: " + _error_text(exc))
    passed = bool(result.passed)
    outcome = Outcome(
        "pass" if passed else "fail",
        status=str(getattr(result, "status", "")) or None,
        mode=str(getattr(result, "mode", "")) or None,
        hint=getattr(result, "hint", None),
    )
    with contextlib.suppress(Exception):
        outcome.max_abs_error = float(result.max_abs_error)
    if not passed:
        try:
            text = str(result.summary())
        except Exception as exc:  # messages.py may not be written yet
            text = f"(summary() raised {_error_text(exc)})"
        outcome.message = _first_line(text)
        outcome.detail = text[:4000]
    return outcome


def _dropin(case: corpus.OpCase, **options: Any) -> Outcome:
    """gradcheck_kit.gradcheck, called exactly as the torch checkers call torch's."""
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))
    import gradcheck_kit

    try:
        gradcheck_kit.gradcheck(case.fn, case.inputs, raise_exception=True, **BASELINE, **options)
    except gradcheck_kit.errors.TorchGradcheckError as exc:
        result = exc.result
        return Outcome(
            "fail",
            status=str(getattr(result, "status", "")) or None,
            mode=str(getattr(result, "mode", "")) or None,
            hint=getattr(result, "hint", None),
            message=_first_line(str(exc)),
            detail=str(exc)[:4000],
        )
    except gradcheck_kit.InvalidArgument as exc:
        return Outcome("invalid", message="invalid: " + _error_text(exc))
    return Outcome("pass")


def _make_checkers() -> dict[str, Checker]:
    entries = [
        Checker(
            "torch-full",
            "float64",
            "torch",
            "torch.autograd.gradcheck, fast_mode=False, float64",
            lambda c: _torch_gradcheck(c, fast_mode=False),
        ),
        Checker(
            "torch-fast",
            "float64",
            "torch",
            "torch.autograd.gradcheck, fast_mode=True, float64",
            lambda c: _torch_gradcheck(c, fast_mode=True),
        ),
        Checker(
            "ours-full",
            "float64",
            "ours",
            'check_gradients(mode="full"), float64 inputs',
            lambda c: _ours(c, mode="full", dtype="float64"),
        ),
        Checker(
            "ours-fast",
            "float64",
            "ours",
            'check_gradients(mode="fast"), float64 inputs',
            lambda c: _ours(c, mode="fast", dtype="float64"),
        ),
        Checker(
            "torch-f32",
            "float32",
            "torch",
            "torch.autograd.gradcheck defaults (eps=1e-6, atol=1e-5, rtol=1e-3), full, float32",
            lambda c: _torch_gradcheck(c, fast_mode=False),
        ),
        Checker(
            "torch-f32-loose",
            "float32",
            "torch",
            "torch.autograd.gradcheck eps=1e-3, atol=1e-3, rtol=1e-2, full, float32",
            lambda c: _torch_gradcheck(c, fast_mode=False, **LOOSE_F32),
        ),
        Checker(
            "ours-f32-full",
            "float32",
            "ours",
            'check_gradients(mode="full", dtype="native"), float32 inputs',
            lambda c: _ours(c, mode="full", dtype="native"),
        ),
        Checker(
            "ours-f32-fast",
            "float32",
            "ours",
            'check_gradients(mode="fast", dtype="native"), float32 inputs',
            lambda c: _ours(c, mode="fast", dtype="native"),
        ),
        Checker(
            "dropin",
            "float64",
            "ours",
            "gradcheck_kit.gradcheck, torch's arguments, fast_mode=False, float64",
            lambda c: _dropin(c, fast_mode=False),
        ),
        Checker(
            "dropin-fast",
            "float64",
            "ours",
            "gradcheck_kit.gradcheck, torch's arguments, fast_mode=True, float64",
            lambda c: _dropin(c, fast_mode=True),
        ),
        Checker(
            "dropin-f32",
            "float32",
            "ours",
            "gradcheck_kit.gradcheck, torch's defaults (eps=1e-6, atol=1e-5, rtol=1e-3), float32",
            lambda c: _dropin(c, fast_mode=False),
        ),
        Checker(
            "dropin-f32-fast",
            "float32",
            "ours",
            "gradcheck_kit.gradcheck, torch's defaults, fast_mode=True, float32",
            lambda c: _dropin(c, fast_mode=True),
        ),
    ]
    return {c.name: c for c in entries}


CHECKERS = _make_checkers()
GROUPS = {
    "all": list(CHECKERS),
    "torch": [n for n, c in CHECKERS.items() if c.family == "torch"],
    "ours": [n for n, c in CHECKERS.items() if c.family == "ours"],
}


# --------------------------------------------------------------------------- running


def _traces(case: corpus.OpCase, saved: list[tuple[torch.Tensor, bool]]) -> list[str]:
    """What a check left behind on the inputs (changed values, requires_grad, a .grad)."""
    found = []
    for i, (t, (value, requires_grad)) in enumerate(zip(case.inputs, saved, strict=True)):
        # sparse and other layouts: only the attributes below are compared
        same = t.layout != torch.strided or (
            t.shape == value.shape
            and torch.allclose(t.detach(), value, rtol=0.0, atol=0.0, equal_nan=True)
        )
        if not same:
            found.append(f"inputs[{i}] values changed")
            with torch.no_grad():  # repair, so that the next checker sees the sample
                t.copy_(value)
        if t.requires_grad != requires_grad:
            found.append(f"inputs[{i}].requires_grad changed")
            t.requires_grad_(requires_grad)
        if t.is_leaf and t.grad is not None:
            found.append(f"inputs[{i}].grad was set")
            t.grad = None
    return found


def run_one(checker: Checker, case: corpus.OpCase, timeout: float) -> Outcome:
    """Run one checker on one case, timing it and turning exceptions into outcomes."""
    saved = [(t.detach().clone(), t.requires_grad) for t in case.inputs]
    torch.manual_seed(0)  # fast modes draw random vectors from the global generator
    start = time.perf_counter()
    try:
        with time_limit(timeout):
            outcome = checker.run(case)
    except CallTimeout as exc:
        outcome = Outcome("timeout", message=f"timeout: {exc}")
    except OursUnavailable:
        raise
    except Exception as exc:  # per-op errors are data here
        outcome = Outcome("error", message=_error_text(exc))
    outcome.seconds = time.perf_counter() - start
    outcome.traces = _traces(case, saved)
    return outcome


def parse_checkers(text: str) -> list[str]:
    """``"torch-full,ours"`` → checker names, expanding groups; quotes unknown names."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        expanded = GROUPS.get(part, [part])
        for name in expanded:
            if name not in CHECKERS:
                known = ", ".join([*GROUPS, *CHECKERS])
                raise argparse.ArgumentTypeError(f"unknown checker {part!r}; known: {known}")
            if name not in names:
                names.append(name)
    if not names:
        raise argparse.ArgumentTypeError(f"no checker in {text!r}")
    return names


def parse_filters(text: str) -> list[str]:
    """``"sin,linalg.*"`` → name filters (substrings, or shell patterns)."""
    return [p.strip() for p in text.split(",") if p.strip()]


def parse_positive(text: str) -> int:
    """A positive integer, quoting the bad input."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Could not parse value: {text!r}.") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0.")
    return value


def parse_seconds(text: str) -> float:
    """A number of seconds >= 0 (0 disables the limit), quoting the bad input."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Could not parse value: {text!r}.") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0.")
    return value


# --------------------------------------------------------------------------- summary


def _verdict(row: dict[str, Any], checker: str) -> str | None:
    result = row["results"].get(checker)
    return None if result is None else str(result["verdict"])


def _has(rows: list[dict[str, Any]], checker: str) -> bool:
    return any(checker in r["results"] for r in rows)


def _message_pattern(message: str) -> str:
    """Group key for messages that differ only in shapes and numbers."""
    key, previous = message, ""
    while key != previous:
        previous, key = key, re.sub(r"\([^()]*\)", "(...)", key)
    return re.sub(r"\d+", "N", key)


def _checker_stats(rows: list[dict[str, Any]], name: str, top: int) -> dict[str, Any]:
    results = [(r["op"], r["results"][name]) for r in rows if name in r["results"]]
    counts = Counter(str(res["verdict"]) for _, res in results)
    problems: dict[str, tuple[str, list[str]]] = {}
    for op, res in results:
        if res["verdict"] in ("error", "invalid", "timeout"):
            message = str(res.get("message", ""))
            problems.setdefault(_message_pattern(message), (message, []))[1].append(op)
    traces = [{"op": op, "traces": res["traces"]} for op, res in results if res.get("traces")]
    slowest = sorted(results, key=lambda item: -float(item[1]["seconds"]))[:top]
    return {
        "cases": len(results),
        "counts": dict(sorted(counts.items())),
        "total_seconds": round(sum(float(res["seconds"]) for _, res in results), 3),
        "problems": [
            {"message": msg, "count": len(ops), "ops": ops}
            for msg, ops in sorted(problems.values(), key=lambda item: -len(item[1]))
        ],
        "left_traces": traces,
        "slowest": [{"op": op, "seconds": round(float(res["seconds"]), 4)} for op, res in slowest],
    }


def _compare(rows: list[dict[str, Any]], ref: str, other: str, *, listed: bool) -> dict[str, Any]:
    """Verdict agreement of two checkers over the ops where both gave a verdict."""
    both = [r for r in rows if _verdict(r, ref) in VERDICTS and _verdict(r, other) in VERDICTS]
    disagree = []
    for r in both:
        a, b = _verdict(r, ref), _verdict(r, other)
        if a != b:
            res = r["results"][other]
            disagree.append(
                {
                    "op": r["op"],
                    ref: a,
                    other: b,
                    "hint": res.get("hint"),
                    "message": res.get("message") or r["results"][ref].get("message"),
                    "torch_suite_marks": r["torch_suite_marks"],
                    "supports_forward_ad": r["supports_forward_ad"],
                }
            )
    agree = len(both) - len(disagree)
    ref_time = sum(float(r["results"][ref]["seconds"]) for r in both)
    other_time = sum(float(r["results"][other]["seconds"]) for r in both)
    return {
        "reference": ref,
        "other": other,
        "both_verdict": len(both),
        "agree": agree,
        "agree_pct": round(100.0 * agree / len(both), 2) if both else None,
        "reference_seconds": round(ref_time, 3),
        "other_seconds": round(other_time, 3),
        "time_ratio": round(other_time / ref_time, 3) if ref_time > 0 else None,
        "listed": listed,
        "disagreements": disagree,
    }


def _float32_report(rows: list[dict[str, Any]], checker: str, ref: str) -> dict[str, Any]:
    """Failures of a float32 checker, overall and on ops that ``ref`` (float64) passes."""
    have = [r for r in rows if _verdict(r, checker) in VERDICTS]
    fails = [r for r in have if _verdict(r, checker) == "fail"]
    correct = [r for r in have if _verdict(r, ref) == "pass"]
    false_alarms = [r for r in correct if _verdict(r, checker) == "fail"]
    return {
        "checker": checker,
        "reference": ref,
        "with_verdict": len(have),
        "fails": len(fails),
        "reference_passes": len(correct),
        "false_alarms": len(false_alarms),
        "false_alarm_ops": [
            {
                "op": r["op"],
                "hint": r["results"][checker].get("hint"),
                "message": r["results"][checker].get("message"),
                "max_abs_error": r["results"][checker].get("max_abs_error"),
            }
            for r in false_alarms
        ],
    }


def summarize(rows: list[dict[str, Any]], checkers: Sequence[str], top: int) -> dict[str, Any]:
    """Everything the summary prints, as JSON-ready data."""
    skipped: Counter[str] = Counter()
    for r in rows:
        for dtype, reason in r["skipped"].items():
            skipped[f"{dtype}: {reason}"] += 1
    summary: dict[str, Any] = {
        "op_variants": len(rows),
        "cases": {d: sum(d in r["inputs"] for r in rows) for d in corpus.DTYPES},
        "skipped": dict(skipped),
        "checkers": {name: _checker_stats(rows, name, top) for name in checkers},
        "comparisons": [],
        "float32": [],
    }
    # torch's float32 defaults disagree with everything (see "float32"), so that
    # pair gets its agreement figure but no list.
    for ref, other, listed in (
        ("torch-full", "ours-full", True),
        ("torch-fast", "ours-fast", True),
        ("torch-full", "torch-fast", True),
        ("ours-full", "ours-fast", True),
        ("torch-f32", "ours-f32-full", False),
        ("torch-f32-loose", "ours-f32-full", True),
        ("torch-f32-loose", "ours-f32-fast", True),
        ("torch-full", "dropin", True),
        ("torch-fast", "dropin-fast", True),
        ("torch-f32", "dropin-f32", True),
        ("torch-f32", "dropin-f32-fast", True),
    ):
        if ref in checkers and other in checkers and _has(rows, ref) and _has(rows, other):
            summary["comparisons"].append(_compare(rows, ref, other, listed=listed))
    for name in (
        "torch-f32",
        "torch-f32-loose",
        "ours-f32-full",
        "ours-f32-fast",
        "dropin-f32",
        "dropin-f32-fast",
    ):
        if name in checkers and "torch-full" in checkers and _has(rows, name):
            summary["float32"].append(_float32_report(rows, name, "torch-full"))
    return summary


def format_summary(summary: dict[str, Any], meta: dict[str, Any], *, max_list: int) -> str:
    """The summary as text for the terminal."""
    out: list[str] = []
    add = out.append
    add("=" * 78)
    add(
        f"OpInfo gradient checks: torch {meta['torch']}, {meta['torch_threads']} torch threads "
        f"(OMP_NUM_THREADS={meta['omp_num_threads']}), {meta['cpu_count']} CPUs"
    )
    add(
        f"load average (1, 5, 15 min) at start {meta['load_average_start']}, "
        f"at end {meta['load_average']}; wall {meta['wall_seconds']:.0f} s"
    )
    add(f"gradcheck_kit: {meta['ours_source']}")
    cases = summary["cases"]
    add(
        f"op variants: {summary['op_variants']}  (cases: float64 {cases['float64']}, "
        f"float32 {cases['float32']})"
    )
    for reason, count in sorted(summary["skipped"].items()):
        add(f"  skipped {count:4d} × {reason}")

    add("")
    add("Per checker (verdict counts, total time):")
    for name, stats in summary["checkers"].items():
        counts = ", ".join(f"{k} {v}" for k, v in stats["counts"].items())
        add(f"  {name:16s} {stats['cases']:4d} cases  {stats['total_seconds']:8.1f} s   {counts}")

    if summary["comparisons"]:
        add("")
        add("Verdict agreement (over ops where both gave pass/fail):")
        for comp in summary["comparisons"]:
            ratio = comp["time_ratio"]
            add(
                f"  {comp['other']} vs {comp['reference']}: {comp['agree']}/{comp['both_verdict']}"
                f" agree ({comp['agree_pct']}%), time {comp['other_seconds']:.1f} s vs "
                f"{comp['reference_seconds']:.1f} s (ratio {ratio})"
            )
        for comp in summary["comparisons"]:
            if not comp["disagreements"] or not comp["listed"]:
                continue
            add("")
            add(f"Disagreements {comp['other']} vs {comp['reference']}:")
            for d in comp["disagreements"][:max_list]:
                marks = (
                    f" [torch suite: {','.join(d['torch_suite_marks'])}]"
                    if d["torch_suite_marks"]
                    else ""
                )
                if not d["supports_forward_ad"]:
                    marks += " [no forward AD]"
                add(
                    f"  {d['op']:36s} {comp['reference']}={d[comp['reference']]}"
                    f" {comp['other']}={d[comp['other']]}{marks}"
                )
                if d.get("hint"):
                    add(f"      hint: {d['hint']}")
                if d.get("message"):
                    add(f"      {d['message']}")
            if len(comp["disagreements"]) > max_list:
                add(f"  ... {len(comp['disagreements']) - max_list} more (see the JSON)")

    if summary["float32"]:
        add("")
        add("float32 (false alarm = torch-full passes the op in float64, the float32 check fails):")
        for rep in summary["float32"]:
            add(
                f"  {rep['checker']:16s} fails {rep['fails']}/{rep['with_verdict']}; "
                f"false alarms {rep['false_alarms']}/{rep['reference_passes']}"
            )
        for rep in summary["float32"]:
            if rep["checker"].startswith("ours") and rep["false_alarm_ops"]:
                add("")
                add(f"False alarms of {rep['checker']}:")
                for fa in rep["false_alarm_ops"][:max_list]:
                    add(f"  {fa['op']:36s} max_abs_error={fa['max_abs_error']}")
                    if fa.get("hint"):
                        add(f"      hint: {fa['hint']}")
                    if fa.get("message"):
                        add(f"      {fa['message']}")

    problems = [(n, s["problems"]) for n, s in summary["checkers"].items() if s["problems"]]
    if problems:
        add("")
        add("Errors / invalid / timeouts (first line, count, ops):")
        for name, groups in problems:
            total = sum(g["count"] for g in groups)
            add(f"  {name}: {total}")
            for g in groups[:max_list]:
                ops = ", ".join(g["ops"][:6]) + (" ..." if len(g["ops"]) > 6 else "")
                add(f"    {g['count']:3d} × {g['message']}")
                add(f"          {ops}")

    traced = [(n, s["left_traces"]) for n, s in summary["checkers"].items() if s["left_traces"]]
    if traced:
        add("")
        add("Checks that left traces on the inputs (values, requires_grad, .grad):")
        for name, items in traced:
            add(f"  {name}: {len(items)}")
            for item in items[:max_list]:
                add(f"    {item['op']}: {', '.join(item['traces'])}")

    tops = [(n, s["slowest"]) for n, s in summary["checkers"].items() if s["slowest"]]
    if tops:
        add("")
        add(f"Slowest ops per checker (top {len(tops[0][1])}):")
        for name, slowest in tops:
            add(f"  {name}: " + ", ".join(f"{s['op']} {s['seconds']:.2f}s" for s in slowest))
    add("=" * 78)
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(
        description="Compare gradcheck_kit.check_gradients with torch.autograd.gradcheck "
        "on torch's OpInfo database (first non-empty sample per op variant, CPU).",
    )
    parser.add_argument(
        "--checkers",
        type=parse_checkers,
        default=list(CHECKERS),
        metavar="LIST",
        help="comma list of checkers or groups (all, torch, ours); see --list-checkers. "
        "Default: all",
    )
    parser.add_argument(
        "--ops",
        type=parse_filters,
        default=[],
        metavar="LIST",
        help="comma list of op-name filters: substrings of op.full_name, or shell patterns "
        "(linalg.*). Default: every op",
    )
    parser.add_argument(
        "--limit",
        type=parse_positive,
        default=None,
        metavar="N",
        help="check only the first N selected op variants. Default: %(default)r",
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32", "both"),
        default="both",
        help="which checkers to run, by the dtype of their inputs. Default: %(default)r",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="OUT",
        help="write per-op rows and the summary here. Default: benchmarks/results/opinfo.json",
    )
    parser.add_argument(
        "--timeout",
        type=parse_seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up one check after this long (0: no limit). Default: %(default)r",
    )
    parser.add_argument(
        "--include-slow",
        action="store_true",
        help="also run the checks listed in SLOW_OPS (minutes each; pair with --timeout 0). "
        "Default: %(default)r",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=15,
        metavar="N",
        help="list the N slowest ops per checker (the JSON has every op's time). "
        "Default: %(default)r",
    )
    parser.add_argument(
        "--max-list",
        type=int,
        default=60,
        metavar="N",
        help="print at most N disagreements / false alarms / error groups per list. "
        "Default: %(default)r",
    )
    parser.add_argument(
        "--first-sample",
        action="store_true",
        help="check each op's very first sample, empty tensors included, instead of the "
        "first non-empty one. Default: %(default)r",
    )
    parser.add_argument(
        "--standin",
        action="store_true",
        help="run the 'ours' checkers on a stand-in built from torch's gradcheck "
        "(tests this script while gradcheck_kit is unfinished). Default: %(default)r",
    )
    parser.add_argument("--list-checkers", action="store_true", help="print the checkers and exit")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress lines on stderr. Default: %(default)r"
    )
    return parser


def _load_average() -> list[float] | None:
    # Timings on a shared machine are only as good as its load; keep it with them.
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _meta(args: argparse.Namespace, checkers: Sequence[str], ours: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": _load_average(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "ours_source": ours,
        "checkers": {n: CHECKERS[n].description for n in checkers},
        "baseline_torch_options": BASELINE,
        "loose_float32_options": LOOSE_F32,
        "ops_filter": args.ops,
        "limit": args.limit,
        "timeout_s": args.timeout,
        "device": "cpu",
        "sample": (
            "first sample of op.sample_inputs(cpu, dtype, requires_grad=True) whose "
            "differentiable inputs are all non-empty (of the first 20)"
        ),
    }


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.list_checkers:
        for name, checker in CHECKERS.items():
            print(f"{name:16s} {checker.dtype:8s} {checker.description}")
        return 0

    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    checkers = [n for n in args.checkers if CHECKERS[n].dtype in dtypes]
    ours_source = "not requested"
    if args.standin:
        use_standin()
    if any(CHECKERS[n].family == "ours" for n in checkers):
        try:
            ours_source = _load_ours().source
        except OursUnavailable as exc:
            ours_source = f"unavailable ({exc})"
            print(f"warning: skipping our checkers: {exc}", file=sys.stderr)
            checkers = [n for n in checkers if CHECKERS[n].family != "ours"]
    if not checkers:
        print("error: no checker left to run", file=sys.stderr)
        return 2
    dtypes = [d for d in dtypes if any(CHECKERS[n].dtype == d for n in checkers)]

    # torch and the op samples warn a lot (float32 inputs, deprecated ops); none of it
    # is about the comparison.
    warnings.simplefilter("ignore")
    load_start = time.perf_counter()
    ops = corpus.select_ops(corpus.load_op_db(), filters=args.ops, limit=args.limit)
    if not args.quiet:
        print(
            f"{len(ops)} op variants, checkers: {', '.join(checkers)}; "
            f"torch threads {torch.get_num_threads()} "
            f"(op_db loaded in {time.perf_counter() - load_start:.1f} s)",
            file=sys.stderr,
        )

    load_start_avg = _load_average()
    rows: list[dict[str, Any]] = []
    running: dict[str, Counter[str]] = {n: Counter() for n in checkers}
    start = time.perf_counter()
    for i, entry in enumerate(corpus.iter_entries(ops, dtypes, first_sample=args.first_sample), 1):
        row: dict[str, Any] = {
            "op": entry.name,
            "supports_forward_ad": entry.supports_forward_ad,
            "torch_suite_marks": entry.torch_suite_marks,
            "skipped": dict(entry.skipped),
            "inputs": {d: {"shapes": c.shapes, "numel": c.numel} for d, c in entry.cases.items()},
            "results": {},
        }
        for name in checkers:
            case = entry.cases.get(CHECKERS[name].dtype)
            if case is None:
                continue
            if entry.name in SLOW_OPS.get(name, ()) and not args.include_slow:
                outcome = Outcome("slow-skip", message="in SLOW_OPS (run with --include-slow)")
            else:
                outcome = run_one(CHECKERS[name], case, args.timeout)
            row["results"][name] = outcome.to_dict()
            running[name][outcome.verdict] += 1
        rows.append(row)
        if not args.quiet and (i % 50 == 0 or i == len(ops)):
            status = "; ".join(
                f"{n} " + " ".join(f"{k}={v}" for k, v in sorted(c.items()))
                for n, c in running.items()
            )
            print(
                f"[{i}/{len(ops)}] {time.perf_counter() - start:.1f} s  {status}",
                file=sys.stderr,
            )

    meta = _meta(args, checkers, ours_source)
    meta["wall_seconds"] = round(time.perf_counter() - start, 3)
    meta["load_average_start"] = load_start_avg
    summary = summarize(rows, checkers, args.top)
    print(format_summary(summary, meta, max_list=args.max_list))
    _write_json(args.json, {"meta": meta, "summary": summary, "rows": rows})
    print(f"wrote {args.json} (wall {meta['wall_seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
