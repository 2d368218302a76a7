"""What a training-loop check found: the verdicts, their records, text and JSON form.

A :class:`TrainingFinding` is one problem with one parameter (or one optimizer
step); a :class:`TrainingReport` is everything one check or one watched loop
found. Both are frozen dataclasses with ``to_dict()``/``from_dict()``; the report
has the ``with_test_id``/``to_dict`` pair that :func:`recording.publish` expects,
with ``"kind": "training"``.

The watcher (:mod:`.watcher`) observes; the judging is here: :func:`judge_gradient`
decides what a step does with one parameter's gradient, the ``*_finding``
functions turn what was observed into findings, and a :class:`FindingLog` counts
a finding seen again. Imports no torch, so a report renders from JSON alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from ..messages import PREFIX
from ..recording import Observable
from ..results import SCHEMA_VERSION

__all__ = [
    "TITLES",
    "TrainingFinding",
    "TrainingReport",
    "GradientTally",
    "judge_gradient",
    "reapplied_finding",
    "empty_step_finding",
    "no_gradient_finding",
    "frozen_changed_finding",
    "unwritten_step_finding",
    "FindingLog",
]

# kind -> the one-line title shown in messages and reports.
TITLES: Final[dict[str, str]] = {
    "grad_not_reset": "Gradient not reset between optimizer steps",
    "empty_step": "Optimizer step without a new gradient",
    "param_replaced": "Parameter re-assigned after the optimizer was built",
    "param_not_in_optimizer": "Trainable parameter held by no optimizer",
    "param_not_in_model": "Optimizer holds a tensor that is not a parameter of the model",
    "param_in_two_optimizers": "Parameter held by two optimizers",
    "no_gradient": "Trainable parameter never received a gradient",
    "frozen_param_updated": "Frozen parameter changed by an optimizer step",
    "param_not_updated": "Parameter did not change",
    "param_changed": "Parameter changed although it must stay fixed",
    "no_step": "No optimizer step was taken",
    "params_differ_across_ranks": "Parameter differs across ranks",
    "grad_not_reduced": "Gradient not all-reduced across ranks",
    "step_inside_no_sync": "Optimizer step on gradients DDP did not synchronise (no_sync)",
    "buffers_differ_across_ranks": "Buffer differs across ranks",
}
_MAX_STEPS_KEPT: Final = 10
_MAX_NAMES_SHOWN: Final = 6


@dataclass(frozen=True)
class TrainingFinding:
    """One problem a training-loop check found, explained so that it stands on its own.

    Attributes:
        kind: what went wrong, a key of :data:`TITLES` (``"grad_not_reset"``,
            ``"param_replaced"``, ``"no_gradient"``, ...).
        parameter: the parameter's qualified name (``"fc1.weight"``), or ``None``
            for a finding about a whole optimizer step.
        expected: what a correct loop does.
        found: what this one did.
        cause: the likely cause.
        fix: how to fix it.
        step: the first optimizer step it was seen at (1-based, counted per
            optimizer), or ``None``.
        optimizer: which optimizer (``"SGD"``, ``"Adam #1"``), or ``None``.
        location: the user's source line, ``"train.py:12 in train: `loss.backward()`"``.
        steps: the first few steps it was seen at.
        occurrences: how many times it was seen in all.
        ranks: in a distributed loop, the ranks it was seen on (a cross-rank finding:
            the ranks that differ), else ``()``.

    Examples:
        >>> f = TrainingFinding("no_gradient", "fc3.weight", expected="a gradient",
        ...                     found="none in 5 backward passes", cause="unused",
        ...                     fix="use it or freeze it")
        >>> f.title
        'Trainable parameter never received a gradient'
        >>> TrainingFinding.from_dict(f.to_dict()) == f
        True
    """

    kind: str
    parameter: str | None
    expected: str
    found: str
    cause: str
    fix: str
    step: int | None = None
    optimizer: str | None = None
    location: str | None = None
    steps: tuple[int, ...] = ()
    occurrences: int = 1
    ranks: tuple[int, ...] = ()

    @property
    def title(self) -> str:
        """The kind as a short sentence (:data:`TITLES`)."""
        return TITLES.get(self.kind, self.kind)

    @property
    def message(self) -> str:
        """This finding alone as text: title, where, expected, found, cause, fix, source line.

        Examples:
            >>> f = TrainingFinding("grad_not_reset", "w", expected="a reset", found="none",
            ...                     cause="no zero_grad()", fix="call it", step=2)
            >>> print(f.message)
            Gradient not reset between optimizer steps: 'w', at step 2
              Expected: a reset
              Found: none
              Likely cause: no zero_grad()
              Fix: call it
        """
        return "\n".join(_block(self, [self.parameter] if self.parameter else []))

    def to_dict(self) -> dict[str, Any]:
        """This finding as JSON-ready data (``ranks`` only where it has ranks)."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "title": self.title,
            "parameter": self.parameter,
            "step": self.step,
            "optimizer": self.optimizer,
            "expected": self.expected,
            "found": self.found,
            "cause": self.cause,
            "fix": self.fix,
            "location": self.location,
            "steps": list(self.steps),
            "occurrences": self.occurrences,
        }
        if self.ranks:
            data["ranks"] = list(self.ranks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingFinding:
        """Rebuild a finding from :meth:`to_dict` output."""
        return cls(
            kind=data["kind"],
            parameter=data.get("parameter"),
            expected=data["expected"],
            found=data["found"],
            cause=data["cause"],
            fix=data["fix"],
            step=data.get("step"),
            optimizer=data.get("optimizer"),
            location=data.get("location"),
            steps=tuple(data.get("steps", ())),
            occurrences=int(data.get("occurrences", 1)),
            ranks=tuple(data.get("ranks", ())),
        )


def _on_ranks(ranks: tuple[int, ...]) -> str:
    if len(ranks) == 1:
        return f"on rank {ranks[0]}"
    return f"on ranks {', '.join(map(str, ranks[:-1]))} and {ranks[-1]}"


def _where(f: TrainingFinding) -> str:
    parts = []
    if f.step is not None:
        step = f"at step {f.step}"
        if f.optimizer:
            step += f" of {f.optimizer}"
        if f.occurrences > 1:
            shown = ", ".join(map(str, f.steps))
            more = ", ..." if f.occurrences > len(f.steps) else ""
            step += f" (seen {f.occurrences} times: steps {shown}{more})"
        parts.append(step)
    elif f.optimizer:
        parts.append(f"in {f.optimizer}")
    if f.ranks:
        parts.append(_on_ranks(f.ranks))
    return ", ".join(parts)


def _block(f: TrainingFinding, names: list[str]) -> list[str]:
    head = f.title
    shown = ", ".join(repr(n) for n in names[:_MAX_NAMES_SHOWN])
    if len(names) > _MAX_NAMES_SHOWN:
        shown += f" and {len(names) - _MAX_NAMES_SHOWN} more"
    where = _where(f)
    head += ": " + ", ".join(part for part in (shown, where) if part)
    lines = [
        head,
        f"  Expected: {f.expected}",
        f"  Found: {f.found}",
        f"  Likely cause: {f.cause}",
        f"  Fix: {f.fix}",
    ]
    if f.location:
        lines.append(f"  At: {f.location}")
    return lines


@dataclass(frozen=True)
class TrainingReport(Observable):
    """Everything one training-loop check found; ``passed`` when it found nothing.

    Made by :func:`gradcheck_kit.watch_training` (``watcher.report``) and the
    training assertions, carried by :class:`gradcheck_kit.errors.TrainingLoopError` as
    ``.report``, and published for the pytest plugin's results file with
    ``"kind": "training"``.

    Attributes:
        name: what was checked, e.g. the model's class name.
        check: the function that made it (``"watch_training"``, ``"assert_params_updated"``...).
        findings: the problems, in the order they were first seen.
        optimizer_steps: optimizer steps taken during the check, over all optimizers.
        backward_passes: the most backward passes any parameter received a gradient from.
        accumulation_steps: the ``accumulation_steps`` the loop was checked with, if any.
        duration_s: wall time of the check.
        notes: remarks that are not findings (e.g. a check that could not run).
        test_id: the pytest test that made it (set by the plugin).
        rank: in a distributed loop, the rank that made this report, else ``None``.
        world_size: in a distributed loop, how many ranks there were, else ``None``.

    Examples:
        >>> report = TrainingReport("MLPNet", "watch_training", optimizer_steps=3)
        >>> report.passed, report.to_dict()["kind"]
        (True, 'training')
        >>> print(report.summary())
        [gradcheck] Training loop check passed. (watch_training of 'MLPNet': 3 optimizer steps)
    """

    name: str
    check: str
    findings: tuple[TrainingFinding, ...] = ()
    optimizer_steps: int = 0
    backward_passes: int = 0
    accumulation_steps: int | None = None
    duration_s: float = 0.0
    notes: tuple[str, ...] = ()
    test_id: str | None = None
    rank: int | None = None
    world_size: int | None = None
    kind: str = field(default="training", init=False)

    @property
    def passed(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    def __bool__(self) -> bool:
        return self.passed

    def _context(self) -> str:
        parts = [f"{self.optimizer_steps} optimizer step{'s' if self.optimizer_steps != 1 else ''}"]
        if self.backward_passes:
            parts.append(
                f"{self.backward_passes} backward pass{'es' if self.backward_passes != 1 else ''}"
            )
        if self.accumulation_steps is not None:
            parts.append(f"accumulation_steps={self.accumulation_steps}")
        where = f" on rank {self.rank} of {self.world_size}" if self.rank is not None else ""
        return f"({self.check} of {self.name!r}{where}: {', '.join(parts)})"

    def summary(self) -> str:
        """The report as text: a header, then one block per problem (the assertion's message).

        Findings that differ only in the parameter are shown as one block naming
        every parameter.
        """
        if self.passed:
            lines = [f"{PREFIX} Training loop check passed. {self._context()}"]
        else:
            count = len(self.findings)
            lines = [
                f"{PREFIX} Training loop check failed: {count} finding{'s' if count != 1 else ''}! "
                f"{self._context()}"
            ]
            groups: dict[tuple[Any, ...], tuple[TrainingFinding, list[str]]] = {}
            for f in self.findings:
                key = (f.kind, f.step, f.optimizer, f.expected, f.cause, f.fix, f.location, f.ranks)
                first, names = groups.setdefault(key, (f, []))
                if f.parameter is not None:
                    names.append(f.parameter)
            for number, (first, names) in enumerate(groups.values(), start=1):
                block = _block(first, names)
                lines += ["", f"{number}. {block[0]}", *(" " + line for line in block[1:])]
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines)

    def with_test_id(self, test_id: str | None) -> TrainingReport:
        """A copy labelled with the test that made it (used by the pytest plugin)."""
        return dataclasses.replace(self, test_id=test_id)

    def to_dict(self) -> dict[str, Any]:
        """This report as JSON-ready data, ``"kind": "training"`` (``rank`` where distributed)."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "check": self.check,
            "test_id": self.test_id,
            "passed": self.passed,
            "optimizer_steps": self.optimizer_steps,
            "backward_passes": self.backward_passes,
            "accumulation_steps": self.accumulation_steps,
            "duration_s": self.duration_s,
            "notes": list(self.notes),
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.rank is not None:
            data["rank"] = self.rank
            data["world_size"] = self.world_size
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingReport:
        """Rebuild a report from :meth:`to_dict` output.

        Examples:
            >>> r = TrainingReport("m", "watch_training", optimizer_steps=2)
            >>> TrainingReport.from_dict(r.to_dict()) == r
            True
        """
        return cls(
            name=data["name"],
            check=data["check"],
            findings=tuple(TrainingFinding.from_dict(f) for f in data.get("findings", ())),
            optimizer_steps=int(data.get("optimizer_steps", 0)),
            backward_passes=int(data.get("backward_passes", 0)),
            accumulation_steps=data.get("accumulation_steps"),
            duration_s=float(data.get("duration_s", 0.0)),
            notes=tuple(data.get("notes", ())),
            test_id=data.get("test_id"),
            rank=data.get("rank"),
            world_size=data.get("world_size"),
        )


# --------------------------------------------------------------------------- judging


class GradientTally(Protocol):
    """What a watcher counts about one parameter's gradient, for :func:`judge_gradient`."""

    count: int  # backward passes summed into .grad since its last reset
    applied: int  # optimizer steps that applied this .grad since its last reset
    applied_count: int  # count when a step last applied it
    manual: bool  # .grad set by hand (nonzero) since the last step


def judge_gradient(tally: GradientTally, accumulation_steps: int) -> tuple[bool, bool]:
    """What an optimizer step about to apply this gradient does with it: ``(new, reapplied)``.

    ``new``: it holds a backward pass (or a hand-set value) no step applied yet.
    ``reapplied``: an earlier step already applied part of it, and it sums more
    backward passes than ``accumulation_steps`` allows: ``zero_grad()`` is missing.

    Examples:
        >>> from types import SimpleNamespace as Tally
        >>> judge_gradient(Tally(count=1, applied=0, applied_count=0, manual=False), 1)
        (True, False)
        >>> judge_gradient(Tally(count=2, applied=1, applied_count=1, manual=False), 1)
        (True, True)
        >>> judge_gradient(Tally(count=2, applied=1, applied_count=1, manual=False), 2)
        (True, False)
    """
    new = tally.count > tally.applied_count or tally.manual
    return new, bool(tally.applied) and tally.count > accumulation_steps


def reapplied_finding(
    parameter: str,
    *,
    count: int,
    applied: int,
    step: int,
    optimizer: str,
    accumulation_steps: int,
    location: str | None,
) -> TrainingFinding:
    """``grad_not_reset``: a step applied ``count`` passes that ``applied`` steps applied before.

    Examples:
        >>> f = reapplied_finding("w", count=2, applied=1, step=2, optimizer="SGD",
        ...                       accumulation_steps=1, location=None)
        >>> f.kind, f.expected
        ('grad_not_reset', 'its gradient is reset (zero_grad) after every optimizer step')
    """
    allowed = (
        "its gradient is reset (zero_grad) after every optimizer step"
        if accumulation_steps == 1
        else f"its gradient sums at most accumulation_steps={accumulation_steps} backward "
        "passes before it is reset"
    )
    return TrainingFinding(
        "grad_not_reset",
        parameter,
        expected=allowed,
        found=f"the gradient step {step} applied summed {count} backward passes, and "
        f"{applied} earlier step{'s' if applied != 1 else ''} had already applied part "
        "of it: those gradients are applied again, so the update goes in the wrong "
        "direction",
        cause="optimizer.zero_grad() (or model.zero_grad()) is missing from the loop, runs "
        "less often than step(), or is called on another optimizer than the one stepping",
        fix="call optimizer.zero_grad() once per step, before loss.backward() or after "
        "optimizer.step(); to accumulate on purpose over k backward passes, pass "
        "accumulation_steps=k",
        step=step,
        optimizer=optimizer,
        location=location,
    )


def empty_step_finding(
    step: int, optimizer: str, trainable: int, location: str | None
) -> TrainingFinding:
    """``empty_step``: step ``step`` applies no new gradient to any of ``trainable`` parameters.

    Examples:
        >>> empty_step_finding(3, "SGD", 0, None).found
        'SGD holds no parameter that requires grad: step 3 has nothing to apply'
    """
    if trainable == 0:
        found = (
            f"{optimizer} holds no parameter that requires grad: step {step} has nothing to apply"
        )
    else:
        found = (
            f"none of the {trainable} trainable parameters {optimizer} holds received a "
            f"gradient since the previous step: step {step} applies no new gradient "
            "(only momentum or weight decay, if any)"
        )
    return TrainingFinding(
        "empty_step",
        None,
        expected="each optimizer step applies gradients from at least one backward pass",
        found=found,
        cause="zero_grad() is called between loss.backward() and optimizer.step(), "
        "backward() is not called (or on another model), or step() is called twice",
        fix="order each iteration as zero_grad(), forward, loss.backward(), "
        "optimizer.step() (zero_grad() may also come last)",
        step=step,
        optimizer=optimizer,
        location=location,
    )


def no_gradient_finding(parameter: str, passes: int, location: str | None) -> TrainingFinding:
    """``no_gradient``: none of ``passes`` backward passes reached a trainable parameter.

    Examples:
        >>> print(no_gradient_finding("head.bias", 3, None).found)
        no backward pass gave 'head.bias' a gradient, while other parameters received one in 3 ...
    """
    return TrainingFinding(
        "no_gradient",
        parameter,
        expected="every parameter with requires_grad=True gets a gradient from the loss",
        found=f"no backward pass gave {parameter!r} a gradient, while other parameters "
        f"received one in {passes} backward pass{'es' if passes != 1 else ''}",
        cause="it is not used in the forward pass (a module never called, a branch "
        "not taken), or the path from it to the loss is cut by .detach(), .data, "
        "torch.no_grad() or .item()",
        fix="find the cut with gk.assert_graph_reaches(lambda: loss_fn(model(x)), "
        "model); if it is unused on purpose, freeze it (requires_grad_(False)) or "
        f"pass ignore=[{parameter!r}]",
        location=location,
    )


def frozen_changed_finding(
    parameter: str, step: int, optimizer: str, had_grad: bool, location: str | None
) -> TrainingFinding:
    """``frozen_param_updated``: step ``step`` changed a parameter with ``requires_grad=False``.

    Examples:
        >>> print(frozen_changed_finding("fc.weight", 4, "SGD", True, None).found)
        'fc.weight' has requires_grad=False, yet step 4 of SGD changed it (it still has a .grad, ...
    """
    found = f"{parameter!r} has requires_grad=False, yet step {step} of {optimizer} changed it"
    if had_grad:
        found += " (it still has a .grad, left from before it was frozen)"
    return TrainingFinding(
        "frozen_param_updated",
        parameter,
        expected="a parameter with requires_grad=False keeps its values",
        found=found,
        cause="it was frozen after the optimizer was built and still has a .grad "
        "(zero_grad(set_to_none=False) keeps a zero gradient): weight decay and momentum "
        "keep moving it",
        fix="when freezing, also set p.grad = None (zero_grad(set_to_none=True)), and leave "
        "frozen parameters out of the optimizer (or its weight decay)",
        step=step,
        optimizer=optimizer,
        location=location,
    )


def unwritten_step_finding(
    step: int, optimizer: str, count: int, location: str | None
) -> TrainingFinding:
    """``empty_step``: step ``step`` wrote none of the ``count`` parameters that had a gradient.

    Examples:
        >>> unwritten_step_finding(2, "Adam", 4, None).found
        'step 2 of Adam wrote none of the 4 parameters that had a gradient'
    """
    return TrainingFinding(
        "empty_step",
        None,
        expected="an optimizer step writes the parameters it has gradients for",
        found=f"step {step} of {optimizer} wrote none of the {count} parameters that had a "
        "gradient",
        cause="the optimizer's step() skips them (a custom optimizer, or parameters with "
        "requires_grad changed inside step)",
        fix="check the optimizer's step(): it must update every parameter with a gradient",
        step=step,
        optimizer=optimizer,
        location=location,
    )


# --------------------------------------------------------------------------- the log


@dataclass
class _Seen:
    finding: TrainingFinding
    steps: list[int]
    occurrences: int = 1


class FindingLog:
    """Findings in the order first seen, one per (kind, parameter, optimizer), repeats counted.

    Examples:
        >>> log = FindingLog()
        >>> for step in (2, 3):
        ...     log.add("empty_step", None, "SGD", step,
        ...             lambda: empty_step_finding(step, "SGD", 1, None))
        >>> [(f.step, f.steps, f.occurrences) for f in log.findings()]
        [(2, (2, 3), 2)]
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str | None, str | None], _Seen] = {}

    def add(
        self,
        kind: str,
        parameter: str | None,
        optimizer: str | None,
        step: int | None,
        make: Callable[[], TrainingFinding],
    ) -> None:
        """Note a finding seen at ``step``; ``make`` builds it the first time only (text costs)."""
        key = (kind, parameter, optimizer)
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(make(), [step] if step is not None else [])
            return
        seen.occurrences += 1
        if step is not None and len(seen.steps) < _MAX_STEPS_KEPT and step not in seen.steps:
            seen.steps.append(step)

    def add_once(self, finding: TrainingFinding) -> None:
        """Note a finding of the end of a watch: kept as it is, unless its key is noted already."""
        key = (finding.kind, finding.parameter, finding.optimizer)
        if key not in self._seen:
            self._seen[key] = _Seen(finding, [])

    def so_far(self) -> tuple[TrainingFinding, ...]:
        """The findings as first made, while the watch runs."""
        return tuple(seen.finding for seen in self._seen.values())

    def findings(self) -> tuple[TrainingFinding, ...]:
        """The findings with the steps they were seen at and how often."""
        return tuple(
            dataclasses.replace(seen.finding, steps=tuple(seen.steps), occurrences=seen.occurrences)
            for seen in self._seen.values()
        )
