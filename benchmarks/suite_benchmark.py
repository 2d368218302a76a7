#!/usr/bin/env python
"""Gradient checks as vision and scientific libraries write them: our checker against torch's.

Over 300 cases (``_suite_cases.py``: filters, colour conversions, warps, losses,
small CNNs, ODE integrations, linear algebra; float64, batch 1-2, images from
3×5×5 to 1×32×32) are checked side by side, in one process and one torch thread
by default, by

* ``kit-fast``   - ``gradcheck_kit.check_gradients(fn, inputs, mode="fast")``
* ``kit-auto``   - ``gradcheck_kit.check_gradients(fn, inputs)`` (mode "auto")
* ``torch-fast`` - ``torch.autograd.gradcheck(fn, inputs, fast_mode=True, raise_exception=False)``
* ``torch-full`` - the same with ``fast_mode=False``
* ``kit-full``   - ``check_gradients(..., mode="full")`` (only when selected)

Each check is timed with ``time.perf_counter`` (checkers in an order rotated per
case, ``torch.manual_seed(0)`` before each, fresh inputs each time). A second
pass measures, in a worker subprocess, the peak memory every check adds and the
peak of one plain forward+backward of the case (``_peak_memory.py``).

Run from the repository root::

    python benchmarks/suite_benchmark.py                     # everything (~tens of minutes)
    python benchmarks/suite_benchmark.py --categories linalg,ode --no-memory
    python benchmarks/suite_benchmark.py --cases 'cnn/*' --checkers kit-auto,torch-full

See the section on this script in ``benchmarks/README.md`` for how to read the output.
This is a script, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import _peak_memory as pm  # noqa: E402 - found through the sys.path entry above
import _suite_cases as suite  # noqa: E402

DEFAULT_JSON = _HERE / "results" / "suite.json"
SCHEMA = "gradcheck_kit.bench.suite/1"
DEFAULT_CHECKERS = ("kit-fast", "kit-auto", "torch-fast", "torch-full")
FWD_BWD = "fwd+bwd"
MIB = 1024 * 1024
KINDS = ("pass", "fail", "error", "timeout")


# --------------------------------------------------------------------------- outcomes


def _first_line(text: object) -> str:
    for line in str(text).strip().splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_first_line(exc)}"


@dataclass
class Outcome:
    """What one checker said about one case (``verdict``: pass, fail, error: ..., timeout)."""

    verdict: str
    seconds: float = 0.0
    mode: str | None = None
    status: str | None = None
    evaluations: int | None = None
    message: str | None = None

    @property
    def kind(self) -> str:
        return self.verdict.split(":", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"verdict": self.verdict, "seconds": round(self.seconds, 6)}
        for key in ("mode", "status", "evaluations", "message"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        keys = ("verdict", "seconds", "mode", "status", "evaluations", "message")
        return cls(**{k: data[k] for k in keys if k in data})


# --------------------------------------------------------------------------- checkers

_GK: Any = None


def _gk() -> Any:
    """``gradcheck_kit``, imported on first use (a broken package gives error verdicts)."""
    global _GK
    if _GK is None:
        if str(_REPO) not in sys.path:
            sys.path.append(str(_REPO))  # a fallback: an installed copy or PYTHONPATH comes first
        import gradcheck_kit

        _GK = gradcheck_kit
    return _GK


def _kit(fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], mode: str | None) -> Outcome:
    options = {} if mode is None else {"mode": mode}
    result = _gk().check_gradients(fn, inputs, **options)
    passed = bool(result.passed)
    outcome = Outcome("pass" if passed else "fail")
    with contextlib.suppress(Exception):
        outcome.mode = str(result.mode)
    with contextlib.suppress(Exception):
        outcome.status = str(result.status)
    with contextlib.suppress(Exception):
        outcome.evaluations = int(result.evaluations)
    if not passed:
        try:
            outcome.message = _first_line(result.summary())
        except Exception as exc:
            outcome.message = f"(summary() raised {_error_text(exc)})"
    return outcome


def _torch(fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], fast: bool) -> Outcome:
    ok = torch.autograd.gradcheck(fn, inputs, fast_mode=fast, raise_exception=False)
    return Outcome("pass" if ok else "fail")


CHECKERS: dict[str, Callable[[Callable[..., Any], tuple[torch.Tensor, ...]], Outcome]] = {
    "kit-fast": lambda fn, inputs: _kit(fn, inputs, "fast"),
    "kit-auto": lambda fn, inputs: _kit(fn, inputs, None),
    "torch-fast": lambda fn, inputs: _torch(fn, inputs, True),
    "torch-full": lambda fn, inputs: _torch(fn, inputs, False),
    "kit-full": lambda fn, inputs: _kit(fn, inputs, "full"),
}
DESCRIPTIONS = {
    "kit-fast": 'gradcheck_kit.check_gradients(fn, inputs, mode="fast")',
    "kit-auto": "gradcheck_kit.check_gradients(fn, inputs)  # mode auto",
    "torch-fast": "torch.autograd.gradcheck(fn, inputs, fast_mode=True, raise_exception=False)",
    "torch-full": "torch.autograd.gradcheck(fn, inputs, fast_mode=False, raise_exception=False)",
    "kit-full": 'gradcheck_kit.check_gradients(fn, inputs, mode="full")',
}


def run_check(
    checker: str, fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], timeout: float
) -> Outcome:
    """One timed check; exceptions and timeouts become verdicts."""
    torch.manual_seed(0)
    start = time.perf_counter()
    try:
        with pm.time_limit(timeout):
            outcome = CHECKERS[checker](fn, inputs)
    except pm.CallTimeout:
        limit = (
            f"longer than {timeout:g} s" if timeout > 0 else "stopped by the caller's time limit"
        )
        outcome = Outcome("timeout", message=limit)
    except Exception as exc:
        outcome = Outcome(f"error: {_error_text(exc)}")
    outcome.seconds = time.perf_counter() - start
    return outcome


def _warmup(checkers: Sequence[str]) -> dict[str, float]:
    """Run every checker on two small functions, so one-time costs are not charged to a case.

    One-time costs (lazy imports, first use of vmap or forward-mode AD: about 0.5 s
    for some engines) are paid once per process; the seconds each checker spent
    here are returned and reported apart.
    """
    tiny = torch.linspace(0.1, 0.9, 6, dtype=torch.float64).view(2, 3).requires_grad_()
    image = torch.linspace(0.05, 0.95, 75, dtype=torch.float64).view(1, 3, 5, 5)
    image = (image + 0.1 * torch.sin(37 * image)).requires_grad_()
    calls: list[tuple[Callable[..., Any], tuple[torch.Tensor, ...]]] = [
        (lambda t: (t.sin() * t).sum(-1), (tiny,)),
        (suite.sobel_magnitude, (image,)),
    ]
    seconds = {}
    for name in checkers:
        seconds[name] = round(sum(run_check(name, fn, args, 0).seconds for fn, args in calls), 4)
    return seconds


def _leaves(obj: Any) -> list[Any]:
    if isinstance(obj, (tuple, list)):
        return [leaf for item in obj for leaf in _leaves(item)]
    if isinstance(obj, dict):
        return [leaf for item in obj.values() for leaf in _leaves(item)]
    return [obj]


def forward_backward(fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """One plain forward and backward: ``fn(*inputs)``, sum of the outputs, ``.backward()``."""
    out = fn(*inputs)
    parts = [t.sum() for t in _leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
    if parts:
        torch.stack(parts).sum().backward()
    return {"verdict": "ok"}


# --------------------------------------------------------------------------- memory worker


_WARMED: set[str] = set()


def memory_job(job: dict[str, Any]) -> Callable[[], Any]:
    """Runner of the memory worker: prepare one job (not measured), return what is measured."""
    if job.get("kind") == "warmup":
        return lambda: _warmup(job["checkers"])
    case = suite.case_by_name(job["case"])
    fn = case.fn
    if case.name not in _WARMED:  # one-time costs of the case's ops are nobody's peak
        _WARMED.add(case.name)
        with contextlib.suppress(Exception):
            forward_backward(fn, case.inputs())
    inputs = case.inputs()
    checker = job["checker"]
    if checker == FWD_BWD:
        return lambda: forward_backward(fn, inputs)

    def call() -> dict[str, Any]:
        # no inner time limit: the worker's own alarm ends a check that runs too long
        return run_check(checker, fn, inputs, 0).to_dict()

    return call


def _memory_record(rec: dict[str, Any]) -> dict[str, Any]:
    """Flatten a worker answer: outcome (ok/oom/timeout/killed/...), peak, the check's verdict."""
    out: dict[str, Any] = {"outcome": rec.get("outcome", "?"), "peak_bytes": rec.get("peak_bytes")}
    for key in ("rss_before", "message"):
        if key in rec:
            out[key] = rec[key]
    result = rec.get("result") or {}
    for key in ("verdict", "mode", "evaluations"):
        if key in result:
            out[key] = result[key]
    verdict = str(out.get("verdict", "")).lower()
    if verdict == "timeout":  # the worker's alarm, caught by run_check
        out["outcome"] = "timeout"
    elif any(s in verdict for s in ("can't allocate memory", "memoryerror", "out of memory")):
        out["outcome"] = "oom"  # the check caught the failed allocation and reported an error
        out["message"] = out["verdict"]
    return out


