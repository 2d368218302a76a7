"""Gradient coverage as data: which listed classes a check exercised, merged and summed up.

The ``coverage`` object of a results document (``pytest --gradcheck-cov=PKG``)::

    {"packages": ["mylib"],
     "functions": {"total": 3, "checked": 2,
                   "classes": [{"name": "mylib.ops.Square", "checked": true,
                                "private": false, "tests": ["tests/test_ops.py::test_sq"]}, ...]},
     "modules": {"total": 2, "checked": 1, "classes": [...]},
     "import_errors": [{"module": "mylib.broken", "error": "ImportError: ..."}]}

What a process exercised travels as ``{class name: {"kind", "tests"}}`` (an
xdist worker's share); :func:`coverage_section` puts it against the listing.
Imports no torch: the plugin's controller, the report and ``gradcheck-kit
report`` use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KINDS",
    "MAX_NAMES_LISTED",
    "MAX_TESTS_KEPT",
    "CoverageRow",
    "CoverageTable",
    "CoverageView",
    "add_exercised",
    "coverage_section",
    "coverage_view",
    "merge_coverage",
    "merge_exercised",
    "summary_lines",
]

# Document key and terminal label of each kind.
KINDS: dict[str, tuple[str, str]] = {
    "function": ("functions", "custom Functions"),
    "module": ("modules", "nn.Modules"),
}
# Unchecked classes named on a terminal line before "…and N more".
MAX_NAMES_LISTED = 10
# Tests named per class; past them the class says how many more exercised it.
MAX_TESTS_KEPT = 50

Exercised = MutableMapping[str, dict[str, Any]]


def add_exercised(into: Exercised, name: str, kind: str, test_id: str | None) -> None:
    """Note that a check in ``test_id`` (``None``: outside any test) exercised class ``name``.

    Examples:
        >>> seen = {}
        >>> add_exercised(seen, "lib.Sq", "function", "t.py::a")
        >>> add_exercised(seen, "lib.Sq", "function", "t.py::a")
        >>> seen
        {'lib.Sq': {'kind': 'function', 'tests': ['t.py::a']}}
    """
    entry = into.setdefault(name, {"kind": kind, "tests": []})
    if test_id is not None and test_id not in entry["tests"]:
        entry["tests"].append(test_id)


def merge_exercised(into: Exercised, other: Mapping[str, Mapping[str, Any]]) -> None:
    """Add what another process exercised (an xdist worker's share) to ``into``."""
    for name, entry in other.items():
        tests = [t for t in entry.get("tests", ()) if isinstance(t, str)]
        add_exercised(into, str(name), str(entry.get("kind", "")), None)
        for test_id in tests:
            add_exercised(into, str(name), str(entry.get("kind", "")), test_id)


def _in_any(name: str, packages: Sequence[str]) -> bool:
    module = name.rpartition(".")[0]
    return any(module == p or module.startswith(p + ".") for p in packages)


def _entry(name: str, private: bool, exercised: Mapping[str, Any] | None) -> dict[str, Any]:
    tests = sorted(exercised["tests"]) if exercised else []
    entry: dict[str, Any] = {
        "name": name,
        "checked": exercised is not None,
        "private": private,
        "tests": tests[:MAX_TESTS_KEPT],
    }
    if len(tests) > MAX_TESTS_KEPT:
        entry["more_tests"] = len(tests) - MAX_TESTS_KEPT
    return entry


def coverage_section(
    listings: Sequence[Mapping[str, Any]], exercised: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The document's ``coverage`` object: every listed class, checked or not.

    A class a check exercised that the listing lacks but that lies in one of the
    packages (defined inside a function, or in a submodule that failed to import
    here) is added, checked.

    Args:
        listings: Per package ``{"package", "classes": [{"name", "kind", "private"}],
            "import_errors": {module: error}}``.
        exercised: ``{class name: {"kind", "tests"}}`` of the whole run.

    Returns:
        ``{"packages", "functions", "modules", "import_errors"}``.

    Examples:
        >>> listing = {"package": "lib", "classes": [
        ...     {"name": "lib.Sq", "kind": "function", "private": False},
        ...     {"name": "lib.Cube", "kind": "function", "private": False}]}
        >>> section = coverage_section([listing], {"lib.Sq": {"kind": "function", "tests": ["t"]}})
        >>> section["functions"]["checked"], section["functions"]["total"]
        (1, 2)
    """
    packages = [str(listing["package"]) for listing in listings]
    kinds: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
    for listing in listings:
        for cls in listing.get("classes", ()):
            name, kind = str(cls["name"]), str(cls["kind"])
            if kind in kinds:
                kinds[kind][name] = _entry(name, bool(cls.get("private")), exercised.get(name))
    for name, entry in exercised.items():
        kind = str(entry.get("kind"))
        if kind in kinds and name not in kinds[kind] and _in_any(name, packages):
            private = name.rpartition(".")[2].startswith("_")
            kinds[kind][name] = _entry(name, private, entry)
    section: dict[str, Any] = {"packages": packages}
    for kind, (key, _) in KINDS.items():
        classes = [kinds[kind][name] for name in sorted(kinds[kind])]
        section[key] = {
            "total": len(classes),
            "checked": sum(1 for c in classes if c["checked"]),
            "classes": classes,
        }
    section["import_errors"] = [
        {"module": str(module), "error": str(error)}
        for listing in listings
        for module, error in sorted(dict(listing.get("import_errors") or {}).items())
    ]
    return section


def merge_coverage(sections: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """One ``coverage`` object from several documents' (CI shards): checked anywhere counts.

    Returns:
        ``None`` when no section is given.

    Examples:
        >>> a = coverage_section([{"package": "lib", "classes": [
        ...     {"name": "lib.Sq", "kind": "function", "private": False}]}], {})
        >>> b = coverage_section([{"package": "lib", "classes": []}],
        ...                      {"lib.Sq": {"kind": "function", "tests": ["t"]}})
        >>> merge_coverage([a, b])["functions"]["checked"]
        1
    """
    listings: dict[str, dict[str, Any]] = {}
    exercised: dict[str, dict[str, Any]] = {}
    found = False
    for section in sections:
        found = True
        packages = [str(p) for p in section.get("packages", ())]
        for package in packages:
            listings.setdefault(package, {"package": package, "classes": [], "import_errors": {}})
        # Classes are listed under the first package; coverage_section sorts them anyway.
        target = listings[packages[0]] if packages else None
        for kind, (key, _) in KINDS.items():
            for cls in (section.get(key) or {}).get("classes", ()):
                if not isinstance(cls, Mapping) or not isinstance(cls.get("name"), str):
                    continue  # a hand-edited file: keep what can be read
                if target is not None:
                    target["classes"].append({**cls, "kind": kind})
                if cls.get("checked"):
                    add_exercised(exercised, str(cls["name"]), kind, None)
                    for test_id in cls.get("tests", ()):
                        add_exercised(exercised, str(cls["name"]), kind, str(test_id))
        for error in section.get("import_errors", ()):
            if target is not None and isinstance(error, Mapping):
                target["import_errors"][str(error.get("module"))] = str(error.get("error"))
    if not found:
        return None
    return coverage_section(list(listings.values()), exercised)


def summary_lines(section: Mapping[str, Any], *, limit: int = MAX_NAMES_LISTED) -> list[str]:
    """One terminal line per kind: how many were checked, and the first unchecked ones.

    Examples:
        >>> section = coverage_section([{"package": "lib", "classes": [
        ...     {"name": f"lib.F{i}", "kind": "function", "private": False} for i in range(3)]}],
        ...     {"lib.F0": {"kind": "function", "tests": []}})
        >>> for line in summary_lines(section, limit=1):
        ...     print(line)
        custom Functions checked: 1/3; not checked: lib.F1, …and 1 more
        nn.Modules checked: 0/0
    """
    lines = []
    for key, label in KINDS.values():
        part = section.get(key) or {}
        classes = part.get("classes", [])
        line = f"{label} checked: {part.get('checked', 0)}/{part.get('total', len(classes))}"
        unchecked = [str(c["name"]) for c in classes if not c.get("checked")]
        if unchecked:
            shown = unchecked[:limit]
            more = len(unchecked) - len(shown)
            line += "; not checked: " + ", ".join(shown) + (f", …and {more} more" if more else "")
        lines.append(line)
    return lines


@dataclass(frozen=True)
class CoverageRow:
    """One class in the page's coverage tables."""

    name: str
    checked: bool
    private: bool
    tests: tuple[str, ...]
    more_tests: int = 0


@dataclass(frozen=True)
class CoverageTable:
    """One kind's table: its label, the counts and a row per class, unchecked first."""

    label: str
    checked: int
    total: int
    rows: tuple[CoverageRow, ...]


@dataclass(frozen=True)
class CoverageView:
    """What the page shows of a document's ``coverage``."""

    packages: tuple[str, ...]
    tables: tuple[CoverageTable, ...]
    import_errors: tuple[tuple[str, str], ...]


def coverage_view(section: Any) -> CoverageView | None:
    """The page's view of a ``coverage`` object; ``None`` when the document has none.

    Examples:
        >>> view = coverage_view(coverage_section([{"package": "lib", "classes": [
        ...     {"name": "lib.Net", "kind": "module", "private": False}]}], {}))
        >>> [(t.label, t.checked, t.total) for t in view.tables]
        [('custom Functions', 0, 0), ('nn.Modules', 0, 1)]
    """
    if not isinstance(section, Mapping):
        return None
    tables = []
    for key, label in KINDS.values():
        part = section.get(key) or {}
        rows = [
            CoverageRow(
                name=str(c.get("name", "?")),
                checked=bool(c.get("checked")),
                private=bool(c.get("private")),
                tests=tuple(str(t) for t in c.get("tests", ())),
                more_tests=int(c.get("more_tests", 0) or 0),
            )
            for c in part.get("classes", ())
            if isinstance(c, Mapping)
        ]
        rows.sort(key=lambda r: (r.checked, r.name))
        tables.append(
            CoverageTable(
                label, int(part.get("checked", 0) or 0), int(part.get("total", 0) or 0), tuple(rows)
            )
        )
    errors = tuple(
        (str(e.get("module", "?")), str(e.get("error", "")))
        for e in section.get("import_errors", ())
        if isinstance(e, Mapping)
    )
    return CoverageView(tuple(str(p) for p in section.get("packages", ())), tuple(tables), errors)
