"""Atomic writes: a reader (or a killed run) never leaves half a file, or half a pair, behind.

Each text goes to a temporary file in its target's folder (same file system, so
the rename is atomic), which then replaces the target in one step. If anything
fails before the rename, the temporary files are removed and the previous files
are left as they were.

:func:`write_files_atomic` replaces several files (the JSON document and its
HTML page) as a set: every text is written and flushed to disk first, and only
then are the targets renamed, back to back, with SIGTERM and SIGINT held off
between the renames, so a run stopped by a signal leaves either the old pair or
the new one. Only SIGKILL (or a power cut) in the few microseconds between two
``rename`` calls can leave a new file beside an old one (``benchmarks/
kill_during_write.py`` measures it). A SIGTERM while the texts are written
removes the temporary files before the process ends as the signal asks;
temporary files that a SIGKILL left behind (``.gradcheck-<pid>-*.tmp``) are
removed by the next write to that folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["TEMP_PREFIX", "write_text_atomic", "write_files_atomic", "remove_stale_temps"]

TEMP_PREFIX = ".gradcheck-"
"""How every temporary file of a write starts: ``.gradcheck-<pid>-<random>.<target>.tmp``."""

_BATCH = 4096
# A temporary file whose writer is gone, or this old, is left over from a killed run.
_STALE_AFTER_S = 3600.0
# Signals after which the temporary files are removed before the process ends.
_CLEANUP_SIGNALS = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s
)
# Signals held off between the renames of a set (where pthread_sigmask exists).
_HELD_SIGNALS = {s for s in (getattr(signal, "SIGTERM", None), signal.SIGINT) if s}


class _Terminated(BaseException):
    """Raised from the signal handler to unwind a write; the signal is re-sent after."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_of(name: str) -> int | None:
    """The writer's pid in ``.gradcheck-<pid>-<random>.<target>.tmp``, else None."""
    head = name[len(TEMP_PREFIX) :].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or no way to tell: assume it still writes
    return True


