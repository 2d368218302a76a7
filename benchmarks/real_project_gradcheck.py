#!/usr/bin/env python
"""Run a real project's gradcheck suite, as it is or through gradcheck_kit, from nothing.

The project is ``torch-interpol`` (PyPI ``torch-interpol``, import name ``interpol``;
https://github.com/balbasty/torch-interpol), spline interpolation and its adjoints
(``grid_pull``, ``grid_push``, ``grid_count``, ``grid_grad``) as TorchScript with
hand-written backward passes in ``torch.autograd.Function`` subclasses. Its test file
``test_gradcheck_pushpull.py`` makes 624 ``torch.autograd.gradcheck`` calls at run time,
with ``rtol=1``, ``nondet_tol=1e-3`` and ``check_undefined_grad=False``.

Nothing of the project is committed here. The script:

1. creates a virtual environment that sees the system's packages
   (``python -m venv --system-site-packages``), so the installed torch is used and never
   replaced;
2. installs the pinned release there with ``pip install --no-deps`` (its only dependency
   is torch) and checks that torch is still the system's;
3. downloads the same release's sdist from PyPI (``pip download --no-binary :all:``), which
   ships the tests, and copies its test files into ``WORKDIR/tests`` (no ``__init__.py``,
   so the tests import the installed package);
4. runs them with pytest in the chosen mode and writes a summary.

Modes:

* ``plain``   - the suite as it is, with ``_count_gradcheck_plugin.py`` counting and timing
  every ``torch.autograd.gradcheck``/``gradgradcheck`` call (the baseline);
* ``dropin``  - ``--gradcheck-torch``: every call goes through gradcheck_kit's drop-in;
* ``compare`` - ``--gradcheck-torch=compare``: both checkers on every call, both verdicts
  and times recorded in gradcheck_kit's JSON file, with ``--gradcheck-cov=interpol``.

Run from the repository root (the package is taken from this checkout)::

    python benchmarks/real_project_gradcheck.py plain            # ~15 min on 2 shared cores
    python benchmarks/real_project_gradcheck.py plain --quick    # 1-D and 2-D cases, ~1 min
    python benchmarks/real_project_gradcheck.py compare
    python benchmarks/real_project_gradcheck.py compare -k "pull and device0"

The summary goes to stdout and to ``WORKDIR/summary-<mode>.json`` (default ``WORKDIR``:
``benchmarks/results/real_project``, ignored by git). This is a script, not a test: pytest
does not collect it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

PROJECT = "torch-interpol"
VERSION = "0.3.0"
IMPORT_NAME = "interpol"
# The sdist's tests are the same files as the repository's at this commit.
REPOSITORY = "https://github.com/balbasty/torch-interpol"
REPOSITORY_COMMIT = "bab3b86"
TESTS_IN_SDIST = "interpol/tests"
TEST_FILES = ("test_gradcheck_pushpull.py", "test_coeff.py")
# Test ids read [order-bound-dim-device]: --quick leaves out the 3-D cases, which are a third
# of the calls and 95% of their time (the 7th-order 3-D grid_grad check alone takes 70-110 s).
QUICK_SELECTION = "not 3-device"

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODES = ("plain", "dropin", "compare")


class SetupError(RuntimeError):
    """A step of the setup (venv, install, download) failed; the message names it."""


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, text=True, capture_output=True, **kwargs)
    if done.returncode != 0:
        raise SetupError(
            f"command failed with exit code {done.returncode}: {' '.join(cmd)}\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return done


def _torch_location(python: str) -> str:
    code = "import torch; print(torch.__version__, torch.__file__)"
    return _run([python, "-c", code]).stdout.strip()


def make_venv(workdir: Path) -> str:
    """Create ``workdir/venv`` seeing the system site-packages; return its python."""
    venv = workdir / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    return str(python)


def install_project(python: str) -> str:
    """Install the pinned release without dependencies; fail if torch changed."""
    before = _torch_location(python)
    _run([python, "-m", "pip", "install", "--no-deps", f"{PROJECT}=={VERSION}"])
    after = _torch_location(python)
    if before != after:
        raise SetupError(f"installing {PROJECT} changed torch: {before} -> {after}")
    return after


def fetch_tests(python: str, workdir: Path) -> Path:
    """Download the sdist from PyPI and copy its test files to ``workdir/tests``."""
    sdist_dir = workdir / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    archives = sorted(sdist_dir.glob(f"*{VERSION}.tar.gz"))
    if not archives:
        download = [python, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
        download += ["-d", str(sdist_dir), f"{PROJECT}=={VERSION}"]
        try:
            # pip prepares the sdist's metadata; without build isolation that needs
            # setuptools and wheel where pip runs, so the outer python is tried first.
            _run([sys.executable, *download[1:], "--no-build-isolation"])
        except SetupError:
            _run(download)
        archives = sorted(sdist_dir.glob(f"*{VERSION}.tar.gz"))
    if not archives:
        raise SetupError(f"no sdist of {PROJECT} {VERSION} in {sdist_dir}")
    tests = workdir / "tests"
    if tests.exists():
        shutil.rmtree(tests)
    tests.mkdir()
    with tarfile.open(archives[0]) as tar:
        for name in TEST_FILES:
            member = next(
                (m for m in tar.getmembers() if m.name.endswith(f"{TESTS_IN_SDIST}/{name}")),
                None,
            )
            if member is None:
                raise SetupError(f"{TESTS_IN_SDIST}/{name} is not in {archives[0].name}")
            source = tar.extractfile(member)
            assert source is not None  # a regular file member
            (tests / name).write_bytes(source.read())
    return tests


def _has_kit_entry_point(python: str) -> bool:
    # An installed gradcheck_kit registers its plugin by entry point; loading it again
    # with -p would register the same module twice.
    code = (
        "from importlib.metadata import entry_points;"
        "print(any(e.value.startswith('gradcheck_kit') for e in entry_points(group='pytest11')))"
    )
    return _run([python, "-c", code]).stdout.strip() == "True"


def pytest_command(
    python: str, mode: str, workdir: Path, selection: str | None, extra: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The pytest command line and environment for one mode."""
    files = [str(workdir / "tests" / name) for name in TEST_FILES]
    cmd = [python, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider"]
    cmd += ["--junitxml", str(workdir / f"junit-{mode}.xml"), "-o", "junit_family=xunit1"]
    env = dict(os.environ)
    paths = [str(ROOT), str(HERE)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if mode == "plain":
        cmd += ["-p", "_count_gradcheck_plugin"]
        cmd += ["--count-gradcheck-json", str(workdir / "calls-plain.json")]
    else:
        if not _has_kit_entry_point(python):
            cmd += ["-p", "gradcheck_kit.pytest_plugin.plugin"]
        cmd += ["--gradcheck-torch" if mode == "dropin" else "--gradcheck-torch=compare"]
        cmd += ["--gradcheck-cov", IMPORT_NAME]
        cmd += ["--gradcheck-json", str(workdir / f"gradcheck-{mode}.json")]
        cmd += ["--gradcheck-report", str(workdir / f"gradcheck-{mode}.html")]
    if selection:
        cmd += ["-k", selection]
    return cmd + extra, env


def read_junit(path: Path) -> dict[str, Any]:
    """Counts of test items by outcome, and the ids of those that failed or errored."""
    counts = {"items": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    if not path.exists():
        return {**counts, "not_passed": failed}
    for case in ET.parse(path).getroot().iter("testcase"):
        counts["items"] += 1
        test_id = f"{case.get('file') or case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            counts["failed"] += 1
            failed.append(test_id)
        elif case.find("error") is not None:
            counts["errors"] += 1
            failed.append(test_id)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "not_passed": failed}


def routed_figures(document: dict[str, Any]) -> dict[str, Any]:
    """Calls routed, verdicts of both checkers, agreement, times and coverage of a kit file."""
    routed = [r for r in document.get("results", []) if isinstance(r.get("routed"), dict)]
    ours = [bool(r.get("passed")) for r in routed]
    figures: dict[str, Any] = {
        "routed_calls": len(routed),
        "gradcheck_kit_passed": sum(ours),
        "gradcheck_kit_seconds": round(sum(r["routed"].get("seconds") or 0 for r in routed), 2),
    }
    compared = [r for r in routed if isinstance(r["routed"].get("torch"), dict)]
    if compared:
        figures["torch_passed"] = sum(r["routed"]["torch"]["verdict"] == "passed" for r in compared)
        figures["torch_seconds"] = round(sum(r["routed"]["torch"]["seconds"] for r in compared), 2)
        figures["agree"] = sum(bool(r["routed"].get("agree")) for r in compared)
        figures["disagreements"] = [
            {"test_id": r.get("test_id"), "why": r["routed"].get("disagreement")}
            for r in compared
            if not r["routed"].get("agree")
        ]
    coverage = document.get("coverage")
    if isinstance(coverage, dict):
        figures["coverage"] = {
            kind: {
                "checked": coverage[kind].get("checked"),
                "total": coverage[kind].get("total"),
                "not_checked": [
                    c["name"] for c in coverage[kind].get("classes", []) if not c.get("checked")
                ],
            }
            for kind in ("functions", "modules")
            if isinstance(coverage.get(kind), dict)
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=MODES, help="how to run the suite")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=HERE / "results" / "real_project",
        help="venv, sdist, tests and results (default: %(default)s)",
    )
    parser.add_argument("-k", dest="selection", help="pytest -k expression")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"leave out the 3-D cases (-k '{QUICK_SELECTION}')",
    )
    parser.add_argument(
        "--setup-only", action="store_true", help="make the venv and fetch the tests, run nothing"
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.quick and args.selection:
        parser.error("--quick and -k select tests both; give one")
    selection = QUICK_SELECTION if args.quick else args.selection

    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        python = make_venv(workdir)
        torch_info = install_project(python)
        fetch_tests(python, workdir)
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    if args.setup_only:
        print(f"ready: {python} ({torch_info}); tests in {workdir / 'tests'}")
        return 0

    cmd, env = pytest_command(python, args.mode, workdir, selection, args.pytest_args)
    print("+", " ".join(cmd), file=sys.stderr)
    start = time.perf_counter()
    exit_code = subprocess.call(cmd, env=env, cwd=workdir)
    wall = time.perf_counter() - start

    summary: dict[str, Any] = {
        "project": PROJECT,
        "version": VERSION,
        "tests_from": f"PyPI sdist {PROJECT}-{VERSION} ({REPOSITORY} @ {REPOSITORY_COMMIT})",
        "test_files": list(TEST_FILES),
        "mode": args.mode,
        "selection": selection,
        "torch": torch_info,
        "pytest_exit_code": exit_code,
        "wall_seconds": round(wall, 1),
        **read_junit(workdir / f"junit-{args.mode}.xml"),
    }
    calls_path = workdir / "calls-plain.json"
    if args.mode == "plain" and calls_path.exists():
        summary["gradcheck_calls"] = json.loads(calls_path.read_text())["summary"]
    stem = workdir / f"gradcheck-{args.mode}"
    kit_json = next(
        (p for p in (stem.with_suffix(".json"), stem.with_suffix(".subset.json")) if p.exists()),
        None,
    )
    if args.mode != "plain" and kit_json is not None:
        document = json.loads(kit_json.read_text())
        summary["gradcheck_kit_json"] = str(kit_json)
        summary["gradcheck_kit_records"] = len(document.get("results", []))
        summary.update(routed_figures(document))
    out = workdir / f"summary-{args.mode}.json"
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"summary written to {out}", file=sys.stderr)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
