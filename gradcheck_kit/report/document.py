"""The JSON document of a run: build it, read it back, check it, merge several.

One document per run (or per merge of runs)::

    {"schema_version": 2, "tool": "gradcheck_kit", "version": "0.1.0",
     "created": "<UTC ISO time>", "duration_s": 12.5,
     "environment": {"python": ..., "torch": ..., "cuda": ..., "devices": [...],
                     "seeds": {...}, "options": {...}, ...},
     "summary": {"checks": 3, "passed": 1, "failed": 1, "expected_failure": 0,
                 "unasserted": 0, "no_verdict": 1,
                 "by_kind": {"gradient": {"checks": 2, ...}, ...}},
     "sources": [...],          # only in a merge: one entry per merged file
     "results": [{"kind": "gradient", "passed": false, "test_id": ..., ...}, ...]}

Every record in ``results`` is the ``to_dict()`` of a check and says what it is
in ``kind`` (``gradient``, ``manual``, ``training``, ``device_benchmark``,
``device_parity``, ``graph``, or any later kind). ``passed`` is the check's verdict; ``null``
(or no key) means the record carries none, as a benchmark may. A record made in
a pytest test also carries ``test``: ``{"outcome"`` (what pytest made of that
test), ``"looked_at"`` (whether the test read the result after the check
returned it), ``"file", "line"}``, so that a failure the test expected is told
from a real one (:func:`verdict`). ``document_schema.json``
next to this module is the JSON Schema; ``summary`` is derived from ``results``
and recomputed whenever a document is read.

Version 1 (before reports) had no ``summary``/``duration_s``/``sources``; it is
read and upgraded in memory. A newer version than this code knows is refused.

Imports nothing beyond the standard library: the pytest plugin and the
``gradcheck-kit`` command use it on machines without torch or Jinja2.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from gradcheck_kit import __version__
from gradcheck_kit.report.coverage import merge_coverage
from gradcheck_kit.report.files import write_text_atomic

__all__ = [
    "DOCUMENT_SCHEMA_VERSION",
    "TOOL_NAME",
    "KNOWN_KINDS",
    "VERDICTS",
    "TEST_OUTCOMES",
    "DocumentError",
    "verdict",
    "summarize",
    "make_document",
    "parse_document",
    "load_document",
    "merge_documents",
    "combine_environments",
    "dumps_document",
    "write_document",
]

DOCUMENT_SCHEMA_VERSION = 2
TOOL_NAME = "gradcheck_kit"
# Kinds with a dedicated rendering; any other kind is shown generically.
KNOWN_KINDS = (
    "gradient",
    "manual",
    "training",
    "device_benchmark",
    "device_parity",
    "graph",
    "ddp",
)

Verdict = Literal["passed", "failed", "expected_failure", "unasserted", "no_verdict"]
VERDICTS: tuple[Verdict, ...] = ("passed", "failed", "expected_failure", "unasserted", "no_verdict")
"""Every verdict a record can have, in the order reports list them."""
TEST_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
"""The ``test.outcome`` of a record: what pytest made of the test that ran the check."""
# Outcomes of a test that pytest did not fail: a failed check in it was expected.
_OUTCOMES_THAT_DID_NOT_FAIL = frozenset({"passed", "skipped", "xfailed", "xpassed"})
MAX_NESTING = 100
"""Lists and objects deeper than this are refused: a results file goes about 10 deep, and
code that walks a document (copies, JSON writers, the page) recurses once per level."""
# Environment values that say "not known here": another source's value wins over them.
_UNKNOWN_VALUES = (None, "", "not imported", "unknown")


class DocumentError(ValueError):
    """A results file cannot be used; the message names the file and says why.

    Examples:
        >>> try:
        ...     parse_document("[]", source="shard.json")
        ... except DocumentError as exc:
        ...     print(str(exc)[:62])
        'shard.json' is not a gradcheck_kit results file (no 'results'
    """


def verdict(record: Mapping[str, Any]) -> Verdict:
    """The verdict of one record: its ``passed`` read with its test's outcome.

    A failed check counts as a failure when its test failed too (or errored), or when no test
    ran it (a script, ``gradcheck-kit check``, a file written before records
    carried a ``test``). In a test that pytest did not fail (it passed,
    was an expected failure, or was skipped) the failure was expected: the test
    read the result (``looked_at``) or caught the assertion it raised
    (``pytest.raises``), or pytest marked it ``xfail``. A failed result that the
    passing test never read is ``unasserted``: nothing checked it, which is
    worth a warning but is not a failure of the run.

    Args:
        record: One entry of a document's ``results``.

    Returns:
        ``"passed"`` for ``passed: true``; for ``false`` one of ``"failed"``,
        ``"expected_failure"`` and ``"unasserted"``; ``"no_verdict"`` when
        ``passed`` is missing or ``null``.

    Examples:
        >>> verdict({"passed": False}), verdict({"kind": "device_benchmark"})
        ('failed', 'no_verdict')
        >>> verdict({"passed": False, "test": {"outcome": "passed", "looked_at": True}})
        'expected_failure'
        >>> verdict({"passed": False, "test": {"outcome": "passed", "looked_at": False}})
        'unasserted'
        >>> verdict({"passed": False, "test": {"outcome": "xfailed"}})
        'expected_failure'
    """
    passed = record.get("passed")
    if passed is True:
        return "passed"
    if passed is not False:
        return "no_verdict"
    test = record.get("test")
    if not isinstance(test, Mapping) or test.get("outcome") not in _OUTCOMES_THAT_DID_NOT_FAIL:
        return "failed"
    if test.get("outcome") == "xfailed" or test.get("looked_at") is not False:
        return "expected_failure"
    return "unasserted"


def _kind(record: Mapping[str, Any]) -> str:
    kind = record.get("kind")
    return kind if isinstance(kind, str) and kind else "unknown"


def summarize(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Count the records by verdict, overall and per kind.

    Args:
        results: A document's ``results``.

    Returns:
        ``{"checks", "passed", "failed", "expected_failure", "unasserted",
        "no_verdict", "by_kind": {kind: same}}`` (see :func:`verdict`), kinds in
        order of first appearance.

    Examples:
        >>> s = summarize([{"kind": "gradient", "passed": True},
        ...                {"kind": "training", "passed": False},
        ...                {"kind": "gradient", "passed": False, "test": {"outcome": "xfailed"}}])
        >>> s["checks"], s["failed"], s["expected_failure"], s["by_kind"]["training"]["failed"]
        (3, 1, 1, 1)
    """

    def counts() -> dict[str, int]:
        return {"checks": 0, **dict.fromkeys(VERDICTS, 0)}

    total = counts()
    by_kind: dict[str, dict[str, int]] = {}
    for record in results:
        word = verdict(record)
        for bucket in (total, by_kind.setdefault(_kind(record), counts())):
            bucket["checks"] += 1
            bucket[word] += 1
    return {**total, "by_kind": by_kind}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_document(
    results: Sequence[Mapping[str, Any]],
    *,
    environment: Mapping[str, Any] | None = None,
    duration_s: float | None = None,
    created: str | None = None,
    version: str = __version__,
    sources: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Assemble a document of the current schema from its parts.

    Args:
        results: The records (``to_dict()`` of each check), kept as given.
        environment: What the run ran on (see ``document_schema.json``).
        duration_s: Wall time of the run, when known.
        created: UTC ISO time; default now.
        version: The gradcheck_kit version that made the records.
        sources: For a merge, one entry per merged document.

    Returns:
        A JSON-ready dict with a fresh ``summary``.

    Examples:
        >>> doc = make_document([{"kind": "gradient", "passed": True}])
        >>> doc["schema_version"], doc["summary"]["passed"]
        (2, 1)
    """
    document: dict[str, Any] = {
        "schema_version": DOCUMENT_SCHEMA_VERSION,
        "tool": TOOL_NAME,
        "version": version,
        "created": created or _now(),
        "duration_s": duration_s,
        "environment": dict(environment or {}),
        "summary": summarize(results),
    }
    if sources is not None:
        document["sources"] = [dict(s) for s in sources]
    document["results"] = [dict(r) for r in results]
    return document


def parse_document(text: str, *, source: str = "<string>") -> dict[str, Any]:
    """Read a document from JSON text, check its shape, upgrade it to the current schema.

    Checks what the report relies on (an object with a ``results`` list of
    objects, a known ``schema_version``, a string ``kind`` and a boolean or null
    ``passed`` where present); ``document_schema.json`` describes the rest.

    Args:
        text: The file's content.
        source: How to name the file in messages.

    Returns:
        The document, with ``schema_version`` = :data:`DOCUMENT_SCHEMA_VERSION`
        and ``summary`` recomputed.

    Raises:
        DocumentError: Invalid JSON, not a results document, a newer
            ``schema_version``, or a malformed record; the message says which.

    Examples:
        >>> parse_document('{"schema_version": 1, "results": []}')["schema_version"]
        2
        >>> try:
        ...     parse_document('{"schema_version": 9, "results": []}', source="new.json")
        ... except DocumentError as exc:
        ...     print(str(exc)[:55])
        'new.json' has schema_version=9, newer than this gradch
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"'{source}' is not valid JSON: {exc}") from None
    except RecursionError:
        document = None  # json's parser gave up: deeper than Python's recursion limit.
    if document is None or _nesting(document) > MAX_NESTING:
        raise DocumentError(
            f"'{source}' is nested too deeply (more than {MAX_NESTING} levels of lists and "
            "objects); a results file is at most about 10 deep"
        )
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise DocumentError(
            f"'{source}' is not a gradcheck_kit results file (no 'results' list); "
            "write one with pytest --gradcheck"
        )
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DocumentError(
            f"'{source}' has schema_version={version!r}; expected a whole number from 1 "
            f"to {DOCUMENT_SCHEMA_VERSION}"
        )
    if version > DOCUMENT_SCHEMA_VERSION:
        raise DocumentError(
            f"'{source}' has schema_version={version!r}, newer than this gradcheck_kit "
            f"{__version__} reads (up to {DOCUMENT_SCHEMA_VERSION}): "
            "upgrade gradcheck_kit to read it"
        )
    for index, record in enumerate(document["results"]):
        if not isinstance(record, dict):
            raise DocumentError(f"'{source}': results[{index}] is not an object: {record!r}")
        if "kind" in record and not isinstance(record["kind"], str):
            raise DocumentError(
                f"'{source}': results[{index}].kind: expected a string, "
                f"got {json.dumps(record['kind'])}"
            )
        # Identity, not ==: 0 == False in Python, but 0 is no verdict in JSON.
        if not any(record.get("passed") is ok for ok in (True, False, None)):
            raise DocumentError(
                f"'{source}': results[{index}].passed: expected a boolean or null, "
                f"got {json.dumps(record['passed'])}"
            )
    environment = document.get("environment", {})
    if not isinstance(environment, dict):
        raise DocumentError(f"'{source}': environment is not an object: {environment!r}")
    # Version 1 had no summary, duration or sources; everything else is the same.
    document["schema_version"] = DOCUMENT_SCHEMA_VERSION
    document.setdefault("tool", TOOL_NAME)
    document.setdefault("version", "unknown")
    document.setdefault("created", "")
    document.setdefault("duration_s", None)
    document["environment"] = environment
    document["summary"] = summarize(document["results"])
    return document


def _nesting(value: Any) -> int:
    """How many lists and objects deep ``value`` goes; iterative, so any depth is safe."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, depth)
            if depth > MAX_NESTING:
                break
            items = node.values() if isinstance(node, dict) else node
            stack.extend((item, depth + 1) for item in items if isinstance(item, (list, dict)))
    return deepest


def load_document(path: Path) -> dict[str, Any]:
    """Read the document in ``path`` (see :func:`parse_document`).

    Args:
        path: A JSON file written by ``pytest --gradcheck`` or ``gradcheck-kit report --json``.

    Returns:
        The checked, upgraded document.

    Raises:
        DocumentError: The file is missing, unreadable, or not a usable document.

    Examples:
        >>> load_document(Path("no/such/file.json"))
        Traceback (most recent call last):
        ...
        gradcheck_kit.report.document.DocumentError: no such file: 'no/such/file.json'
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DocumentError(f"no such file: '{path}'") from None
    except IsADirectoryError:
        raise DocumentError(f"'{path}' is a folder, not a results file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"cannot read '{path}': {exc}") from None
    return parse_document(text, source=str(path))


def combine_environments(environments: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One environment for records that come from several processes or machines.

    Equal values are kept once; a known value beats ``"not imported"``/``None``
    (an xdist controller that never imported torch, next to workers that did);
    lists are united and objects combined key by key; other differing values
    are joined with ``" | "`` (two CI shards on different machines).

    Args:
        environments: The environments, first one first.

    Returns:
        A new dict.

    Examples:
        >>> combine_environments([{"torch": "not imported", "devices": ["cpu"]},
        ...                       {"torch": "2.13.0", "devices": ["cpu", "cuda:0"]}])
        {'torch': '2.13.0', 'devices': ['cpu', 'cuda:0']}
        >>> combine_environments([{"python": "3.11.7"}, {"python": "3.12.1"}])
        {'python': '3.11.7 | 3.12.1'}
    """
    out: dict[str, Any] = {}
    for environment in environments:
        for key, value in environment.items():
            if key not in out or out[key] in _UNKNOWN_VALUES:
                out[key] = copy.deepcopy(value)
                continue
            current = out[key]
            if current == value or value in _UNKNOWN_VALUES:
                continue
            if isinstance(current, list) and isinstance(value, list):
                out[key] = current + [v for v in value if v not in current]
            elif isinstance(current, dict) and isinstance(value, dict):
                out[key] = combine_environments([current, value])
            else:
                seen = str(current).split(" | ")
                if str(value) not in seen:
                    out[key] = " | ".join([*seen, str(value)])
    return out


def _source_entry(name: str, document: Mapping[str, Any]) -> dict[str, Any]:
    summary = summarize(document["results"])
    return {
        "path": name,
        "created": document.get("created", ""),
        "version": document.get("version", "unknown"),
        "duration_s": document.get("duration_s"),
        "checks": summary["checks"],
        "failed": summary["failed"],
        "environment": dict(document.get("environment", {})),
    }


def merge_documents(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Merge documents (CI shards, xdist workers, several runs) into one.

    Records are concatenated in the order given, each kept exactly once as it
    was; the environments are combined (:func:`combine_environments`); the
    duration is the longest run's (shards run side by side); ``sources`` lists
    every input, flattening earlier merges.

    Args:
        documents: ``(name, document)`` pairs, the name usually the file path.

    Returns:
        A document of the current schema.

    Raises:
        ValueError: ``documents`` is empty.

    Examples:
        >>> a = make_document([{"kind": "gradient", "passed": True}], duration_s=2.0)
        >>> b = make_document([{"kind": "gradient", "passed": False}], duration_s=3.0)
        >>> merged = merge_documents([("a.json", a), ("b.json", b)])
        >>> merged["summary"]["checks"], merged["duration_s"], len(merged["sources"])
        (2, 3.0, 2)
    """
    if not documents:
        raise ValueError("merge_documents needs at least one document, got none.")
    results: list[Mapping[str, Any]] = []
    sources: list[dict[str, Any]] = []
    durations: list[float] = []
    for name, document in documents:
        results.extend(document["results"])
        earlier = document.get("sources")
        if isinstance(earlier, list) and earlier:
            sources.extend(dict(s) for s in earlier)
        else:
            sources.append(_source_entry(name, document))
        duration = document.get("duration_s")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool):
            durations.append(float(duration))
    merged = make_document(
        results,
        environment=combine_environments(d.get("environment", {}) for _, d in documents),
        duration_s=max(durations) if durations else None,
        sources=sources,
    )
    # Gradient coverage of the shards: a class checked in any of them is checked.
    coverage = merge_coverage(
        d["coverage"] for _, d in documents if isinstance(d.get("coverage"), Mapping)
    )
    if coverage is not None:
        merged["coverage"] = coverage
    return merged


def dumps_document(document: Mapping[str, Any]) -> str:
    """The document as strict JSON text: indented, one record per line, no NaN/Infinity.

    One line per record keeps a file of 10,000 checks a third of its indented
    size, and lets ``grep`` and ``diff`` work record by record.

    Raises:
        ValueError: A record holds a float JSON cannot represent (NaN, Inf).

    Examples:
        >>> print(dumps_document({"schema_version": 2, "results": [{"kind": "x"}, {}]}), end="")
        {
          "schema_version": 2,
          "results": [
            {"kind": "x"},
            {}
          ]
        }
    """
    head = {k: v for k, v in document.items() if k != "results"}
    text = json.dumps(head, indent=2, ensure_ascii=False, allow_nan=False)
    records = ",\n".join(
        "    " + json.dumps(r, ensure_ascii=False, allow_nan=False) for r in document["results"]
    )
    body = f'"results": [\n{records}\n  ]' if records else '"results": []'
    return (text[:-2] + ",\n  " if head else "{\n  ") + body + "\n}\n"


def write_document(document: Mapping[str, Any], path: Path) -> Path:
    """Write ``document`` to ``path`` as JSON, atomically (see :mod:`.files`).

    Args:
        document: A document of the current schema.
        path: Where it goes; the folder is created.

    Returns:
        ``path``.

    Raises:
        ValueError: A record holds NaN or Inf as a float (nothing is written).

    Examples:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "merged.json"
        >>> load_document(write_document(make_document([]), out))["summary"]["checks"]
        0
    """
    # Serialise first: a record JSON cannot hold must not cost the previous file.
    return write_text_atomic(path, dumps_document(document))