def remove_stale_temps(folder: Path, *, now: float | None = None) -> list[Path]:
    """Remove the temporary files that killed writes left in ``folder``.

    A file ``.gradcheck-<pid>-*.tmp`` is stale when process ``<pid>`` no longer
    exists on this machine, or when it is over an hour old (a pid reused, or a
    folder shared between machines). A live writer's file is left alone.

    Args:
        folder: The folder of a report.
        now: The current time (seconds since the epoch), for tests.

    Returns:
        The files removed.

    Examples:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".gradcheck-999999999-x.gradcheck.json.tmp").write_text("{")
        >>> [p.name for p in remove_stale_temps(folder)]
        ['.gradcheck-999999999-x.gradcheck.json.tmp']
    """
    removed: list[Path] = []
    now = time.time() if now is None else now
    try:
        candidates = list(folder.glob(f"{TEMP_PREFIX}*.tmp"))
    except OSError:
        return removed
    for path in candidates:
        pid = _pid_of(path.name)
        try:
            old = now - path.stat().st_mtime > _STALE_AFTER_S
        except OSError:
            continue  # gone already
        if old or pid is None or not _alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def _write_temp(path: Path, chunks: str | Iterable[str]) -> str:
    """Write ``chunks`` to a new temporary file beside ``path``, on disk; return its name."""
    if isinstance(chunks, str):
        chunks = (chunks,)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=f".{path.name}.tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as tmp:
            # Jinja2 yields a piece per expression (a quarter of a million for 10,000
            # checks); joining them in batches costs a tenth of writing them one by one.
            batch: list[str] = []
            for chunk in chunks:
                batch.append(chunk)
                if len(batch) >= _BATCH:
                    tmp.write("".join(batch))
                    batch.clear()
            tmp.write("".join(batch))
            tmp.flush()
            # The rename must not reach the disk before the data does (a crash of
            # the machine right after it would otherwise leave an empty report).
            os.fsync(tmp.fileno())
        # mkstemp makes the file private (0600); a report is as readable as any new file.
        os.chmod(tmp_name, 0o666 & ~_current_umask())
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return tmp_name


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """While writing, SIGTERM (and SIGHUP) unwind the write instead of killing the process.

    Installed only in the main thread (the only one Python delivers signals to)
    and only for signals whose handler is the default one or ours to replace;
    the previous handlers are restored on the way out, and a signal that arrived
    is sent again, so the process then ends (or not) exactly as it would have.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(signum)

    received: int | None = None
    try:
        for signum in _CLEANUP_SIGNALS:
            if signal.getsignal(signum) is None:
                continue  # a handler installed from C: we could not put it back
            previous[signum] = signal.signal(signum, handler)
        yield
    except _Terminated as exc:
        received = exc.signum
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    if received is not None:
        # The temporary files are gone (the caller's cleanup ran); now end as asked.
        os.kill(os.getpid(), received)
        # Still here: the process's own handler chose to go on. The write did not happen.
        raise InterruptedError(
            f"writing was interrupted by signal {received}; the previous files are kept"
        )


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the renames of a set are all done."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # Windows: no signal masks; the renames are back to back anyway
        yield
        return
    old = mask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


def write_files_atomic(files: Sequence[tuple[Path, str | Iterable[str]]]) -> list[Path]:
    """Replace several files as a set: all the new ones, or (on failure) all the old ones.

    Every text is written to a temporary file beside its target and flushed to
    disk; then the targets are replaced one right after the other, with SIGTERM
    and SIGINT held off until the last rename. An error (or SIGTERM, SIGINT)
    while writing removes every temporary file and leaves the old set. Stale
    temporary files of killed writes in the targets' folders are removed first.

    Args:
        files: ``(path, text)`` pairs; a text may be an iterable of pieces (a
            Jinja2 ``generate()`` stream), written as it is produced. The folders
            are created when missing.

    Returns:
        The paths, in order.

    Raises:
        OSError: A folder cannot be created or written (nothing is replaced);
            ``InterruptedError`` when a signal stopped the write and the process's
            own handler let it go on.
        ValueError: Two entries name the same file.

    Examples:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> pair = [(folder / "a.json", "{}"), (folder / "a.html", ["<p>", "</p>"])]
        >>> paths = write_files_atomic(pair)
        >>> [p.read_text() for p in paths]
        ['{}', '<p></p>']
    """
    paths = [Path(path) for path, _ in files]
    if len({os.path.abspath(p) for p in paths}) != len(paths):
        raise ValueError(f"the same file is named twice: {[str(p) for p in paths]}")
    for folder in dict.fromkeys(p.parent for p in paths):
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder)
    temps: list[str] = []
    with _signals_unwind():
        try:
            for path, chunks in files:
                temps.append(_write_temp(Path(path), chunks))
            with _signals_held():
                for tmp_name, path in zip(temps, paths, strict=True):
                    os.replace(tmp_name, path)
        except BaseException:
            for tmp_name in temps:
                Path(tmp_name).unlink(missing_ok=True)
            raise
    return paths


def write_text_atomic(path: Path, chunks: str | Iterable[str]) -> Path:
    """Write ``chunks`` (a string or an iterable of strings) to ``path`` atomically.

    An iterable is written as it is produced (a Jinja2 ``generate()`` stream), so
    an error raised by it mid-way is a failure mid-write: ``path`` keeps its
    previous content. The folder is created when missing.

    Args:
        path: The file to write (UTF-8).
        chunks: The text, whole or in pieces.

    Returns:
        ``path``.

    Raises:
        OSError: The folder cannot be created or written.

    Examples:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> write_text_atomic(folder / "out" / "a.txt", ["one ", "two"]).read_text()
        'one two'
    """
    return write_files_atomic([(path, chunks)])[0]
