"""A training-loop check's detail: what it watched, and each finding as a card.

Findings that differ only in their parameter become one card listing the
parameters; a finding's facts read parameter, step, optimizer, expected, found,
cause, fix, source line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gradcheck_kit.report.grouping import group_findings
from gradcheck_kit.report.values import format_value

__all__ = [
    "TRAINING_KEYS",
    "FindingView",
    "TrainingDetail",
    "training_detail",
    "training_line",
    "training_summary",
]

# A training finding's facts, in reading order: label, then the keys that may hold it.
_FINDING_FIELDS = (
    ("parameter", ("parameter", "param", "parameters")),
    ("step", ("step",)),
    ("optimizer", ("optimizer",)),
    ("ranks", ("ranks",)),
    ("expected", ("expected",)),
    ("found", ("found", "actual")),
    ("cause", ("cause",)),
    ("fix", ("fix",)),
    ("source", ("location", "source", "where")),
)
# The keys a training detail shows; the rest go to the row's fields.
TRAINING_KEYS = frozenset(
    {
        "findings",
        "check",
        "optimizer_steps",
        "backward_passes",
        "accumulation_steps",
        "notes",
        "rank",
        "world_size",
    }
)


@dataclass(frozen=True)
class FindingView:
    """One training-loop finding: its title and parameter, step, expected, cause, fix, source."""

    title: str
    facts: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TrainingDetail:
    """A training-loop check: what it watched, and each finding."""

    settings: tuple[tuple[str, str], ...]
    findings: tuple[FindingView, ...]
    notes: tuple[str, ...]
    template: str = "training"


def _finding(data: Mapping[str, Any]) -> tuple[FindingView, set[str]]:
    facts: list[tuple[str, str]] = []
    used: set[str] = {"title"}
    for label, keys in _FINDING_FIELDS:
        for key in keys:
            if data.get(key) not in (None, "", []):
                value = data[key]
                if label == "source" and isinstance(value, Mapping):
                    where = value.get("file", value.get("filename", "?"))
                    value = f"{where}:{value.get('line', '?')}"
                facts.append((label, format_value(value)))
                used.add(key)
                break
    occurrences = data.get("occurrences")
    if isinstance(occurrences, int) and occurrences > 1:
        steps = data.get("steps") or []
        shown = f" (steps {format_value(steps)})" if steps else ""
        facts.append(("seen", f"{occurrences} times{shown}"))
    used.update({"occurrences", "steps"})
    title = data.get("title")
    if not isinstance(title, str) or not title:
        kind = data.get("kind")
        title = str(kind).replace("_", " ") if kind and kind != "training" else "finding"
    return FindingView(title, tuple(facts)), used


def _grouped_finding(data: Mapping[str, Any], parameters: tuple[str, ...]) -> FindingView:
    """One card for findings that differ only in their parameter: the parameters listed."""
    view, _ = _finding(data)
    if len(parameters) <= 1:
        return view
    facts = (("parameters", ", ".join(parameters)), *view.facts)
    return FindingView(f"{view.title} ({len(parameters)} parameters)", facts)


def _training_findings(raw: Sequence[Any]) -> list[FindingView]:
    return [
        _grouped_finding(finding, parameters)
        for finding, parameters in group_findings([f for f in raw if isinstance(f, Mapping)])
    ]


def training_detail(record: Mapping[str, Any]) -> tuple[TrainingDetail, frozenset[str]]:
    """The record's settings and finding cards, and the keys they show.

    A record without a ``findings`` list is one finding itself, its facts at the top level.

    Examples:
        >>> detail, _ = training_detail({"check": "watch_training", "findings": [
        ...     {"title": "Gradient not reset", "parameter": "w", "step": 2},
        ...     {"title": "Gradient not reset", "parameter": "b", "step": 2}]})
        >>> detail.settings, detail.findings[0].title
        ((('check', 'watch_training'),), 'Gradient not reset (2 parameters)')
    """
    raw = record.get("findings")
    used: set[str] = set(TRAINING_KEYS)
    if isinstance(raw, list):
        findings = _training_findings(raw)
    else:
        # One finding as the record itself (its facts at the top level).
        view, keys = _finding(record)
        findings = [view] if view.facts else []
        used |= keys
    settings = [
        (label, format_value(record[key]))
        for key, label in (
            ("check", "check"),
            ("optimizer_steps", "optimizer steps"),
            ("backward_passes", "backward passes"),
            ("accumulation_steps", "accumulation steps"),
            ("rank", "rank"),
            ("world_size", "ranks"),
        )
        if record.get(key) is not None
    ]
    notes = tuple(str(n) for n in record.get("notes") or [] if n)
    return TrainingDetail(tuple(settings), tuple(findings), notes), frozenset(used)


def training_summary(record: Mapping[str, Any]) -> str:
    """The first finding in one line (and how many more), for the row.

    Examples:
        >>> training_summary({"findings": [{"title": "Frozen parameter changed",
        ...     "parameter": "fc.weight"}]})
        'Frozen parameter changed: fc.weight'
    """
    raw = record.get("findings")
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], Mapping):
        return ""
    groups = group_findings([f for f in raw if isinstance(f, Mapping)])
    first, parameters = groups[0]
    view, _ = _finding(first)
    names = ", ".join(parameters[:3]) + (
        f" and {len(parameters) - 3} more" if len(parameters) > 3 else ""
    )
    text = view.title + (f": {names}" if names else "")
    return text + (f" (and {len(groups) - 1} more)" if len(groups) > 1 else "")


def training_line(record: Mapping[str, Any]) -> str:
    """A passed training check in one line: its settings, ``no finding``, its notes.

    Examples:
        >>> training_line({"check": "watch_training", "optimizer_steps": 3, "findings": []})
        'check watch_training · optimizer steps 3 · no finding'
    """
    detail, _ = training_detail(record)
    parts = [f"{k} {v}" for k, v in detail.settings]
    return " · ".join([*parts, "no finding", *detail.notes])
