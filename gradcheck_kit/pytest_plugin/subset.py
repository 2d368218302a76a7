"""Was this pytest run the full suite, or a subset whose report must not replace the full one?

A run is **full** when pytest ran every test the project's usual run would run:

* no selection on the command line: no ``-k``, ``-m`` or ``--deselect`` beyond
  what the ini ``addopts`` (or ``PYTEST_ADDOPTS``) always adds, no ``--lf`` with
  failures on record, no ``--sw`` (``--ff`` only reorders: it counts as full);
* no narrower paths: no node id (``file.py::test``), no single file (unless the
  ini ``testpaths`` lists it), no folder inside one of ``testpaths``; a folder
  that is not inside ``testpaths`` (``pytest examples`` where ``testpaths =
  ["tests"]``, or any folder when there is no ``testpaths``) is a suite of its own;
* no early stop: ``-x`` / ``--maxfail`` did not stop it, it was not interrupted,
  and every collected test ran.

A subset run writes its files beside the full ones (:func:`subset_path`:
``reports/gradcheck.subset.json``), never in their place.

No torch here; pytest only for the types and ``ExitCode``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["RunScope", "subset_path", "path_reasons", "run_scope"]


@dataclass(frozen=True)
class RunScope:
    """Whether a run was the full suite, and if not, why not.

    Examples:
        >>> RunScope(reasons=("-k 'sin'", "stopped early")).describe()
        "subset run: -k 'sin', stopped early"
        >>> RunScope().full
        True
    """

    reasons: tuple[str, ...] = ()

    @property
    def full(self) -> bool:
        """True when nothing narrowed the run."""
        return not self.reasons

    def describe(self) -> str:
        """``"full run"`` or ``"subset run: <reasons>"``."""
        return "full run" if self.full else "subset run: " + ", ".join(self.reasons)


def subset_path(path: Path) -> Path:
    """Where a subset run writes instead of ``path``: ``<stem>.subset<suffix>`` beside it.

    Examples:
        >>> subset_path(Path("reports/gradcheck.json")).as_posix()
        'reports/gradcheck.subset.json'
        >>> subset_path(Path("out/results")).as_posix()
        'out/results.subset'
    """
    return path.with_name(f"{path.stem}.subset{path.suffix}")


def _inside(path: Path, folder: Path) -> bool:
    return path != folder and folder in path.parents


def path_reasons(
    args: Sequence[str], testpaths: Sequence[str], *, base: Path, rootdir: Path
) -> list[str]:
    """Why these command-line paths select less than the full suite (empty: they do not).

    Args:
        args: The paths and node ids given on the command line.
        testpaths: The ini ``testpaths`` (relative to ``rootdir``; globs expanded).
        base: The folder ``args`` are relative to (the invocation folder).
        rootdir: pytest's rootdir.

    Returns:
        One reason per narrowing argument.

    Examples:
        >>> root = Path("/p")
        >>> path_reasons(["examples"], ["tests"], base=root, rootdir=root)
        []
        >>> path_reasons(["tests/unit", "a.py::t"], ["tests"], base=root, rootdir=root)
        ['folder tests/unit inside testpaths', 'node id a.py::t']
    """
    tests = [Path(os.path.abspath(rootdir / t)) for t in testpaths]
    reasons: list[str] = []
    for arg in args:
        if "::" in arg:
            reasons.append(f"node id {arg}")
            continue
        path = Path(os.path.abspath(base / arg))
        if path in tests:
            continue
        if any(_inside(path, t) for t in tests):
            kind = "file" if path.suffix == ".py" or path.is_file() else "folder"
            reasons.append(f"{kind} {arg} inside testpaths")
        elif path.is_file() or (path.suffix == ".py" and not path.is_dir()):
            reasons.append(f"file {arg}")
    return reasons


def _addopts_tokens(config: pytest.Config) -> list[str]:
    tokens: list[str] = []
    with contextlib.suppress(ValueError):
        tokens.extend(str(t) for t in config.getini("addopts"))
    tokens.extend(shlex.split(os.environ.get("PYTEST_ADDOPTS", "")))
    return tokens


def _addopts_value(tokens: Sequence[str], flag: str) -> str | None:
    """The value ``flag`` (``-k``, ``-m``) gets from ``tokens``; the last one wins."""
    value: str | None = None
    for i, token in enumerate(tokens):
        if token == flag and i + 1 < len(tokens):
            value = tokens[i + 1]
        elif token.startswith(flag) and len(token) > len(flag):
            value = token[len(flag) :].lstrip("=")
    return value


def _selection_reasons(config: pytest.Config) -> list[str]:
    option = config.option
    tokens = _addopts_tokens(config)
    reasons: list[str] = []
    for flag, dest in (("-k", "keyword"), ("-m", "markexpr")):
        value = getattr(option, dest, "") or ""
        if value and value != _addopts_value(tokens, flag):
            reasons.append(f"{flag} {value!r}")
    standing = {tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "--deselect"}
    deselect = [d for d in getattr(option, "deselect", None) or () if d not in standing]
    if deselect:
        reasons.append("--deselect " + " ".join(deselect))
    if getattr(option, "lf", False):
        plugin = config.pluginmanager.get_plugin("lfplugin")
        # With no failures on record --lf runs everything (--lfnf all), or nothing.
        if plugin is None or getattr(plugin, "lastfailed", True):
            reasons.append("--lf")
    if getattr(option, "stepwise", False):
        reasons.append("--sw")
    return reasons


def _stop_reasons(session: pytest.Session, exitstatus: int, tests_run: int) -> list[str]:
    stopped = session.shouldfail or session.shouldstop
    if stopped:
        return [f"stopped early ({stopped})" if isinstance(stopped, str) else "stopped early"]
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        return ["interrupted"]
    collected = session.testscollected
    # Under xdist the controller collects nothing itself (0): no comparison there.
    if 0 < tests_run < collected:
        return [f"{tests_run} of {collected} collected tests ran"]
    return []


def run_scope(session: pytest.Session, exitstatus: int, *, tests_run: int) -> RunScope:
    """Decide whether the run that just ended was full (see the module's docstring).

    Args:
        session: The ending session.
        exitstatus: Its exit status.
        tests_run: How many tests reported a result.

    Returns:
        A :class:`RunScope`; its ``reasons`` name what narrowed the run.
    """
    config = session.config
    reasons = _selection_reasons(config)
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        testpaths = [str(t) for t in config.getini("testpaths")]
        reasons += path_reasons(
            config.args, testpaths, base=config.invocation_params.dir, rootdir=config.rootpath
        )
    elif config.args_source == pytest.Config.ArgsSource.INVOCATION_DIR:
        testpaths = [str(t) for t in config.getini("testpaths")]
        here = config.invocation_params.dir
        if any(_inside(here, Path(os.path.abspath(config.rootpath / t))) for t in testpaths):
            reasons.append(f"run from {here}, inside testpaths")
    reasons += _stop_reasons(session, int(exitstatus), tests_run)
    return RunScope(tuple(reasons))
