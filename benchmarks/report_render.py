"""How long the HTML report of a large run takes to render, and how big it is.

Target (issue 6): a report of 10,000 checks renders in <= 2 s and stays <= 5 MB.
A script, not a timed test. It builds synthetic documents
(``tests/support/samples.py``, ``sample_document``: mostly small gradient checks,
a training check, a manual derivative and a parity check every 50, a device
benchmark every 500; one failing check in ``--failed-every``, each failing
gradient check with a 16 x 16 error map), writes them as JSON, then times what
``gradcheck-kit report IN.json -o OUT.html`` does: read and check the JSON,
build the page, render it with Jinja2 and write it atomically (wall and CPU
time), and what the pytest plugin does, which has the document in memory
("render s").

    python benchmarks/report_render.py                     # 10,000 checks, 0 % to 100 % failing
    python benchmarks/report_render.py --checks 2000 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gradcheck_kit.report.document import load_document, write_document
from gradcheck_kit.report.html import write_html

# The sample documents are test code (tests/support/samples.py), imported from the
# repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.samples import sample_document

TARGET_S = 2.0
TARGET_MB = 5.0


def measure(
    checks: int, failed_every: int, repeat: int, folder: Path, passing_maps: bool
) -> dict[str, float]:
    document = sample_document(checks, failed_every=failed_every, passing_error_maps=passing_maps)
    source = write_document(document, folder / f"run-{failed_every}.json")
    out = folder / f"run-{failed_every}.html"
    walls, cpus, renders = [], [], []
    for _ in range(repeat):
        # What `gradcheck-kit report` does: read the JSON file, then render and write.
        wall, cpu = time.perf_counter(), time.process_time()
        write_html(load_document(source), out)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        # What the pytest plugin does: the document is already in memory.
        wall = time.perf_counter()
        write_html(document, out)
        renders.append(time.perf_counter() - wall)
    return {
        "failed": document["summary"]["failed"],
        "json_mb": source.stat().st_size / 1e6,
        "html_mb": out.stat().st_size / 1e6,
        "wall_median_s": statistics.median(walls),
        "wall_min_s": min(walls),
        "cpu_median_s": statistics.median(cpus),
        "render_median_s": statistics.median(renders),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=10_000, help="Default: %(default)r")
    parser.add_argument(
        "--failed-every",
        type=int,
        nargs="+",
        default=[10**9, 100, 20, 10, 1],
        help="one check in N fails; several values, one row each. Default: %(default)r",
    )
    parser.add_argument("--repeat", type=int, default=3, help="Default: %(default)r")
    parser.add_argument(
        "--passing-error-maps",
        action="store_true",
        help="give passed checks a (4 x 4) error map too, as full mode writes today",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="also copy the 5 %% page here (to look at it)"
    )
    args = parser.parse_args(argv)

    python = sys.version.split()[0]
    print(f"{args.checks} checks, median (and min) of {args.repeat} runs, Python {python}")
    print(
        f"{'failing':>8} {'JSON MB':>8} {'HTML MB':>8} {'wall s':>7} {'(min)':>6} {'CPU s':>6}"
        f" {'render s':>9}"
    )
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for failed_every in args.failed_every:
            row = measure(
                args.checks, failed_every, args.repeat, Path(tmp), args.passing_error_maps
            )
            print(
                f"{int(row['failed']):>8} {row['json_mb']:>8.2f} {row['html_mb']:>8.2f} "
                f"{row['wall_median_s']:>7.2f} {row['wall_min_s']:>6.2f} "
                f"{row['cpu_median_s']:>6.2f} {row['render_median_s']:>9.2f}"
            )
            if failed_every == 20:
                ok = row["wall_median_s"] <= TARGET_S and row["html_mb"] <= TARGET_MB
                if args.keep is not None:
                    args.keep.write_bytes((Path(tmp) / "run-20.html").read_bytes())
    print(
        f"target at 5 % failing: <= {TARGET_S} s and <= {TARGET_MB} MB: {'met' if ok else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
