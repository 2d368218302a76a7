"""Run-wide state of the gradcheck plugin: collect every result, write one JSON file.

Knows nothing of pytest hooks (``plugin.py`` wires those) and imports no torch.

Under pytest-xdist every worker records the results of its own tests and hands
them to the controller as plain dicts in ``config.workeroutput`` at the end of
its session; the controller adds them in ``pytest_testnodedown`` and is the only
process that writes the file (see ``plugin.py``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gradcheck_kit._src import recording

__all__ = ["DOCUMENT_SCHEMA_VERSION", "TOOL_NAME", "GradcheckSession", "environment"]

DOCUMENT_SCHEMA_VERSION = 1
TOOL_NAME = "gradcheck_kit"


def environment() -> dict[str, str]:
    """Describe the interpreter, torch and platform of this run.

    torch is named only if something already imported it: importing it here
    would cost every test run a second, for a line in a report.

    Returns:
        ``{"python": ..., "torch": ..., "platform": ...}``; ``"torch"`` is
        ``"not imported"`` when no check ran.

    Examples:
        >>> sorted(environment())
        ['platform', 'python', 'torch']
    """
    torch = sys.modules.get("torch")
    torch_version = str(getattr(torch, "__version__", "unknown")) if torch else "not imported"
    return {
        "python": platform.python_version(),
        "torch": torch_version,
        "platform": platform.platform(),
    }


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def results(self) -> list[dict[str, Any]]:
        """Every result recorded so far, in the order they arrived (a copy)."""
        return list(self._results)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The recorded results whose ``passed`` is false."""
        return [r for r in self._results if not r.get("passed", False)]

    def start(self) -> None:
        """Begin listening to :mod:`gradcheck_kit._src.recording`; idempotent."""
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
                such as :class:`gradcheck_kit.GradCheckResult`.
        """
        if self.current_test_id is not None:
            result = result.with_test_id(self.current_test_id)
        self._results.append(dict(result.to_dict()))

    def extend(self, results: Iterable[Mapping[str, Any]]) -> None:
        """Add results that another process recorded (an xdist worker's dicts)."""
        self._results.extend(dict(r) for r in results)

    def document(self) -> dict[str, Any]:
        """The whole run as one JSON-ready document.

        Returns:
            ``{"schema_version", "tool", "version", "created", "environment", "results"}``.
        """
        return {
            "schema_version": DOCUMENT_SCHEMA_VERSION,
            "tool": TOOL_NAME,
            "version": self.version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(),
            "results": self.results,
        }

    def write_json(self, path: Path) -> Path:
        """Write :meth:`document` to ``path`` atomically, creating its folder.

        A reader never sees half a file: the text goes to a temporary file in the
        same folder, which then replaces ``path`` in one step.

        Args:
            path: Where the JSON document goes.

        Returns:
            ``path``.

        Raises:
            ValueError: A result holds a float JSON cannot represent (NaN, Inf).
        """
        text = json.dumps(self.document(), indent=2, allow_nan=False) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as tmp:
                tmp.write(text)
            # mkstemp makes the file private (0600); a report is as readable as any new file.
            os.chmod(tmp_name, 0o666 & ~_current_umask())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return path
