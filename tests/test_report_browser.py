"""The report in a real browser: headless Chromium runs the page's JavaScript.

Asserts on the DOM Chromium dumps after loading the page (failures first, the
heatmap there, a hostile test id shown as text, the filter of the URL applied)
and saves a screenshot under the test's tmp dir. Skips, naming the browser, only
where none is installed (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import samples
from test_report_html import Page

from gradcheck_kit.report.document import make_document
from gradcheck_kit.report.html import write_html

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)

pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason=f"no headless browser found ({', '.join(BROWSERS)} not on PATH): "
    "install Debian's chromium (apt-get install chromium) to run the report in a browser",
)

HOSTILE_ID = "<script>alert(1)</script>"
HOSTILE_NAME = "<img src=x onerror=\"document.title='pwned'\">"


def _report(folder: Path) -> Path:
    records = [
        samples.gradient_record("sin", passed=True, test_id="tests/test_ops.py::test_sin"),
        samples.gradient_record("matmul", passed=False, pattern="transposed", test_id=HOSTILE_ID),
        samples.training_record(passed=True, test_id="tests/test_loop.py::test_ok"),
        samples.gradient_record(HOSTILE_NAME, passed=False, pattern="region", error_map=False),
        samples.training_record(parameter="fc1.weight", test_id="tests/test_loop.py::test_bug"),
        samples.gradient_record("cos", passed=True, test_id="tests/test_ops.py::test_cos"),
    ]
    document = make_document(records, environment=samples.sample_environment(), duration_s=1.0)
    return write_html(document, folder / "report.html")


def _chromium(tmp_path: Path, *args: str) -> str:
    assert BROWSER is not None
    profile = tmp_path / "chromium-profile"
    proc = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",  # CI runs as root in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _dom(tmp_path: Path, url: str, *args: str) -> tuple[str, Page]:
    dom = _chromium(tmp_path, "--dump-dom", *args, url)
    assert dom.strip(), "Chromium dumped no DOM"
    return dom, Page(dom)


def _visible_bodies(page: Page) -> list[dict[str, Any]]:
    return [b for b in page.bodies if "hidden" not in b]


def test_the_page_loads_with_failures_first_and_user_text_as_text(tmp_path: Path) -> None:
    path = _report(tmp_path)
    # One start of the browser for the DOM and the screenshot (each start takes a second).
    shot = tmp_path / "report.png"
    dom, page = _dom(tmp_path, path.as_uri(), f"--screenshot={shot}", "--window-size=1280,1600")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    # The page's script ran: it took the "no JavaScript" class off and counted the rows.
    assert 'class="nojs"' not in dom and "6 shown" in dom and 'data-filter="all"' in dom
    assert [b["data-status"] for b in page.bodies] == ["failed"] * 3 + ["passed"] * 3
    assert len(_visible_bodies(page)) == 6
    assert dom.count('<svg class="heatmap"') == 2
    # The hostile test id and name are text: no script ran, no element was injected.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert page.tags.count("script") == 2 and "img" not in page.tags
    assert "pwned" not in "".join(Page(dom).text[:10]) and "<title>gradcheck report" in dom
    assert HOSTILE_ID in "".join(page.text)


def test_the_filter_in_the_url_is_applied_on_load(tmp_path: Path) -> None:
    path = _report(tmp_path)
    dom, page = _dom(tmp_path, path.as_uri() + "#filter=failed")
    visible = _visible_bodies(page)
    assert [b["data-status"] for b in visible] == ["failed"] * 3
    assert all("hidden" in b for b in page.bodies if b["data-status"] == "passed")
    assert 'data-filter="failed"' in dom and "3 shown" in dom
    assert '<button type="button" data-filter="failed" aria-pressed="true">' in dom

    dom, page = _dom(tmp_path, path.as_uri() + "#kind=training&q=fc1.weight")
    assert [(b["data-kind"], b["data-status"]) for b in _visible_bodies(page)] == [
        ("training", "failed")
    ]
    assert "1 shown" in dom


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "report.png"


def test_the_examples_report_reads_all_green_and_is_the_docs_screenshot(
    tmp_path: Path, pytester: pytest.Pytester
) -> None:
    """The README's main command, run for real; its page is what docs/report.png shows.

    ``GRADCHECK_KIT_UPDATE_DOCS=1`` copies the screenshot over ``docs/report.png``.
    """
    json_path, html_path = tmp_path / "gradcheck.json", tmp_path / "gradcheck.html"
    result = pytester.runpytest_subprocess(
        str(EXAMPLES),
        "--gradcheck",
        f"--gradcheck-json={json_path}",
        f"--gradcheck-report={html_path}",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
    )
    assert result.ret == 0, result.stdout.str()[-3000:]
    summary = next(line for line in result.outlines if line.endswith("in checks)"))
    assert ", 0 failed, " in summary and "failed as expected" in summary
    assert not [line for line in result.outlines if line.startswith("FAILED")]

    shot = tmp_path / "report.png"
    dom, page = _dom(
        tmp_path, html_path.as_uri(), f"--screenshot={shot}", "--window-size=1280,1800"
    )
    statuses = {b["data-status"] for b in page.bodies}
    assert "failed" not in statuses and {"passed", "expected_failure"} <= statuses
    assert '<header class="top good">' in dom and "<strong>all passed</strong>" in dom
    assert "failed as expected" in dom
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    if os.environ.get("GRADCHECK_KIT_UPDATE_DOCS") == "1":
        DOCS_SCREENSHOT.write_bytes(data)
