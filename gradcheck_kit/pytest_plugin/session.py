"""Run-wide state of the gradcheck plugin: collect every result, write the JSON and HTML files.

Knows nothing of pytest hooks (``plugin.py`` wires those) and imports no torch.
The document's shape and the writing live in :mod:`gradcheck_kit.report`; the
HTML renderer (and with it Jinja2) is imported only when a page is written.

Under pytest-xdist every worker records the results of its own tests and hands
them, with its environment, to the controller as plain dicts in
``config.workeroutput`` at the end of its session; the controller adds them in
``pytest_testnodedown`` and is the only process that writes the files (see
``plugin.py``).
"""

from __future__ import annotations

import functools
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from gradcheck_kit._src import recording
from gradcheck_kit.report.document import (
    DOCUMENT_SCHEMA_VERSION,
    TOOL_NAME,
    combine_environments,
    make_document,
    verdict,
    write_document,
)
from gradcheck_kit.report.safe_records import safe_record, stub_record

__all__ = ["DOCUMENT_SCHEMA_VERSION", "TOOL_NAME", "GradcheckSession", "environment"]


def _cpu_name() -> str:
    """The CPU's model name where the OS tells it cheaply, else the machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _torch_facts(torch: Any) -> dict[str, Any]:
    """The torch version, its CUDA build and the CUDA devices a check has already used."""
    facts: dict[str, Any] = {"torch": str(getattr(torch, "__version__", "unknown"))}
    devices: list[str] = []
    try:
        facts["cuda"] = torch.version.cuda
        # Only name the GPUs when CUDA is already initialised: initialising it here
        # would cost seconds and change the process's state for a line in a report.
        if torch.cuda.is_initialized():
            devices = [
                f"cuda:{i}: {torch.cuda.get_device_name(i)}"
                for i in range(torch.cuda.device_count())
            ]
    except Exception:
        pass  # a line in a report is not worth failing the run for
    facts["cuda_devices"] = devices
    return facts


def environment() -> dict[str, Any]:
    """Describe the interpreter, torch, devices and platform of this process.

    torch (and NumPy) are named only if something already imported them:
    importing torch here would cost every test run a second, for a line in a
    report. CUDA devices are named only once a check has initialised CUDA.

    Returns:
        ``{"python", "platform", "torch", "devices", ...}``: ``"torch"`` is
        ``"not imported"`` when no check ran; with torch also ``"cuda"`` (the
        CUDA version torch was built with, ``None`` for a CPU build); with
        NumPy ``"numpy"``.

    Examples:
        >>> {"devices", "platform", "python", "torch"} <= set(environment())
        True
    """
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": "not imported",
    }
    cuda_devices: list[str] = []
    torch = sys.modules.get("torch")
    if torch is not None:
        torch_facts = _torch_facts(torch)
        cuda_devices = torch_facts.pop("cuda_devices")
        facts.update(torch_facts)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        facts["numpy"] = str(getattr(numpy, "__version__", "unknown"))
    facts["devices"] = [f"cpu: {_cpu_name()}", *cuda_devices]
    return dict(sorted(facts.items()))


class GradcheckSession:
    """Collects the results published during one pytest run and saves them as JSON.

    Results are kept as the dicts of their ``to_dict()``, labelled with the id of
    the test that was running when they were published (``None`` outside tests).

    Args:
        version: The gradcheck_kit version to write into the document.

    Examples:
        >>> class Fake:
        ...     passed = False
        ...     def with_test_id(self, test_id):
        ...         return self
        ...     def to_dict(self):
        ...         return {"name": "sin", "passed": self.passed, "test_id": "t.py::test"}
        >>> session = GradcheckSession(version="0.1.0")
        >>> session.start()
        >>> recording.publish(Fake())
        >>> session.stop()
        >>> recording.publish(Fake())  # no longer listening
        >>> len(session.results), [r["name"] for r in session.failed]
        (1, ['sin'])
    """

    def __init__(self, version: str) -> None:
        self.version = version
        self.current_test_id: str | None = None
        self._results: list[dict[str, Any]] = []
        # (index in _results, whether the test read the result) of the running test's records
        self._in_test: list[tuple[int, Callable[[], bool | None]]] = []
        # indices in _results of the records published outside any test, not yet taken
        self._outside: list[int] = []
        self._environments: list[dict[str, Any]] = []
        self._started: float | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def results(self) -> list[dict[str, Any]]:
        """Every result recorded so far, in the order they arrived (a copy)."""
        return list(self._results)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The recorded results whose ``passed`` is false (not those without a verdict)."""
        return [r for r in self._results if verdict(r) == "failed"]

    def start(self) -> None:
        """Begin listening to :mod:`gradcheck_kit._src.recording`; idempotent."""
        if self._started is None:
            self._started = time.perf_counter()
        if self._unsubscribe is None:
            self._unsubscribe = recording.subscribe(self.record)

    def stop(self) -> None:
        """Stop listening; results recorded so far are kept."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def record(self, result: Any) -> None:
        """Keep ``result``, labelled with the running test's id when there is one.

        Args:
            result: An object with ``with_test_id(test_id)`` and ``to_dict()``,
                such as :class:`gradcheck_kit.GradcheckResult`.
        """
        published = result
        try:
            if self.current_test_id is not None:
                result = result.with_test_id(self.current_test_id)
            # Made JSON-safe now (names as text, no lone surrogates): the record also
            # travels from xdist workers and ends up in the files, where a bad one
            # would otherwise cost the whole report.
            data = safe_record(result.to_dict())
        except Exception as exc:
            data = stub_record({"test_id": self.current_test_id}, exc)
        self._results.append(data)
        if self.current_test_id is None:
            self._outside.append(len(self._results) - 1)
        else:
            # Watched only now: the check's own reads of its result must not count.
            recording.watch(published)
            self._in_test.append(
                (len(self._results) - 1, functools.partial(recording.was_read, published))
            )

    def record_from_rank(
        self, data: Mapping[str, Any], *, rank: int, looked_at: bool | None
    ) -> None:
        """Keep a record that a rank of a ``gradcheck(world_size=N)`` test published.

        Args:
            data: The record's ``to_dict()``, labelled with the test's id on the rank.
            rank: The rank that made the check, kept as ``extra["rank"]``.
            looked_at: Whether the test read the result on that rank (``None``: unknown).

        Examples:
            >>> session = GradcheckSession(version="0.1.0")
            >>> session.current_test_id = "t.py::test"
            >>> session.record_from_rank({"name": "sin", "passed": True}, rank=1, looked_at=None)
            >>> session.records_of_test()[0]["extra"]
            {'rank': 1}
        """
        record = safe_record(data)
        extra = record.get("extra")
        record["extra"] = {**(extra if isinstance(extra, dict) else {}), "rank": rank}
        self._results.append(record)
        if self.current_test_id is None:
            self._outside.append(len(self._results) - 1)
        else:
            self._in_test.append((len(self._results) - 1, lambda: looked_at))

    def records_of_test(self) -> list[dict[str, Any]]:
        """The records published since the running test began (the dicts themselves)."""
        return [self._results[index] for index, _ in self._in_test]

    def finish_test(
        self, outcome: str, *, file: str | None = None, line: int | None = None
    ) -> list[dict[str, Any]]:
        """Give the records of the test that just ended what pytest made of it.

        Each record gets ``test``: ``{"outcome", "looked_at", "file", "line"}``
        (see :func:`gradcheck_kit.report.document.verdict`); the results are
        let go, so that the session keeps no check's objects alive.

        Args:
            outcome: One of :data:`gradcheck_kit.report.document.TEST_OUTCOMES`.
            file: The test's file, relative to the rootdir.
            line: The test's line, from 1.

        Returns:
            Those records.
        """
        for index, was_read in self._in_test:
            test: dict[str, Any] = {"outcome": outcome}
            read = was_read()
            if read is not None:
                test["looked_at"] = read
            if file is not None and line is not None:
                test.update(file=file, line=line)
            self._results[index]["test"] = test
        finished = [self._results[index] for index, _ in self._in_test]
        self._in_test.clear()
        return finished

    def take_records_outside_tests(self) -> list[dict[str, Any]]:
        """The records published outside any test since the last call (the dicts themselves)."""
        taken = [self._results[index] for index in self._outside]
        self._outside.clear()
        return taken

    def extend(
        self,
        results: Iterable[Mapping[str, Any]],
        environment: Mapping[str, Any] | None = None,
    ) -> None:
        """Add results that another process recorded (an xdist worker's dicts).

        Args:
            results: The other process's records.
            environment: What that process ran on (its :func:`environment`):
                the workers, not the controller, import torch and use the GPUs.
        """
        self._results.extend(safe_record(r) for r in results)
        if environment:
            self._environments.append(dict(environment))

    def document(self, *, run: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The whole run as one JSON-ready document (``gradcheck_kit.report.document``).

        Args:
            run: Facts only the caller knows, added to the environment: the
                plugin passes ``{"seeds": {...}, "options": {...}}``.

        Returns:
            ``{"schema_version", "tool", "version", "created", "duration_s",
            "environment", "summary", "results"}``.
        """
        env = combine_environments([environment(), *self._environments])
        env.update(run or {})
        started = self._started
        return make_document(
            self.results,
            environment=env,
            duration_s=None if started is None else round(time.perf_counter() - started, 3),
            version=self.version,
        )

    def write_json(self, path: Path, document: Mapping[str, Any] | None = None) -> Path:
        """Write ``document`` (default :meth:`document`) to ``path`` atomically.

        A reader never sees half a file: the text goes to a temporary file in the
        same folder, which then replaces ``path`` in one step; the folder is created.

        Args:
            path: Where the JSON document goes.
            document: The document to write, when the caller already built it.

        Returns:
            ``path``.

        Raises:
            ValueError: A result holds a float JSON cannot represent (NaN, Inf).
        """
        return write_document(self.document() if document is None else document, path)

    def write_html(self, path: Path, document: Mapping[str, Any] | None = None) -> Path:
        """Render ``document`` (default :meth:`document`) as the HTML page at ``path``, atomically.

        Args:
            path: Where the page goes.
            document: The document to render, when the caller already built it.

        Returns:
            ``path``.
        """
        # Imported here: Jinja2 costs every pytest run without --gradcheck nothing.
        from gradcheck_kit.report.html import write_html

        return write_html(self.document() if document is None else document, path)
