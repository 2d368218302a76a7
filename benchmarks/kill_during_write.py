"""Kill a report write at random moments: is the JSON/HTML pair on disk ever mismatched?

A subprocess writes a report of 10,000 records (JSON and HTML) over an existing
pair, and is killed (SIGKILL or SIGTERM) at a uniformly random moment of the
write. Per row, 40 trials count: the old pair intact, the new pair intact, a
mismatched pair (new JSON beside old HTML or the reverse), temporary files left
over, and whether the next write removed them. ``pair`` is
``report.files.write_files_atomic``; ``separate`` is the previous way (JSON
renamed, then the HTML rendered and renamed), for comparison.

Run: ``PYTHONPATH=. python benchmarks/kill_during_write.py [--trials 40] [--records 10000]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

# The sample records are test code (tests/support/samples.py): the child puts the
# repository root, its fifth argument, on sys.path to import them as tests.support.
ROOT = Path(__file__).resolve().parent.parent
CHILD = textwrap.dedent(
    """
    import json, pathlib, sys
    sys.path.insert(0, sys.argv[5])
    from tests.support import samples
    from gradcheck_kit.report.document import dumps_document, make_document
    from gradcheck_kit.report.files import write_files_atomic, write_text_atomic
    from gradcheck_kit.report.html import generate_html

    folder, how, n, tag = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    records = [samples.gradient_record(f"check{i}", passed=i % 3 != 0) for i in range(n)]
    document = make_document(records, created=tag)
    text = dumps_document(document)
    print("ready", flush=True)
    sys.stdin.readline()  # the parent starts its clock, then says go
    if how == "pair":
        pair = [(folder / "g.json", text), (folder / "g.html", generate_html(document))]
        write_files_atomic(pair)
    else:
        write_text_atomic(folder / "g.json", text)
        write_text_atomic(folder / "g.html", generate_html(document))
    """
)


def _tag_of(folder: Path) -> tuple[str, str]:
    json_tag = json.loads((folder / "g.json").read_text(encoding="utf-8"))["created"]
    html = (folder / "g.html").read_text(encoding="utf-8")
    return json_tag, ("new" if "new-run" in html else "old")


def _spawn(folder: Path, how: str, records: int, tag: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), how, str(records), tag, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _write(folder: Path, how: str, records: int, tag: str) -> float:
    proc = _spawn(folder, how, records, tag)
    assert proc.stdin is not None
    start = time.perf_counter()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    proc.wait()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(0)
    print(f"{args.records} records, {args.trials} trials per row")
    print(
        "| writer | signal | old pair | new pair | mismatched | temp files left "
        "| removed by next write |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for how in ("pair", "separate"):
        with tempfile.TemporaryDirectory() as scratch:
            duration = _write(Path(scratch), how, args.records, "old-run")
        for signum in (signal.SIGKILL, signal.SIGTERM):
            counts = dict.fromkeys(("old", "new", "mismatched", "temps", "cleaned"), 0)
            for _ in range(args.trials):
                with tempfile.TemporaryDirectory() as scratch:
                    folder = Path(scratch)
                    _write(folder, "pair", 10, "old-run")
                    proc = _spawn(folder, how, args.records, "new-run")
                    assert proc.stdin is not None
                    delay = rng.uniform(0, duration)
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                    time.sleep(delay)
                    if proc.poll() is None:
                        os.kill(proc.pid, signum)
                    proc.wait()
                    json_tag, html_tag = _tag_of(folder)
                    state = {("old-run", "old"): "old", ("new-run", "new"): "new"}
                    counts[state.get((json_tag, html_tag), "mismatched")] += 1
                    temps = list(folder.glob(".gradcheck-*.tmp"))
                    if temps:
                        counts["temps"] += 1
                        _write(folder, "pair", 10, "later-run")
                        if not list(folder.glob(".gradcheck-*.tmp")):
                            counts["cleaned"] += 1
            name = signal.Signals(signum).name
            print(
                f"| {how} | {name} | {counts['old']} | {counts['new']} | {counts['mismatched']} "
                f"| {counts['temps']} | {counts['cleaned']} of {counts['temps']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
