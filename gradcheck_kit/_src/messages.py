"""Compose the text of results: the one place messages are written.

The shape follows torch.testing.assert_close (counts, greatest differences
with index and allowance) plus chex-style location and one actionable hint.
Each ``format_*`` function registers itself as ``summary()`` of its kind of
result (:func:`~.results.summarizes`): the results are data and never import
this module, which needs their types only for annotations. Imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .results import summarizes

if TYPE_CHECKING:
    from .results import (
        DdpCheckResult,
        DdpLeaf,
        FunctionAuditResult,
        GradcheckResult,
        ManualCheckResult,
        ManualPairResult,
        PairResult,
        SameTrainingResult,
        ThreeWayElement,
    )

__all__ = [
    "PREFIX",
    "format_result",
    "reproduce_line",
    "format_manual_result",
    "odd_one_out_text",
    "odd_one_out_cause",
    "reproduce_manual_line",
    "format_second_order",
    "format_audit_result",
    "format_training_result",
]

PREFIX = "[gradcheck]"
_MAX_PAIRS_SHOWN = 3


def _g(value: float) -> str:
    return f"{value:.4g}"


def _idx(index: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(i) for i in index) + ("," if len(index) == 1 else "") + ")"


def _settings_args(result: GradcheckResult | ManualCheckResult) -> str:
    """The numbers a check ran with, as the keyword arguments that repeat it."""
    return (
        f"mode={result.mode!r}, dtype={result.dtype_policy!r}, eps={result.eps:.3g}, "
        f"atol={result.atol:.3g}, rtol={result.rtol:.3g}, seed={result.seed}, rng={result.rng!r}"
    )


def reproduce_line(result: GradcheckResult) -> str:
    """The call that repeats this check with the numbers it actually used."""
    fn = (
        "check_module_gradients(module"
        if result.check == "check_module_gradients"
        else (f"check_gradients({result.name}")
    )
    return f"gradcheck_kit.{fn}, inputs, {_settings_args(result)})"


def _header(result: GradcheckResult) -> str:
    if result.mode == "fast":
        k = len(result.probes)
        how = f"fast mode, {k} random projection{'s' if k != 1 else ''}"
    else:
        how = f"{result.mode} mode"
    return f"({result.check} of {result.name!r}, {how}, {result.dtype})"


def _pair_text(pair: PairResult, projected: bool = False) -> list[str]:
    """A block's mismatch; ``projected``: one entry fast mode found by bisection, not a count."""
    lines = []
    greatest = "Greatest "
    if projected:
        # One entry a failing projection was narrowed down to: "1 / 1 (100%)" would
        # read as a count of wrong entries, which fast mode never makes.
        lines.append(
            "Wrong entry, found by bisecting the failing projection (fast mode does not "
            "count wrong entries; mode='full' lists them all):"
        )
        greatest = ""
    else:
        pct = 100.0 * pair.mismatched / pair.total if pair.total else 0.0
        lines.append(f"Mismatched elements: {pair.mismatched} / {pair.total} ({pct:.1f}%)")
    if pair.worst:
        w = max(pair.worst, key=lambda e: e.abs_error)
        lines.append(
            f"{greatest}{'absolute' if greatest else 'Absolute'} difference: {_g(w.abs_error)} "
            f"at output index {_idx(w.output_index)}, input index {_idx(w.input_index)} "
            f"(up to {w.allowed:.2g} allowed)"
        )
        r = max(pair.worst, key=lambda e: e.rel_error)
        lines.append(
            f"{greatest}{'relative' if greatest else 'Relative'} difference: {_g(r.rel_error)} "
            f"at output index {_idx(r.output_index)}, input index {_idx(r.input_index)}"
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


# Statuses where no derivative was compared: the header says why.
_NO_VERDICT = {
    "nondeterministic": "fn is not deterministic",
    "shape_changed": "fn's outputs change shape under a small step: gradients cannot be checked",
}


@summarizes("gradient")
def format_result(result: GradcheckResult) -> str:
    """Render a result as the multi-line text of an assertion error or a log.

    Examples:
        >>> from gradcheck_kit._src.results import GradcheckResult
        >>> r = GradcheckResult(name="f", passed=True, status="passed", mode="full",
        ...     mode_requested="auto", dtype="float64", dtype_policy="float64", eps=1e-6,
        ...     atol=1e-5, rtol=1e-3, seed=0, rng="fixed")
        >>> format_result(r).splitlines()[0]
        "[gradcheck] Gradients match (check_gradients of 'f', full mode, float64)"
    """
    lines: list[str] = []
    if result.status in _NO_VERDICT:
        lines.append(f"{PREFIX} {_NO_VERDICT[result.status]} {_header(result)}")
        lines.append("")
        if result.hint:
            lines.append(result.hint)
    elif result.status == "empty":
        lines.append(f"{PREFIX} Nothing to check {_header(result)}")
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
            k = len(result.probes)
            of = f" of {result.entries:,} entries" if result.entries else ""
            lines.append(
                f"The projected check differs: {len(failing_probes)} of {k} random "
                f"projection{'s' if k != 1 else ''}{of} (u^T J v by reverse mode, forward mode "
                f"and finite differences)"
            )
            for n, p in enumerate(result.probes):
                if p.passed:
                    continue
                fwd = ""
                if p.forward is not None:
                    off = abs(p.forward - p.numeric)
                    fwd = f"; forward mode {p.forward:.6g} (|diff| {off:.3g})"
                lines.append(
                    f"  probe {n}: reverse mode {p.reverse:.6g}, finite differences "
                    f"{p.numeric:.6g} (|diff| {abs(p.reverse - p.numeric):.3g}, up to "
                    f"{p.allowed:.2g} allowed){fwd}"
                )
        failing = [p for p in result.pairs if not p.passed]
        for pair in failing[:_MAX_PAIRS_SHOWN]:
            lines.append("")
            lines += _pair_text(pair, projected=result.mode == "fast")
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
        lines.append(f"Reproduce: {result.reproduce or reproduce_line(result)}")
    return "\n".join(lines)


# ------------------------------------------------------------------ hand-written derivatives

_ODD_SENTENCE = {
    "manual": "your derivative disagrees with both autograd and finite differences",
    "autograd": "autograd disagrees with both your derivative and finite differences",
    "numeric": "finite differences disagree with both your derivative and autograd",
    "none": "your derivative, autograd and finite differences all disagree",
}

_ODD_CAUSE = {
    "manual": "the mistake is in your derivative; fn's autograd gradient is right.",
    "autograd": (
        "your derivative is right and fn's own backward is wrong (a custom "
        "autograd.Function's backward, a .detach() or .data, an in-place op); training "
        "with loss.backward() would use the wrong gradient."
    ),
    "numeric": (
        "your derivative and autograd agree with each other, so they share one formula: "
        "either both are wrong the same way (fn calls a custom autograd.Function whose "
        "backward your derivative repeats), or fn is not smooth at these inputs (a kink, a "
        "branch, a rounding step), where finite differences mean nothing: try another point."
    ),
    "none": (
        "each disagrees with the other two: check fn's backward alone with "
        "check_gradients(fn, inputs), then your derivative."
    ),
}

_ODD_LABEL = {
    "manual": "yours",
    "autograd": "autograd",
    "numeric": "numeric",
    "none": "all differ",
}


def reproduce_manual_line(result: ManualCheckResult) -> str:
    """The call that repeats a three-way check with the numbers it actually used."""
    given = (
        "manual_grad, inputs"
        if result.interface == "grad"
        else "inputs=inputs, manual_vjp=manual_vjp"
    )
    return f"gradcheck_kit.check_matches_manual({result.name}, {given}, {_settings_args(result)})"


def _where(pair: ManualPairResult, e: ThreeWayElement) -> str:
    text = f"at index {_idx(e.input_index)} of '{pair.input}'"
    if pair.output_shape:
        text += f" (output '{pair.output}' index {_idx(e.output_index)})"
    return text


def odd_one_out_text(pair: ManualPairResult, e: ThreeWayElement) -> str:
    """One sentence: which of the three is the odd one out at ``e``, with the three values.

    Examples:
        >>> from gradcheck_kit._src.results import ManualPairResult, ThreeWayElement
        >>> e = ThreeWayElement((), (0,), manual=-1.0, autograd=1.0, numeric=1.0,
        ...                     allowed=0.001, odd_one_out="manual")
        >>> pair = ManualPairResult("output", "x", (), (2,), passed=False, total=2,
        ...     manual_wrong=1, autograd_wrong=0, numeric_wrong=0, all_differ=0,
        ...     max_abs_error=2.0, worst=(e,))
        >>> odd_one_out_text(pair, e)[:60]
        'your derivative disagrees with both autograd and finite diff'
    """
    return (
        f"{_ODD_SENTENCE[e.odd_one_out]} {_where(pair, e)}: yours {_g(e.manual)}, autograd "
        f"{_g(e.autograd)}, finite differences {_g(e.numeric)} (|diff| {_g(e.abs_error)}, "
        f"up to {e.allowed:.2g} allowed)."
    )


def odd_one_out_cause(odd: str) -> str:
    """The likely cause when ``odd`` (``manual``, ``autograd``, ``numeric``, ``none``) is wrong.

    Examples:
        >>> odd_one_out_cause("manual")
        "the mistake is in your derivative; fn's autograd gradient is right."
    """
    return _ODD_CAUSE[odd]


def _manual_pair_text(pair: ManualPairResult) -> list[str]:
    pct = 100.0 * pair.mismatched / pair.total if pair.total else 0.0
    named = ", ".join(f"{_ODD_LABEL[k]} {n}" for k, n in pair.counts.items() if n)
    lines = [
        f"Mismatched elements: {pair.mismatched} / {pair.total} ({pct:.1f}%); odd one out: {named}",
        f"The failure occurred for output {pair.output!r}, input {pair.input!r}",
    ]
    if pair.worst:
        lines.append("")
        out = pair.output + ("[i]" if pair.output_shape else "")
        lines.append(
            f"  {'d ' + out + ' / d ' + pair.input + '[j]':<36} {'yours':>12} {'autograd':>12} "
            f"{'numeric':>12} {'|diff|':>10} {'allowed':>10}  odd one out"
        )
        for e in pair.worst:
            where = f"j={_idx(e.input_index)}"
            if pair.output_shape:
                where = f"i={_idx(e.output_index)} " + where
            lines.append(
                f"  {where:<36} {e.manual:>12.6g} {e.autograd:>12.6g} {e.numeric:>12.6g} "
                f"{e.abs_error:>10.3g} {e.allowed:>10.3g}  {_ODD_LABEL[e.odd_one_out]}"
            )
    return lines


@summarizes("manual")
def format_manual_result(result: ManualCheckResult) -> str:
    """Render a three-way comparison: which of the three is the odd one out, where, and why.

    Examples:
        >>> from gradcheck_kit._src.results import (ManualCheckResult, ManualPairResult,
        ...     ThreeWayElement)
        >>> e = ThreeWayElement((), (1,), manual=1.0, autograd=2.0, numeric=2.0,
        ...                     allowed=0.002, odd_one_out="manual")
        >>> pair = ManualPairResult("output", "inputs[0]", (), (3,), passed=False, total=3,
        ...     manual_wrong=1, autograd_wrong=0, numeric_wrong=0, all_differ=0,
        ...     max_abs_error=1.0, worst=(e,))
        >>> r = ManualCheckResult(name="f", passed=False, status="mismatch",
        ...     odd_one_out="manual", mode="full", mode_requested="auto", dtype="float64",
        ...     dtype_policy="float64", eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, rng="fixed",
        ...     interface="grad", pairs=(pair,))
        >>> line = format_manual_result(r).splitlines()[2]
        >>> line.startswith("Odd one out: your derivative disagrees with both autograd and "
        ...                 "finite differences at index (1,) of 'inputs[0]': yours 1, autograd 2")
        True
    """
    how = f"{result.mode} mode, {result.dtype}"
    if result.interface == "vjp":
        how += ", manual_vjp"
    head = f"({result.check} of {result.name!r}, {how})"
    lines: list[str] = []
    if result.status == "nondeterministic":
        lines += [f"{PREFIX} fn is not deterministic {head}", ""]
        lines += [h.text for h in result.hints]
    elif result.status == "empty":
        lines.append(f"{PREFIX} Nothing to check {head}")
    elif result.passed:
        lines.append(f"{PREFIX} Your derivative matches autograd and finite differences {head}")
        total = sum(p.total for p in result.pairs)
        lines.append(f"{len(result.pairs)} gradient block(s), {total} entries compared three ways")
    else:
        lines.append(f"{PREFIX} Derivatives disagree! {head}")
        failing = [p for p in result.pairs if not p.passed]
        if failing:
            first = failing[0]
            odd = result.odd_one_out or first.odd_one_out or "none"
            shown = [e for e in first.worst if e.odd_one_out == odd] or list(first.worst)
            lines.append("")
            if shown:
                lines.append(f"Odd one out: {odd_one_out_text(first, shown[0])}")
            lines.append(f"Likely cause: {_ODD_CAUSE[odd]}")
        for pair in failing[:_MAX_PAIRS_SHOWN]:
            lines.append("")
            lines += _manual_pair_text(pair)
        if len(failing) > _MAX_PAIRS_SHOWN:
            lines.append("")
            lines.append(
                f"... and {len(failing) - _MAX_PAIRS_SHOWN} more mismatching block(s): "
                + ", ".join(f"{p.output!r}/{p.input!r}" for p in failing[_MAX_PAIRS_SHOWN:])
            )
        # the odd_one_out hint repeats the lines above for one-line reports (result.hint)
        shown_hints = [h for h in result.hints if h.kind != "odd_one_out"]
        if shown_hints:
            lines.append("")
            lines += [f"Hint: {h.text}" for h in shown_hints]
    lines += [f"Note: {note}" for note in result.notes]
    if not result.passed:
        lines.append(f"Reproduce: {reproduce_manual_line(result)}")
    return "\n".join(lines)


@summarizes("second_order")
def format_second_order(result: GradcheckResult) -> str:
    """Render a second-order check: :func:`format_result` read one order up.

    Examples:
        >>> from gradcheck_kit._src.results import Hint, SecondOrderResult
        >>> raised = Hint("double_backward", "double backward raised RuntimeError")
        >>> r = SecondOrderResult("f", False, "mismatch", "full", "auto", "float64", "float64",
        ...                       1e-6, 1e-5, 1e-3, 0, "fixed", hints=(raised,))
        >>> format_second_order(r).splitlines()[0]
        "[gradcheck] Double backward failed! (check_second_order of 'f', full mode, float64)"
    """
    lines = format_result(result).splitlines()
    head = _header(result)
    if result.passed:
        lines[0] = f"{PREFIX} Second derivatives match {head}"
    elif result.hints and result.hints[0].kind == "double_backward" and not result.pairs:
        lines[0] = f"{PREFIX} Double backward failed! {head}"
    elif result.status != "nondeterministic":
        lines[0] = f"{PREFIX} Second derivatives are not close! {head}"
        lines.insert(
            1,
            "(the Hessian: 'analytic' is double backward through autograd, 'numeric' finite "
            "differences of the gradient)",
        )
    reproduce = (
        f"Reproduce: gradcheck_kit.check_second_order({result.name}, inputs, "
        f"{_settings_args(result)})"
    )
    return "\n".join(reproduce if line.startswith("Reproduce: ") else line for line in lines)


_AUDIT_STATUS = {"passed": "passed ", "failed": "FAILED ", "skipped": "skipped"}


@summarizes("autograd_function")
def format_audit_result(result: FunctionAuditResult) -> str:
    """Render an audit of a custom autograd.Function: one line per property examined.

    Examples:
        >>> from gradcheck_kit._src.results import AuditFinding, FunctionAuditResult
        >>> r = FunctionAuditResult(name="Square", passed=False, dtype="float64",
        ...     dtype_policy="float64", seed=0,
        ...     findings=(AuditFinding("gradient_dtype", "failed", "float32 for float64"),))
        >>> print(format_audit_result(r).splitlines()[2])
          FAILED  gradient_dtype: float32 for float64
    """
    head = f"({result.check} of {result.name!r}, {result.dtype})"
    failed = result.failed
    if result.passed:
        lines = [f"{PREFIX} autograd.Function audit passed {head}"]
    else:
        lines = [
            f"{PREFIX} autograd.Function audit failed: {len(failed)} of "
            f"{len(result.findings)} checks {head}"
        ]
    lines.append("")
    for f in result.findings:
        lines.append(f"  {_AUDIT_STATUS.get(f.status, f.status)} {f.check}: {f.text}")
    if result.hints and not result.passed:
        lines.append("")
        lines += [f"Hint: {h.text}" for h in result.hints]
    lines += [f"Note: {note}" for note in result.notes]
    for label, nested in (
        ("Backward against finite differences", result.gradient),
        ("Double backward against finite differences of the gradient", result.second_order),
    ):
        if nested is not None and not nested.passed:
            lines += ["", f"{label}:"]
            lines += ["    " + line if line else "" for line in nested.summary().splitlines()]
    if not result.passed:
        lines.append(
            f"Reproduce: gradcheck_kit.check_autograd_function({result.name}, inputs, "
            f"dtype={result.dtype_policy!r}, seed={result.seed})"
        )
    return "\n".join(lines)


@summarizes("same_training")
def format_training_result(result: SameTrainingResult) -> str:
    """Render a comparison of two training loops: the first step and entry where they part.

    Examples:
        >>> from gradcheck_kit._src.results import SameTrainingResult
        >>> r = SameTrainingResult(name="a vs b", step_a="a", step_b="b", passed=True,
        ...     steps=10, steps_run=10, dtype="float32", atol=3e-4, rtol=3e-4, seed=0,
        ...     parameters=("params",), max_abs_error=1e-7)
        >>> format_training_result(r).splitlines()[0]
        "[gradcheck] Training loops agree (check_same_training of 'a' vs 'b', 10 steps, float32)"
    """
    head = (
        f"({result.check} of {result.step_a!r} vs {result.step_b!r}, {result.steps} steps, "
        f"{result.dtype})"
    )
    d = result.divergence
    if result.passed or d is None:
        lines = [
            f"{PREFIX} Training loops agree {head}",
            f"Greatest difference over {result.steps_run} steps: {_g(result.max_abs_error)} "
            f"(atol={result.atol:.3g}, rtol={result.rtol:.3g}) in {len(result.parameters)} "
            f"parameter(s)",
        ]
    else:
        lines = [
            f"{PREFIX} Training loops diverge! {head}",
            "",
            f"First divergence after step {d.step} of {result.steps}, parameter "
            f"{d.parameter!r} at index {_idx(d.index)}:",
            f"  {result.step_a}: {d.value_a:.8g}   {result.step_b}: {d.value_b:.8g}   "
            f"|diff| {_g(d.abs_error)} (up to {d.allowed:.2g} allowed)",
        ]
        if d.parameter_errors:
            lines.append(
                "Greatest difference per parameter at that step: "
                + ", ".join(f"{name!r} {_g(err)}" for name, err in d.parameter_errors)
            )
        if result.hints:
            lines.append("")
            lines += [f"Hint: {h.text}" for h in result.hints]
    lines += [f"Note: {note}" for note in result.notes]
    if not result.passed:
        lines.append(
            f"Reproduce: gradcheck_kit.check_same_training({result.step_a}, {result.step_b}, "
            f"params, steps={result.steps}, atol={result.atol:.3g}, rtol={result.rtol:.3g}, "
            f"seed={result.seed})"
        )
    return "\n".join(lines)


_WHAT = {"grad": "gradient", "param": "parameter after the step", "buffer": "buffer"}


def _ddp_leaf_line(leaf: DdpLeaf, against: str) -> str:
    where = f"after optimizer step {leaf.step}" if leaf.step else "at the end of the step"
    if leaf.what == "buffer":
        where = "after the last step"
    head = f"{_WHAT[leaf.what]} of {leaf.parameter!r} on rank {leaf.rank} {where}"
    if leaf.missing == "rank":
        return f"  {head}: missing (None) where {against} has one"
    if leaf.missing == "reference":
        return f"  {head}: present where {against} has none"
    if leaf.missing == "shape":
        return f"  {head}: another shape than {against}'s"
    return (
        f"  {head}: {leaf.mismatched} / {leaf.numel} elements differ; at index "
        f"{_idx(leaf.index)} rank {leaf.rank} {leaf.value:.8g} vs {against} "
        f"{leaf.reference:.8g} (|diff| {_g(leaf.max_abs_error)}, up to {_g(leaf.allowed)} allowed)"
    )


@summarizes("ddp")
def format_ddp_result(result: DdpCheckResult) -> str:
    """Render a DDP check: what differs, on which rank, at which step, and the likely cause.

    Examples:
        >>> from gradcheck_kit._src.results import DdpCheckResult
        >>> r = DdpCheckResult(name="train_step", passed=True, world_size=2, backend="gloo",
        ...     steps=1, optimizer_steps=1, dtype="float32", atol=None, rtol=3e-4, seed=0,
        ...     parameters=("fc.weight",))
        >>> format_ddp_result(r).splitlines()[0]  # doctest: +ELLIPSIS
        '[gradcheck] DDP ranks match one process on the whole batch (check_ddp_gradients of ...'
    """
    head = (
        f"({result.check} of {result.name}, {result.world_size} ranks, {result.backend}, "
        f"{result.steps} step(s), {result.dtype})"
    )
    if result.passed:
        against = (
            "one process on the whole batch" if result.compared_with_reference else "each other"
        )
        lines = [
            f"{PREFIX} DDP ranks match {against} {head}",
            f"{len(result.parameters)} parameter(s), {result.optimizer_steps} optimizer "
            f"step(s); greatest difference {_g(result.max_abs_error)} (rtol={result.rtol:.3g})",
        ]
    elif result.rank_failure is not None:
        who = (
            "the single-process run"
            if result.failed_rank == -1
            else f"rank {result.failed_rank} of {result.world_size}"
        )
        lines = [f"{PREFIX} The DDP step failed on {who}! {head}", "", result.rank_failure]
    else:
        lines = [f"{PREFIX} DDP ranks disagree! {head}", ""]
        own = [leaf for leaf in result.failures if leaf in result.leaves]
        if own:
            lines.append("Compared with one process on the whole batch:")
            lines += [_ddp_leaf_line(leaf, "one process") for leaf in own[:_MAX_PAIRS_SHOWN]]
            if len(own) > _MAX_PAIRS_SHOWN:
                lines.append(f"  ... and {len(own) - _MAX_PAIRS_SHOWN} more")
        if result.across_ranks:
            lines.append("Compared with rank 0:")
            lines += [
                _ddp_leaf_line(leaf, "rank 0") for leaf in result.across_ranks[:_MAX_PAIRS_SHOWN]
            ]
            if len(result.across_ranks) > _MAX_PAIRS_SHOWN:
                lines.append(f"  ... and {len(result.across_ranks) - _MAX_PAIRS_SHOWN} more")
    if result.hints and not result.passed:
        lines.append("")
        lines += [f"Hint: {h.text}" for h in result.hints]
    lines += [f"Note: {note}" for note in result.notes]
    if not result.passed:
        lines.append(
            f"Reproduce: gradcheck_kit.check_ddp_gradients(make_model, make_batch, "
            f"step={result.name}, world_size={result.world_size}, "
            f"backend={result.backend!r}, steps={result.steps}, seed={result.seed})"
        )
    return "\n".join(lines)
