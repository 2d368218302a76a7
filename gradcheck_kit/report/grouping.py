"""Training findings that say the same thing of several parameters, grouped into one.

A watcher reports one finding per parameter: six parameters cut off by one
``detach()`` make six findings whose texts differ only in the parameter's name.
:func:`group_findings` puts them together, so that a report shows one card per
cause, listing the parameters. Pure data; imports nothing beyond the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["PARAMETER_PLACEHOLDER", "group_findings"]

PARAMETER_PLACEHOLDER = "<parameter>"
# Keys that name the finding's own parameter, or count it: not part of what it says.
_OWN_KEYS = frozenset({"parameter", "param"})


def _template(finding: Mapping[str, Any]) -> dict[str, Any]:
    """The finding with its own parameter's name replaced by the placeholder in every text."""
    name = finding.get("parameter", finding.get("param"))
    out: dict[str, Any] = {}
    for key, value in finding.items():
        if key in _OWN_KEYS:
            continue
        if isinstance(name, str) and name and isinstance(value, str):
            value = value.replace(name, PARAMETER_PLACEHOLDER)
        out[key] = value
    return out


def _key(template: Mapping[str, Any]) -> str:
    return repr(sorted((str(k), repr(v)) for k, v in template.items()))


def group_findings(
    findings: Sequence[Mapping[str, Any]],
) -> list[tuple[Mapping[str, Any], tuple[str, ...]]]:
    """Group findings that differ only in their parameter, in order of first appearance.

    Args:
        findings: The ``findings`` of a training record.

    Returns:
        ``(finding, parameters)`` pairs: a finding alone comes back as it is, with
        its parameter (or none); a group as one finding whose texts name
        ``<parameter>`` where each said its own, with every parameter's name.

    Examples:
        >>> same = [{"title": "No gradient", "parameter": p, "found": f"{p} got none"}
        ...         for p in ("fc.weight", "fc.bias")]
        >>> [(f["found"], names) for f, names in group_findings(same)]
        [('<parameter> got none', ('fc.weight', 'fc.bias'))]
    """
    groups: dict[str, tuple[Mapping[str, Any], list[str], Mapping[str, Any]]] = {}
    for finding in findings:
        template: Mapping[str, Any] = _template(finding)
        name = finding.get("parameter", finding.get("param"))
        entry = groups.setdefault(_key(template), (template, [], finding))
        if isinstance(name, str) and name:
            entry[1].append(name)
    out: list[tuple[Mapping[str, Any], tuple[str, ...]]] = []
    for template, names, first in groups.values():
        out.append((first if len(names) <= 1 else template, tuple(names)))
    return out
