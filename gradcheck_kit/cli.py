"""The ``gradcheck-kit`` command (also ``python -m gradcheck_kit``).

Commands:

* ``gradcheck-kit --version``: print the version.
* ``gradcheck-kit check-json PATH``: summarise a results file written by
  ``pytest --gradcheck``, one line per result; exit 1 if any check failed
  (not one its test expected: ``XFAIL``, nor one it never read: ``UNASSERTED``),
  2 if the file is missing, is not a results file, or breaks its schema (the
  error names the field).
* ``gradcheck-kit check TARGET [TARGET ...]``: run the gradient checks of
  ``package.module:factory`` targets without pytest (scripts, pre-commit hooks).
  Every target gets its verdict or a one-line error (it cannot be imported or
  built, its code raises or calls ``sys.exit``, its inputs or outputs are
  unusable), and the other targets still run; ``--json`` is always written.
  Exit 1 if any check failed, 2 if any target errored.
* ``gradcheck-kit report IN.json [IN2.json ...] -o OUT.html [--json MERGED.json]``:
  render the HTML report of one results file, or merge several (CI shards,
  separate runs) into one report and, with ``--json``, one JSON document;
  exit 2 if a file is missing, not JSON, of a newer schema version, or breaks the schema.

Imports no torch: reading a results file needs none (and Jinja2 only for ``report``);
``check`` imports the checks when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from gradcheck_kit import __version__
from gradcheck_kit.pytest_plugin.options import (
    CheckDefaults,
    parse_dtype,
    parse_mode,
    parse_seed,
    parse_tolerance,
)
from gradcheck_kit.report.document import (
    DocumentError,
    load_document,
    merge_documents,
    verdict,
    write_document,
)
from gradcheck_kit.report.validation import check_document

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

PROG = "gradcheck-kit"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _path(text: str) -> Path:
    """A path argument; one the OS cannot take (a NUL byte) is a usage error, not a traceback."""
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a usable path: it holds a NUL byte")
    return Path(text)


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
            "A failed check in a test that expected it (pytest.raises, xfail, or read the "
            "result) is XFAIL, one that a passing test never read UNASSERTED; neither fails. "
            "Exit status: 0 no check failed, 1 some failed or errored, 2 a file that is "
            "unreadable or breaks the results schema (the error names the field)."
        ),
    )
    check_json.add_argument("path", metavar="PATH", type=_path, help="the JSON results file")
    check = commands.add_parser(
        "check",
        help="run the gradient checks of package.module:factory targets",
        description=(
            "Resolve each TARGET (package.module:factory) with importlib, call the factory and "
            "check what it returns, as pytest --gradcheck --gradcheck-targets would. A target "
            "that cannot be imported, built or checked (its code raised, its inputs or outputs "
            "are unusable) is an ERROR, and the other targets still run. "
            "Exit status: 0 all passed, 1 some failed, 2 a target errored."
        ),
    )
    check.add_argument("targets", metavar="TARGET", nargs="+", help="package.module:factory")
    check.add_argument("--mode", type=parse_mode, default="auto", help="Default: %(default)r")
    check.add_argument("--dtype", type=parse_dtype, default="float64", help="Default: %(default)r")
    check.add_argument("--seed", type=parse_seed, default=0, help="Default: %(default)r")
    check.add_argument("--atol", type=parse_tolerance, default=None, help="Default: by dtype")
    check.add_argument("--rtol", type=parse_tolerance, default=None, help="Default: by dtype")
    check.add_argument(
        "--path",
        metavar="DIR",
        type=_path,
        action="append",
        default=None,
        help="put DIR first on sys.path to import the targets (repeatable). Default: the "
        "current directory",
    )
    check.add_argument(
        "--json",
        metavar="PATH",
        type=_path,
        default=None,
        help="also write the results as a JSON document (for gradcheck-kit report), "
        "targets that errored included. Default: %(default)r",
    )
    check.add_argument(
        "--traceback",
        action="store_true",
        help="print the traceback of each target that errored, not only its one-line error",
    )
    report = commands.add_parser(
        "report",
        help="render the HTML report of results files, merging several into one",
        description=(
            "Render one self-contained HTML page from results files written by "
            "pytest --gradcheck (or by this command's --json). Several files (CI shards, "
            "separate runs) are merged into one report, every record kept once. "
            "Exit status: 0 written, 2 a file is missing, not JSON, of a newer schema or "
            "breaks the schema."
        ),
    )
    report.add_argument(
        "inputs", metavar="IN.json", nargs="+", type=_path, help="results files to render"
    )
    report.add_argument(
        "-o",
        "--output",
        metavar="OUT.html",
        type=_path,
        default=None,
        help="where the HTML page goes. Default: IN.html next to a single input "
        "(required with several inputs)",
    )
    report.add_argument(
        "--json",
        metavar="MERGED.json",
        type=_path,
        default=None,
        help="also write the merged document as JSON. Default: %(default)r",
    )
    report.add_argument(
        "--title",
        default="gradcheck report",
        help="the page's heading. Default: %(default)r",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gradcheck-kit`` with ``argv`` (default: the process's arguments).

    Args:
        argv: The arguments after the program name.

    Returns:
        The exit status: ``0`` success, ``1`` a check failed, ``2`` an error (usage, an
        unusable file, a target that errored). Bad arguments end in argparse's
        ``SystemExit(2)``.

    Examples:
        >>> main(["check-json", "no/such/file.json"])
        2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = _run(parser, args)
        # Flushed here so that a reader gone away (| head) is seen below, not at exit.
        sys.stdout.flush()
    except BrokenPipeError:
        # Stop quietly, as cat does; Python would print a traceback flushing at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_USAGE
    return code


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "check-json":
        return _check_json(args.path, out=sys.stdout, err=sys.stderr)
    if args.command == "report":
        return _report(args, out=sys.stdout, err=sys.stderr)
    if args.command == "check":
        return _check_targets(args, out=sys.stdout, err=sys.stderr)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _load(path: Path) -> dict[str, Any]:
    """Read a results file and hold it to the schema: an edited file may say anything."""
    document = load_document(path)
    check_document(document, source=str(path))
    return document


_VERDICT_WORDS = {
    "passed": "PASSED",
    "failed": "FAILED",
    "expected_failure": "XFAIL",
    "unasserted": "UNASSERTED",
    "no_verdict": "INFO",
}


def _check_json(path: Path, *, out: TextIO, err: TextIO) -> int:
    try:
        results: list[dict[str, Any]] = _load(path)["results"]
    except DocumentError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_USAGE
    counts = dict.fromkeys(_VERDICT_WORDS, 0)
    for result in results:
        word = verdict(result)
        counts[word] += 1
        # A target that errored in gradcheck-kit check counts as failed, shown as what it was.
        shown = "ERROR" if word == "failed" and result.get("kind") == "error" else None
        line = f"{shown or _VERDICT_WORDS[word]} {result.get('name', '?')}"
        if result.get("test_id"):
            line += f" ({result['test_id']})"
        if shown and result.get("message"):
            line += f": {result['message']}"
        elif word in ("failed", "unasserted") and result.get("hint"):
            line += f": {result['hint']}"
        print(line, file=out)
    noun = "check" if len(results) == 1 else "checks"
    tail = "".join(
        f", {counts[word]} {label}"
        for word, label in (
            ("expected_failure", "failed as expected"),
            ("unasserted", "unasserted"),
        )
        if counts[word]
    )
    print(f"{len(results)} {noun}, {counts['failed']} failed{tail}", file=out)
    # Agrees with pytest: a failure the test expected, or never asserted, failed no test.
    return EXIT_FAILED if counts["failed"] else EXIT_OK


def _report(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    inputs: list[Path] = args.inputs
    output: Path | None = args.output
    if output is None:
        if len(inputs) > 1:
            print(f"{PROG}: error: give -o OUT.html to merge {len(inputs)} files", file=err)
            return EXIT_USAGE
        output = inputs[0].with_suffix(".html")
    # Rendering over an input would destroy the data the page is made of.
    resolved = {p.resolve() for p in inputs}
    if output.resolve() in resolved:
        print(f"{PROG}: error: the output '{output}' is one of the inputs", file=err)
        return EXIT_USAGE
    try:
        documents = [(str(p), _load(p)) for p in inputs]
    except DocumentError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return EXIT_USAGE
    document = documents[0][1] if len(documents) == 1 else merge_documents(documents)
    # Imported here: check-json and --version need no Jinja2.
    from gradcheck_kit.report.html import write_html

    try:
        if args.json is not None:
            write_document(document, args.json)
        write_html(document, output, title=args.title)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: error: cannot write the report: {exc}", file=err)
        return EXIT_USAGE
    summary = document["summary"]
    merged = f", merged from {len(documents)} files" if len(documents) > 1 else ""
    print(
        f"wrote {output}: {summary['checks']} checks, {summary['failed']} failed{merged}",
        file=out,
    )
    if args.json is not None:
        print(f"wrote {args.json}", file=out)
    return EXIT_OK


def _check_targets(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    for folder in reversed(args.path or [Path.cwd()]):
        sys.path.insert(0, str(folder.resolve()))
    # Imported here: the other commands need no torch.
    from gradcheck_kit._src.targets import describe, load_targets, resolve_target, run_target
    from gradcheck_kit.pytest_plugin.session import GradcheckSession

    defaults = CheckDefaults(
        mode=args.mode, dtype=args.dtype, seed=args.seed, atol=args.atol, rtol=args.rtol
    )
    recorder = GradcheckSession(version=__version__)
    failed_reports: list[str] = []
    total = failed = errors = 0

    def errored(test_id: str, name: str, exc: BaseException, *, building: bool) -> None:
        nonlocal errors
        errors += 1
        text = _target_error_text(exc, building=building)
        print(f"ERROR {test_id}", file=out)
        print(f"{PROG}: error: {test_id}: {text}", file=err)
        if args.traceback:
            print("".join(traceback.format_exception(exc)), file=err, end="")
        recorder.extend([_error_record(test_id, name, exc, text)])

    recorder.start()
    try:
        for spec in args.targets:
            try:
                targets = load_targets(resolve_target(spec), label=spec)
                labels = describe(targets)
            # User code runs here: whatever it raises, even sys.exit(), is this target's
            # error, and the other targets still run.
            except (Exception, SystemExit) as exc:
                errored(spec, spec, exc, building=True)
                continue
            for label, target in zip(labels, targets, strict=True):
                test_id = f"{spec}::{label}"
                recorder.current_test_id = test_id
                try:
                    result = run_target(target, **defaults.as_kwargs())
                except (Exception, SystemExit) as exc:
                    errored(test_id, label, exc, building=False)
                    continue
                finally:
                    recorder.current_test_id = None
                total += 1
                word = "PASSED" if result.passed else "FAILED"
                print(f"{word} {test_id} ({result.duration_s:.2f} s)", file=out)
                if not result.passed:
                    failed += 1
                    failed_reports.append(f"{test_id}\n{result.summary()}")
    finally:
        recorder.stop()
    for text in failed_reports:
        print("", file=out)
        print(text, file=out)
    noun = "check" if total == 1 else "checks"
    tail = f", {errors} {'error' if errors == 1 else 'errors'}" if errors else ""
    print(f"{total} {noun}, {failed} failed{tail}", file=out)
    if args.json is not None:
        try:
            recorder.write_json(args.json, recorder.document())
        except (OSError, ValueError) as exc:
            print(f"{PROG}: error: cannot write '{args.json}': {exc}", file=err)
            return EXIT_USAGE
    if errors:
        return EXIT_USAGE
    return EXIT_FAILED if failed else EXIT_OK


# Longer messages (a tensor's repr in an exception) are cut; --traceback shows them whole.
_MAX_ERROR_CHARS = 500


def _target_error_text(exc: BaseException, *, building: bool) -> str:
    """One line saying why a target has no verdict, for a person to act on."""
    if isinstance(exc, SystemExit):
        if building:
            return (
                f"its module or factory called sys.exit({exc.code!r}); a factory must return "
                "what to check, not end the process"
            )
        return (
            f"the checked function called sys.exit({exc.code!r}); it must return its "
            "outputs, not end the process"
        )
    # TargetError says what went wrong in words already; elsewhere the type is the news.
    from gradcheck_kit._src.targets import TargetError

    text = str(exc) if isinstance(exc, TargetError) else f"{type(exc).__name__}: {exc}"
    notes = getattr(exc, "__notes__", None) or []
    text = " ".join("; ".join([text, *map(str, notes)]).split())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 30] + " ... (--traceback shows all)"
    return text


def _error_record(test_id: str, name: str, exc: BaseException, text: str) -> dict[str, Any]:
    """The JSON record of a target that errored: ``kind`` ``"error"``, no check, not passed."""
    return {
        "kind": "error",
        "name": name,
        "test_id": test_id,
        "passed": False,
        "status": "error",
        "error_type": type(exc).__name__,
        "message": text,
    }
