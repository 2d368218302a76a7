"""Check where the report files go, at configure time, before any test runs.

A path that cannot be written would otherwise fail at the very end of the run,
after every test, with a traceback and no report. Each problem is a
``pytest.UsageError`` that names the option and the path. No torch, no hooks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["check_report_paths"]


def _nearest_existing(path: Path) -> Path:
    for candidate in path.parents:
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _check_one(option: str, path: Path) -> None:
    if path.is_dir():
        raise pytest.UsageError(
            f"{option}: {path} is a folder; give a file path such as "
            f"{path / ('gradcheck' + ('.html' if 'report' in option else '.json'))}."
        )
    folder = _nearest_existing(path)
    if not folder.is_dir():
        raise pytest.UsageError(
            f"{option}: cannot write {path}: {folder} is a file, so the folder "
            f"{path.parent} cannot be made; choose another path."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise pytest.UsageError(
            f"{option}: cannot write {path}: the folder {folder} is not writable; "
            "choose another path or fix its permissions."
        )


def check_report_paths(json_path: Path, report_path: Path) -> None:
    """Refuse report paths that the end of the run could not write.

    Args:
        json_path: The resolved ``--gradcheck-json`` path.
        report_path: The resolved ``--gradcheck-report`` path.

    Raises:
        pytest.UsageError: A path is a folder, lies under a file or an unwritable
            folder, or both options name the same file; the message names the
            option (and ini key) and the path.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> check_report_paths(folder / "r" / "g.json", folder / "r" / "g.html")
        >>> try:
        ...     check_report_paths(folder / "g.json", folder / "g.json")
        ... except pytest.UsageError as exc:
        ...     print(str(exc)[:65])
        --gradcheck-json (ini gradcheck_json) and --gradcheck-report (ini
    """
    if os.path.normcase(json_path) == os.path.normcase(report_path):
        raise pytest.UsageError(
            f"--gradcheck-json (ini gradcheck_json) and --gradcheck-report (ini "
            f"gradcheck_report) both name {json_path}: the HTML page would replace the "
            "results; give them different paths."
        )
    _check_one("--gradcheck-json (ini gradcheck_json)", json_path)
    _check_one("--gradcheck-report (ini gradcheck_report)", report_path)