# --------------------------------------------------------------------------- helpers


def _git_commit() -> dict[str, Any]:
    info: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    with contextlib.suppress(Exception):
        # read-only: --no-optional-locks keeps git from refreshing the index
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        info["dirty"] = bool(status.strip())
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


_BUSY_CODE = r"""
import signal, sys, time
import torch
torch.set_num_threads(1)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
signal.signal(signal.SIGINT, signal.SIG_IGN)
a = torch.randn(256, 256)
b = torch.randn(256, 256)
n, start = 0, time.perf_counter()
while not stop:
    a @ b
    n += 1
print(n, time.perf_counter() - start, flush=True)
"""


class BusyNeighbour:
    """A second process that keeps one core busy (1-thread float32 256×256 matmuls)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.report: dict[str, Any] = {}

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BUSY_CODE],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
        )
        self.report = {"pid": self.proc.pid}
        print(f"busy: started a 1-thread matmul loop in pid {self.proc.pid}", file=sys.stderr)

    def stop(self) -> dict[str, Any]:
        proc, self.proc = self.proc, None
        if proc is None:
            return self.report
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        with contextlib.suppress(ValueError, IndexError):
            n, seconds = out.split()[:2]
            self.report.update(matmuls=int(n), seconds=round(float(seconds), 1))
        self.report["exit_code"] = proc.returncode
        return self.report


def _mib(n: float | None) -> str:
    return "–" if n is None else f"{n / MIB:.1f}"


def _secs(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _ratio(a: float, b: float) -> str:
    return "–" if b <= 0 else f"{a / b:.2f}×"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------- passes


def timing_pass(
    cases: Sequence[suite.Case], checkers: Sequence[str], timeout: float
) -> tuple[dict[str, dict[str, Outcome]], dict[str, float]]:
    results: dict[str, dict[str, Outcome]] = {}
    warmup = _warmup(checkers)
    print(f"warm-up seconds per checker: {warmup}", file=sys.stderr)
    start = time.perf_counter()
    for i, case in enumerate(cases):
        k = i % len(checkers)
        order = [*checkers[k:], *checkers[:k]]
        row: dict[str, Outcome] = {}
        try:
            fn = case.fn
        except Exception as exc:  # a network that cannot be built: every checker errs
            for name in order:
                row[name] = Outcome(f"error: setup {_error_text(exc)}")
        else:
            with contextlib.suppress(Exception):  # untimed: first-call costs of the ops
                forward_backward(fn, case.inputs())
            for name in order:
                inputs = case.inputs()
                row[name] = run_check(name, fn, inputs, timeout)
                del inputs
        gc.collect()
        results[case.name] = {name: row[name] for name in checkers}
        brief = "  ".join(f"{n} {row[n].seconds:.3g}s {row[n].verdict[:40]}" for n in checkers)
        print(
            f"[{i + 1:4d}/{len(cases)} {time.perf_counter() - start:7.0f}s] {case.name}  {brief}",
            file=sys.stderr,
            flush=True,
        )
    return results, warmup


def memory_pass(
    cases: Sequence[suite.Case],
    checkers: Sequence[str],
    *,
    threads: int,
    timeout: float,
    memory_limit_gb: float,
    log: Path,
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Any]]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    start = time.perf_counter()
    worker = pm.PeakMemoryWorker(
        "suite_benchmark:memory_job",
        memory_limit_gb=memory_limit_gb,
        threads=threads,
        timeout=timeout,
        log=log,
        warmup_job={"kind": "warmup", "checkers": list(checkers)},
    )
    with worker:
        for i, case in enumerate(cases):
            k = i % len(checkers)
            order = [FWD_BWD, *checkers[k:], *checkers[:k]]
            row = {}
            for name in order:
                rec = worker.measure({"kind": "check", "case": case.name, "checker": name})
                row[name] = _memory_record(rec)
            results[case.name] = {n: row[n] for n in [FWD_BWD, *checkers]}
            brief = "  ".join(
                f"{n} {_mib(row[n]['peak_bytes'])}MiB"
                + ("" if row[n]["outcome"] == "ok" else f" {row[n]['outcome']}")
                for n in [FWD_BWD, *checkers]
            )
            print(
                f"[mem {i + 1:4d}/{len(cases)} {time.perf_counter() - start:7.0f}s] "
                f"{case.name}  {brief}",
                file=sys.stderr,
                flush=True,
            )
    info = {
        "worker_env": dict(pm.WORKER_ENV),
        "memory_limit_gb": memory_limit_gb,
        "worker_starts": worker.starts,
        "worker_deaths": worker.deaths,
        "address_space_cap_bytes": worker.info.get("as_cap"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return results, info


# --------------------------------------------------------------------------- summary


def summarize(
    cases: Sequence[suite.Case],
    checkers: Sequence[str],
    timing: dict[str, dict[str, Outcome]] | None,
    memory: dict[str, dict[str, dict[str, Any]]] | None,
) -> dict[str, Any]:
    groups: dict[str, list[suite.Case]] = {}
    for case in cases:
        groups.setdefault(case.category, []).append(case)
    groups["total"] = list(cases)
    summary: dict[str, Any] = {}
    for group, members in groups.items():
        entry: dict[str, Any] = {"cases": len(members)}
        if timing:
            secs = {c: sum(timing[m.name][c].seconds for m in members) for c in checkers}
            entry["seconds"] = {c: round(s, 3) for c, s in secs.items()}
            for kit in ("kit-fast", "kit-auto", "kit-full"):
                if kit in secs and "torch-fast" in secs and secs["torch-fast"] > 0:
                    entry[f"{kit}/torch-fast"] = round(secs[kit] / secs["torch-fast"], 3)
            if "kit-auto" in checkers:
                modes = Counter(
                    timing[m.name]["kit-auto"].mode or "none"
                    for m in members
                    if timing[m.name]["kit-auto"].kind in ("pass", "fail")
                )
                entry["kit-auto modes"] = dict(modes)
            entry["verdicts"] = {
                c: dict(Counter(timing[m.name][c].kind for m in members)) for c in checkers
            }
        if memory:
            peaks: dict[str, Any] = {}
            ratios: dict[str, Any] = {}
            for c in [FWD_BWD, *checkers]:
                known = [
                    (memory[m.name][c]["peak_bytes"], m.name)
                    for m in members
                    if memory[m.name][c].get("peak_bytes") is not None
                ]
                if known:
                    top = max(known)
                    peaks[c] = {"max_bytes": top[0], "case": top[1]}
                if c == FWD_BWD:
                    continue
                rs = []
                for m in members:
                    peak = memory[m.name][c].get("peak_bytes")
                    base = memory[m.name][FWD_BWD].get("peak_bytes")
                    if peak is not None and base is not None:
                        rs.append(peak / max(base, MIB))
                if rs:
                    ratios[c] = {
                        "median": round(statistics.median(rs), 2),
                        "max": round(max(rs), 2),
                    }
            entry["peak"] = peaks
            entry["peak_in_fwd_bwd"] = ratios
            entry["memory_outcomes"] = {
                c: dict(Counter(memory[m.name][c]["outcome"] for m in members))
                for c in [FWD_BWD, *checkers]
            }
        summary[group] = entry
    return summary


def _verdict_of(
    name: str,
    checker: str,
    timing: dict[str, dict[str, Outcome]] | None,
    memory: dict[str, dict[str, dict[str, Any]]] | None,
) -> str:
    if timing:
        return timing[name][checker].verdict
    if memory:
        rec = memory[name][checker]
        return rec.get("verdict") or rec["outcome"]
    return "?"


def disagreements(
    cases: Sequence[suite.Case],
    checkers: Sequence[str],
    timing: dict[str, dict[str, Outcome]] | None,
    memory: dict[str, dict[str, dict[str, Any]]] | None,
) -> list[dict[str, str]]:
    if "torch-full" not in checkers:
        return []
    kits = [c for c in checkers if c.startswith("kit-")]
    rows = []
    for case in cases:
        verdicts = {c: _verdict_of(case.name, c, timing, memory) for c in checkers}
        ref = verdicts["torch-full"].split(":", 1)[0]
        if any(verdicts[k].split(":", 1)[0] != ref for k in kits):
            rows.append({"case": case.name, **verdicts})
    return rows


def _kit_origin(meta: dict[str, Any]) -> str:
    """Where gradcheck_kit came from, when not from this checkout (a snapshot on PYTHONPATH)."""
    kit = meta.get("gradcheck_kit", {})
    if "import_error" in kit:
        return f", gradcheck_kit not importable ({kit['import_error'][:80]})"
    path = Path(kit.get("path", "")).resolve()
    if _REPO in path.parents:
        return ""
    return f", gradcheck_kit from {path.parent}"


def render(
    meta: dict[str, Any],
    cases: Sequence[suite.Case],
    checkers: Sequence[str],
    timing: dict[str, dict[str, Outcome]] | None,
    memory: dict[str, dict[str, dict[str, Any]]] | None,
    summary: dict[str, Any],
    disagree: list[dict[str, str]],
    top: int,
) -> str:
    out: list[str] = []
    load = f"load average {meta.get('loadavg_before')} → {meta.get('loadavg_after')}"
    out.append(
        f"Suite benchmark: {len(cases)} cases, torch {meta['torch']}, "
        f"{meta['threads']} thread(s), {meta['cpu_count']} CPUs, {load}, "
        f"busy neighbour: {'yes' if meta['busy'] else 'no'}, "
        f"commit {str(meta.get('git', {}).get('commit', '?'))[:10]}"
        + (" (dirty)" if meta.get("git", {}).get("dirty") else "")
        + _kit_origin(meta)
    )
    out.append("")
    groups = [g for g in (*suite.CATEGORIES, "total") if g in summary]

    def label(g: str) -> str:
        return f"**{g}**" if g == "total" else g

    if timing:
        header = ["category", "cases", *(f"{c} s" for c in checkers)]
        kit_ratios = [k for k in ("kit-fast", "kit-auto", "kit-full") if k in checkers]
        if "torch-fast" in checkers:
            header += [f"{k} / torch-fast" for k in kit_ratios]
        if "kit-auto" in checkers:
            header.append("kit-auto full / fast")
        rows = []
        for g in groups:
            e = summary[g]
            row: list[Any] = [label(g), e["cases"], *(_secs(e["seconds"][c]) for c in checkers)]
            if "torch-fast" in checkers:
                row += [_ratio(e["seconds"][k], e["seconds"]["torch-fast"]) for k in kit_ratios]
            if "kit-auto" in checkers:
                modes = e.get("kit-auto modes", {})
                row.append(f"{modes.get('full', 0)} / {modes.get('fast', 0)}")
            rows.append(row)
        out.append("### Time (sum of per-check wall times, seconds)")
        out.append("")
        out += _table(header, rows)
        out.append("")
        if meta.get("warmup_seconds"):
            out.append(
                "Not included: one-time costs, paid in an untimed warm-up on two small "
                "functions before the first case: "
                + ", ".join(f"{c} {s:.2f} s" for c, s in meta["warmup_seconds"].items())
                + "."
            )
            out.append("")
    if memory:
        out.append("### Peak memory a check adds (MiB, largest over the category's cases)")
        out.append("")
        header = ["category", "fwd+bwd", *checkers]
        rows = []
        for g in groups:
            peaks = summary[g]["peak"]
            rows.append(
                [label(g), *(_mib(peaks.get(c, {}).get("max_bytes")) for c in [FWD_BWD, *checkers])]
            )
        out += _table(header, rows)
        out.append("")
        out.append(
            "### Peak of a check in forward+backward peaks (median / max over the cases; "
            "forward+backward peak counted as at least 1 MiB)"
        )
        out.append("")
        rows = []
        for g in groups:
            r = summary[g]["peak_in_fwd_bwd"]
            rows.append(
                [
                    label(g),
                    *(f"{r[c]['median']:g} / {r[c]['max']:g}" if c in r else "–" for c in checkers),
                ]
            )
        out += _table(["category", *checkers], rows)
        out.append("")
        largest = summary["total"]["peak"]
        out.append(
            "Largest peaks: "
            + "; ".join(
                f"{c} {_mib(largest[c]['max_bytes'])} MiB ({largest[c]['case']})"
                for c in [FWD_BWD, *checkers]
                if c in largest
            )
        )
        out.append("")
    out.append(
        "### Verdicts (pass / fail / error / timeout"
        + (", from the timing pass)" if timing else ", from the memory pass)")
    )
    out.append("")
    rows = []
    for g in groups:
        members = [c for c in cases if g == "total" or c.category == g]
        cells = []
        for ch in checkers:
            counts = Counter(
                _verdict_of(m.name, ch, timing, memory).split(":", 1)[0] for m in members
            )
            if not timing:  # memory-pass verdicts: "ok"/"oom"/... outcomes count as errors
                counts = Counter(k if k in KINDS else "error" for k in counts.elements())
            cells.append(" / ".join(str(counts.get(k, 0)) for k in KINDS))
        rows.append([label(g), *cells])
    out += _table(["category", *checkers], rows)
    out.append("")
    if "torch-full" in checkers:
        out.append(f"### Verdicts that differ from torch-full ({len(disagree)})")
        out.append("")
        if disagree:
            out += _table(
                ["case", *checkers],
                [[d["case"], *(d[c][:70] for c in checkers)] for d in disagree],
            )
        else:
            out.append("none")
        out.append("")
        ref_bad = [
            (c.name, _verdict_of(c.name, "torch-full", timing, memory))
            for c in cases
            if _verdict_of(c.name, "torch-full", timing, memory) != "pass"
        ]
        out.append(f"torch-full does not pass {len(ref_bad)} case(s)" + (":" if ref_bad else "."))
        out += [f"- `{n}`: {v}" for n, v in ref_bad]
        out.append("")
    if memory:
        bad = [
            (c.name, ch, memory[c.name][ch])
            for c in cases
            for ch in [FWD_BWD, *checkers]
            if memory[c.name][ch]["outcome"] != "ok"
        ]
        if bad:
            out.append(f"### Memory pass: measurements that did not end normally ({len(bad)})")
            out.append("")
            out += _table(
                ["case", "checker", "outcome", "peak MiB", "message"],
                [
                    [n, ch, r["outcome"], _mib(r.get("peak_bytes")), str(r.get("message", ""))[:80]]
                    for n, ch, r in bad
                ],
            )
            out.append("")
    if timing:
        for ch in checkers:
            ranked = sorted(cases, key=lambda c: -timing[c.name][ch].seconds)[:top]
            out.append(f"### {top} slowest cases: {ch}")
            out.append("")
            rows = []
            for i, c in enumerate(ranked, 1):
                o = timing[c.name][ch]
                rows.append(
                    [i, c.name, _secs(o.seconds), o.verdict[:60], o.mode or "", o.evaluations or ""]
                )
            out += _table(["#", "case", "s", "verdict", "mode", "evaluations"], rows)
            out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkers",
        default=",".join(DEFAULT_CHECKERS),
        help=f"comma list from {', '.join(CHECKERS)} (or 'all')",
    )
    parser.add_argument(
        "--categories", default="", help=f"comma list of {', '.join(suite.CATEGORIES)}"
    )
    parser.add_argument(
        "--cases", default="", help="comma list of substrings or shell patterns of case names"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N selected cases")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per check (0: none)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="output file")
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory pass")
    parser.add_argument(
        "--memory-limit-gb", type=float, default=8.0, help="address-space headroom of the worker"
    )
    parser.add_argument("--top", type=int, default=10, help="slowest cases listed per checker")
    parser.add_argument("--list", action="store_true", help="list the selected cases and stop")
    args = parser.parse_args(argv)
    names = list(CHECKERS) if args.checkers == "all" else _csv(args.checkers)
    unknown = [n for n in names if n not in CHECKERS]
    if unknown or not names:
        parser.error(f"unknown checker(s) {unknown}; known: {', '.join(CHECKERS)}")
    args.checker_names = list(dict.fromkeys(names))
    if args.no_memory and args.memory_only:
        parser.error("--no-memory and --memory-only exclude each other")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        cases = suite.select_cases(
            _csv(args.categories) or None, _csv(args.cases) or None, args.limit
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not cases:
        print("no case selected", file=sys.stderr)
        return 2
    if args.list:
        for case in cases:
            print(case.name)
        print(f"{len(cases)} cases", file=sys.stderr)
        return 0
    checkers = args.checker_names
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": _loadavg(),
        "busy": bool(args.busy),
        "git": _git_commit(),
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k != "checker_names"
        },
        "checkers": {c: DESCRIPTIONS[c] for c in checkers},
    }
    try:
        kit = _gk()
        meta["gradcheck_kit"] = {"version": getattr(kit, "__version__", "?"), "path": kit.__file__}
    except Exception as exc:
        meta["gradcheck_kit"] = {"import_error": _error_text(exc)}
    busy = BusyNeighbour() if args.busy else None
    timing = memory = None
    started = time.perf_counter()
    try:
        if busy is not None:
            busy.start()
        if not args.memory_only:
            timing, meta["warmup_seconds"] = timing_pass(cases, checkers, args.timeout)
            meta["timing_seconds"] = round(time.perf_counter() - started, 1)
        if not args.no_memory:
            memory, meta["memory"] = memory_pass(
                cases,
                checkers,
                threads=args.threads,
                timeout=args.timeout,
                memory_limit_gb=args.memory_limit_gb,
                log=args.json.with_suffix(".worker.log"),
            )
    finally:
        if busy is not None:
            meta["busy_neighbour"] = busy.stop()
            report = meta["busy_neighbour"]
            print(
                f"busy: the neighbour (pid {report.get('pid')}) ran "
                f"{report.get('matmuls', '?')} matmuls in {report.get('seconds', '?')} s",
                file=sys.stderr,
            )
    meta["loadavg_after"] = _loadavg()
    meta["wall_seconds"] = round(time.perf_counter() - started, 1)
    summary = summarize(cases, checkers, timing, memory)
    disagree = disagreements(cases, checkers, timing, memory)
    text = render(meta, cases, checkers, timing, memory, summary, disagree, args.top)
    if busy is not None:
        r = meta["busy_neighbour"]
        text += (
            f"\nA busy neighbour ran during the whole run: pid {r.get('pid')}, "
            f"{r.get('matmuls', '?')} 1-thread 256×256 matmuls in {r.get('seconds', '?')} s.\n"
        )
    print(text)
    rows = []
    for case in cases:
        row: dict[str, Any] = {
            "name": case.name,
            "category": case.category,
            "checked_elements": case.n_checked(),
            "checks": {},
        }
        for c in checkers:
            entry: dict[str, Any] = timing[case.name][c].to_dict() if timing else {}
            if memory:
                entry["memory"] = memory[case.name][c]
            row["checks"][c] = entry
        if memory:
            row["fwd_bwd"] = memory[case.name][FWD_BWD]
        rows.append(row)
    document = {
        "schema": SCHEMA,
        "meta": meta,
        "summary": summary,
        "disagreements": disagree,
        "cases": rows,
        "markdown": text,
    }
    args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
