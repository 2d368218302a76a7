"""Compose the text of results: the one place messages are written.

The shape follows torch.testing.assert_close (counts, greatest differences
with index and allowance) plus chex-style location and one actionable hint.
Imports no torch.
"""

from __future__ import annotations

from .results import GradCheckResult, PairResult

__all__ = ["PREFIX", "format_result", "reproduce_line"]

PREFIX = "[gradcheck]"
_MAX_PAIRS_SHOWN = 3


def _g(value: float) -> str:
    return f"{value:.4g}"


def _idx(index: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(i) for i in index) + ("," if len(index) == 1 else "") + ")"


def reproduce_line(result: GradCheckResult) -> str:
    """The call that repeats this check with the numbers it actually used."""
    fn = (
        "check_module_gradients(module"
        if result.check == "check_module_gradients"
        else (f"check_gradients({result.name}")
    )
    return (
        f"gradcheck_kit.{fn}, inputs, mode={result.mode!r}, dtype={result.dtype_policy!r}, "
        f"eps={result.eps:.3g}, atol={result.atol:.3g}, rtol={result.rtol:.3g}, "
        f"seed={result.seed}, rng={result.rng!r})"
    )


def _header(result: GradCheckResult) -> str:
    if result.mode == "fast":
        how = f"fast mode, {len(result.probes)} random projections"
    else:
        how = f"{result.mode} mode"
    return f"({result.check} of {result.name!r}, {how}, {result.dtype})"


def _pair_text(pair: PairResult) -> list[str]:
    lines = []
    pct = 100.0 * pair.mismatched / pair.total if pair.total else 0.0
    lines.append(f"Mismatched elements: {pair.mismatched} / {pair.total} ({pct:.1f}%)")
    if pair.worst:
        w = max(pair.worst, key=lambda e: e.abs_error)
        lines.append(
            f"Greatest absolute difference: {_g(w.abs_error)} at output index "
            f"{_idx(w.output_index)}, input index {_idx(w.input_index)} "
            f"(up to {w.allowed:.2g} allowed)"
        )
        r = max(pair.worst, key=lambda e: e.rel_error)
        lines.append(
            f"Greatest relative difference: {_g(r.rel_error)} at output index "
            f"{_idx(r.output_index)}, input index {_idx(r.input_index)}"
        )
    lines.append(f"The failure occurred for output {pair.output!r}, input {pair.input!r}")
    if pair.worst:
        lines.append("")
        lines.append(
            f"  {'d ' + pair.output + '[i] / d ' + pair.input + '[j]':<40} "
            f"{'analytic':>12} {'numeric':>12} {'|diff|':>10} {'allowed':>10}"
        )
        for w in pair.worst:
            where = f"i={_idx(w.output_index)} j={_idx(w.input_index)}"
            lines.append(
                f"  {where:<40} {w.analytic:>12.6g} {w.numeric:>12.6g} "
                f"{w.abs_error:>10.3g} {w.allowed:>10.3g}"
            )
    return lines


def format_result(result: GradCheckResult) -> str:
    """Render a result as the multi-line text of an assertion error or a log.

    Examples:
        >>> from gradcheck_kit._src.results import GradCheckResult
        >>> r = GradCheckResult(name="f", passed=True, status="passed", mode="full",
        ...     mode_requested="auto", dtype="float64", dtype_policy="float64", eps=1e-6,
        ...     atol=1e-5, rtol=1e-3, seed=0, rng="fixed")
        >>> format_result(r).splitlines()[0]
        "[gradcheck] Gradients match (check_gradients of 'f', full mode, float64)"
    """
    lines: list[str] = []
    if result.status == "nondeterministic":
        lines.append(f"{PREFIX} fn is not deterministic {_header(result)}")
        lines.append("")
        if result.hint:
            lines.append(result.hint)
    elif result.passed:
        lines.append(f"{PREFIX} Gradients match {_header(result)}")
        if result.pairs:
            lines.append(
                f"{len(result.pairs)} Jacobian block(s), "
                f"{sum(p.total for p in result.pairs)} entries; greatest absolute difference "
                f"{_g(result.max_abs_error)}, greatest relative difference "
                f"{_g(result.max_rel_error)}"
            )
        if result.probes:
            worst = max(result.probes, key=lambda p: abs(p.reverse - p.numeric))
            lines.append(
                f"{len(result.probes)} projections agree; largest |reverse - numeric| "
                f"{_g(abs(worst.reverse - worst.numeric))} (up to {worst.allowed:.2g} allowed)"
            )
    else:
        lines.append(f"{PREFIX} Gradients are not close! {_header(result)}")
        failing_probes = [p for p in result.probes if not p.passed]
        if failing_probes:
            lines.append("")
            lines.append(
                f"Projections failing: {len(failing_probes)} / {len(result.probes)} "
                f"(u^T J v by reverse mode, forward mode and finite differences)"
            )
            for n, p in enumerate(result.probes):
                if p.passed:
                    continue
                fwd = f", forward mode {p.forward:.6g}" if p.forward is not None else ""
                lines.append(
                    f"  probe {n}: reverse mode {p.reverse:.6g}, finite differences "
                    f"{p.numeric:.6g}{fwd} (|diff| {abs(p.reverse - p.numeric):.3g}, up to "
                    f"{p.allowed:.2g} allowed)"
                )
        failing = [p for p in result.pairs if not p.passed]
        for pair in failing[:_MAX_PAIRS_SHOWN]:
            lines.append("")
            lines += _pair_text(pair)
        if len(failing) > _MAX_PAIRS_SHOWN:
            lines.append("")
            lines.append(
                f"... and {len(failing) - _MAX_PAIRS_SHOWN} more mismatching block(s): "
                + ", ".join(f"{p.output!r}/{p.input!r}" for p in failing[_MAX_PAIRS_SHOWN:])
            )
        if result.hints:
            lines.append("")
            for h in result.hints:
                lines.append(f"Hint: {h.text}")
    for note in result.notes:
        lines.append(f"Note: {note}")
    if not result.passed:
        lines.append(f"Reproduce: {reproduce_line(result)}")
    return "\n".join(lines)
