"""What a training-loop check found: frozen records, their text, and their JSON form.

A :class:`TrainingFinding` is one problem with one parameter (or one optimizer
step); a :class:`TrainingReport` is everything one check or one watched loop
found. Both are frozen dataclasses with ``to_dict()``/``from_dict()``; the report
has the ``with_test_id``/``to_dict`` pair that :func:`recording.publish` expects,
with ``"kind": "training"``. Imports no torch, so a report renders from JSON alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Final

from ..messages import PREFIX
from ..recording import Observable
from ..results import SCHEMA_VERSION

__all__ = ["TITLES", "TrainingFinding", "TrainingReport"]

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
        """This finding as JSON-ready data."""
        return {
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
        )


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
        return f"({self.check} of {self.name!r}: {', '.join(parts)})"

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
                key = (f.kind, f.step, f.optimizer, f.expected, f.cause, f.fix, f.location)
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
        """This report as JSON-ready data, ``"kind": "training"``."""
        return {
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
        )


def steps_kept(steps: list[int], step: int | None) -> None:
    """Append ``step`` to a finding's step list unless it is full or the step is unknown."""
    if step is not None and len(steps) < _MAX_STEPS_KEPT and step not in steps:
        steps.append(step)
