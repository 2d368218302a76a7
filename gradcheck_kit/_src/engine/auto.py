"""``mode="auto"``: full mode where it costs about what fast mode costs, fast mode elsewhere.

Decided by measured cost, not by counting entries. Full mode takes ``2 n``
perturbed evaluations and ``m`` backward rows where fast mode takes a few of
each; batched, a row costs at most what one plain call of ``fn`` costs (timed
by the repeat call). So:

* when full mode's extra rows cost at most :data:`AUTO_FULL_EXTRA_SECONDS` at
  that price, full mode runs at once;
* otherwise fast mode runs, and its timed batches predict full mode's cost
  (per-row times, the fixed cost of a batch, and the judging of ``n m``
  entries); full mode runs too when that prediction is at most
  :data:`AUTO_FULL_FACTOR` times what fast mode took, or, when fast mode found
  a wrong gradient, when the complete picture (every wrong entry, the hints)
  costs at most :data:`AUTO_DIAGNOSIS_SECONDS` or :data:`AUTO_DIAGNOSIS_FACTOR`
  times fast mode.

Either way ``result.notes`` records the choice and the figures behind it.
"""

from __future__ import annotations

import time
from typing import Final

from .fast import run_fast
from .full import run_full
from .problem import Outcome, Problem

__all__ = [
    "run_auto",
    "AUTO_FULL_EXTRA_SECONDS",
    "AUTO_SMALL_ROWS",
    "AUTO_SMALL_EXTRA_SECONDS",
    "AUTO_FULL_FACTOR",
    "AUTO_DIAGNOSIS_SECONDS",
    "AUTO_DIAGNOSIS_FACTOR",
]

AUTO_FULL_EXTRA_SECONDS: Final = 1e-3
# A small Jacobian (at most this many rows of evaluations) takes full mode unless that
# would cost over AUTO_SMALL_EXTRA_SECONDS more: the choice, and so the verdict, of a
# small check must not depend on how busy the machine was when its calls were timed.
AUTO_SMALL_ROWS: Final = 64
AUTO_SMALL_EXTRA_SECONDS: Final = 20e-3
AUTO_FULL_FACTOR: Final = 0.5
AUTO_DIAGNOSIS_SECONDS: Final = 2.0
AUTO_DIAGNOSIS_FACTOR: Final = 20.0
# Seconds full mode spends judging one Jacobian entry (a dozen elementwise passes over
# float64 blocks), measured on a 2-core x86 machine: 0.1 µs.
_JUDGING_SECONDS_PER_ENTRY: Final = 1e-7


def _rows(n: int, m: int, probes: int) -> tuple[int, int]:
    """Rows of evaluations (perturbed and backward) full mode and fast mode take."""
    full = 2 * n + m + 3
    fast = (2 * probes + 1) + (probes + 2) + 2  # differences, backward rows, jvp
    return full, fast


def run_auto(problem: Problem, probes: int) -> tuple[str, Outcome]:
    """Run the cheaper mode, or fast mode then full mode; returns the mode reported."""
    point = problem.point
    n, m = point.n_in, point.n_out
    full_rows, fast_rows = _rows(n, m, probes)
    extra = max(0, full_rows - fast_rows) * problem.point.call_seconds
    extra += n * m * _JUDGING_SECONDS_PER_ENTRY
    fits = point.minimum_bytes(full=True) <= point.budget.available
    small = full_rows <= AUTO_SMALL_ROWS and extra <= AUTO_SMALL_EXTRA_SECONDS
    if (extra <= AUTO_FULL_EXTRA_SECONDS or small) and fits:
        problem.notes.append(
            f"auto: full mode ({n:,} input and {m:,} output entries: {full_rows:,} rows of "
            f"evaluations at most {extra * 1e3:.3g} ms more than fast mode)"
        )
        return "full", run_full(problem)
    calls_before = point.ev.calls
    fast_hints, fast_notes = len(problem.hints), len(problem.notes)
    start = time.perf_counter()
    fast = run_fast(problem, probes)
    spent = time.perf_counter() - start
    predicted = _predict_full(problem, fast, spent)
    if fast.passed:
        allowed = AUTO_FULL_FACTOR * spent
    else:
        allowed = max(AUTO_DIAGNOSIS_SECONDS, AUTO_DIAGNOSIS_FACTOR * spent)
    figures = (
        f"fast mode took {spent * 1e3:.3g} ms; full mode ({2 * n:,} perturbed evaluations, "
        f"{m:,} backward rows, {n * m:,} entries) was predicted at {predicted * 1e3:.3g} ms, "
        f"{'within' if predicted <= allowed else 'over'} the budget of {allowed * 1e3:.3g} ms"
    )
    if predicted > allowed or not fits:
        if not fits:
            figures += "; full mode's smallest block does not fit max_memory"
        problem.notes.append(f"auto: fast mode ({figures})")
        return "fast", fast
    # full mode's verdict replaces fast mode's, with its own hints and notes
    del problem.hints[fast_hints:]
    del problem.notes[fast_notes:]
    problem.notes.append(
        f"auto: full mode after fast mode {'passed' if fast.passed else 'failed'} in "
        f"{point.ev.calls - calls_before} evaluations ({figures})"
    )
    return "full", run_full(problem)


def _predict_full(problem: Problem, fast: Outcome, spent: float) -> float:
    """Seconds full mode would take, from fast mode's timed batches.

    A batch of ``r`` rows costs ``a + r b`` with ``b`` at most a plain call: the
    fast batch fixes ``a + r_fast b``, so ``r`` rows cost at most that plus
    ``(r - r_fast) * min(plain call, fast batch / r_fast)``.
    """
    point = problem.point
    n, m = point.n_in, point.n_out
    plain = problem.point.call_seconds
    timing = fast.timing
    per_difference = min(plain, timing.difference_seconds / max(1, timing.difference_rows))
    per_backward = min(3 * plain, timing.backward_seconds / max(1, timing.backward_rows))
    differences = (
        timing.difference_seconds + max(0, 2 * n - timing.difference_rows) * per_difference
    )
    backward = timing.backward_seconds + max(0, m + 3 - timing.backward_rows) * per_backward
    fixed = max(0.0, spent - timing.difference_seconds - timing.backward_seconds)
    return differences + backward + fixed + n * m * _JUDGING_SECONDS_PER_ENTRY
