"""Overhead of ``pytest --gradcheck`` on a suite of trivial tests.

Writes 500 trivial tests (half of them marked ``@pytest.mark.gradcheck``, none
running a check) into a temporary folder and times whole pytest runs in fresh
subprocesses, with and without ``--gradcheck``; target: at most 10 % extra wall
time beyond the checks themselves (there are none here, so all of it is overhead:
option parsing, the marker, recording, the JSON and HTML files).

    python benchmarks/plugin_overhead.py [--tests 500] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST_FILE = """
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_plain(i):
    assert i >= 0

@pytest.mark.gradcheck
@pytest.mark.parametrize("i", range({n}))
def test_marked(i):
    assert i >= 0
"""


def run_once(folder: Path, extra: list[str]) -> float:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=500, metavar="N")
    parser.add_argument("--repeats", type=int, default=5, metavar="R")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_trivial.py").write_text(TEST_FILE.format(n=args.tests // 2))
        (folder / "pytest.ini").write_text("[pytest]\n")
        runs: dict[str, list[float]] = {"without": [], "with --gradcheck": []}
        run_once(folder, [])  # warm the file system and bytecode caches
        for _ in range(args.repeats):
            # interleaved, so that a change in machine load hits both alike
            runs["without"].append(run_once(folder, []))
            runs["with --gradcheck"].append(run_once(folder, ["--gradcheck"]))
        base = statistics.median(runs["without"])
        for name, times in runs.items():
            median = statistics.median(times)
            print(
                f"{name:18s} median {median:6.2f} s  (min {min(times):.2f}, max {max(times):.2f}) "
                f"  {100 * (median / base - 1):+5.1f} %"
            )
        print(f"{args.tests} tests, {args.repeats} runs each")


if __name__ == "__main__":
    main()
