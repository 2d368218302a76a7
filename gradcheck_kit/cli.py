"""The ``gradcheck-kit`` command (also ``python -m gradcheck_kit``).

Commands:

* ``gradcheck-kit --version``: print the version.
* ``gradcheck-kit check-json PATH``: summarise a results file written by
  ``pytest --gradcheck``, one line per result; exit 1 if any result failed,
  2 if the file is missing or is not a results file.

Imports no torch: reading a results file needs none.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from gradcheck_kit import __version__
from gradcheck_kit.pytest_plugin.session import DOCUMENT_SCHEMA_VERSION

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

PROG = "gradcheck-kit"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _BadResultsFile(Exception):
    """The results file cannot be used; the message says why."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gradcheck-kit``.

    Returns:
        A parser whose ``command`` attribute names the chosen subcommand.

    Examples:
        >>> build_parser().parse_args(["check-json", "reports/gradcheck.json"]).command
        'check-json'
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Check PyTorch gradients; read the results of pytest --gradcheck.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check_json = commands.add_parser(
        "check-json",
        help="summarise a results file written by pytest --gradcheck",
        description=(
            "Print one line per result of a results file written by pytest --gradcheck. "
            "Exit status: 0 all passed, 1 some failed, 2 unreadable file."
        ),
    )
    check_json.add_argument("path", metavar="PATH", type=Path, help="the JSON results file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gradcheck-kit`` with ``argv`` (default: the process's arguments).

    Args:
        argv: The arguments after the program name.

    Returns:
        The exit status: ``0`` success, ``1`` a check failed, ``2`` usage error.

    Examples:
        >>> main(["check-json", "no/such/file.json"])
        2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "check-json":
        return _check_json(args.path, out=sys.stdout, err=sys.stderr)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _check_json(path: Path, *, out: TextIO, err: TextIO) -> int:
    try:
        results = _load_results(path)
    except _BadResultsFile as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_USAGE
    failed = 0
    for result in results:
        passed = result.get("passed") is True
        failed += not passed
        line = f"{'PASSED' if passed else 'FAILED'} {result.get('name', '?')}"
        if result.get("test_id"):
            line += f" ({result['test_id']})"
        if not passed and result.get("hint"):
            line += f": {result['hint']}"
        print(line, file=out)
    noun = "check" if len(results) == 1 else "checks"
    print(f"{len(results)} {noun}, {failed} failed", file=out)
    return EXIT_FAILED if failed else EXIT_OK


def _load_results(path: Path) -> list[dict[str, Any]]:
    """The ``results`` list of a results file, or :class:`_BadResultsFile` saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _BadResultsFile(f"no such file: '{path}'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _BadResultsFile(f"cannot read '{path}': {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadResultsFile(f"'{path}' is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise _BadResultsFile(
            f"'{path}' is not a gradcheck_kit results file (no 'results' list); "
            "write one with pytest --gradcheck"
        )
    version = document.get("schema_version")
    if not isinstance(version, int) or version > DOCUMENT_SCHEMA_VERSION:
        raise _BadResultsFile(
            f"'{path}' has schema_version={version!r}; this gradcheck_kit {__version__} "
            f"reads up to {DOCUMENT_SCHEMA_VERSION}"
        )
    results: list[Any] = document["results"]
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise _BadResultsFile(f"'{path}': results[{index}] is not an object: {result!r}")
    return results
