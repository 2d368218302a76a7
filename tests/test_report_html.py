"""The HTML page: content by kind, failures first, escaping everywhere, self-contained, atomic.

The page is parsed with the standard library's HTML parser; the browser test
(test_report_browser.py) runs the same page in Chromium.
"""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import samples

from gradcheck_kit.report import charts
from gradcheck_kit.report.document import make_document
from gradcheck_kit.report.files import write_text_atomic
from gradcheck_kit.report.heatmap import heatmap
from gradcheck_kit.report.html import render_html, write_html
from gradcheck_kit.report.page import MAX_DETAILS, MAX_HEATMAPS, build_page


class Page(HTMLParser):
    """Start tags in order, visible text, and each check's tbody attributes."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.bodies: list[dict[str, str | None]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self._table_depth = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]
        if tag == "table":
            self._table_depth += 1
        if tag == "tbody" and self._table_depth == 1 and dict(attrs).get("data-status"):
            self.bodies.append(dict(attrs))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table_depth -= 1
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)


def every_kind_document() -> dict[str, Any]:
    records = [
        samples.gradient_record("ok_fn", passed=True, test_id="t.py::test_ok"),
        samples.device_benchmark_record(test_id="t.py::test_bench"),
        samples.gradient_record("transposed_fn", passed=False, pattern="transposed"),
        samples.training_record(passed=True),
        samples.gradient_record("region_fn", passed=False, pattern="region", error_map=False),
        samples.manual_record(),
        samples.training_record(parameter="fc2.bias"),
        samples.device_parity_record(passed=False),
        {"kind": "future_kind", "name": "from a later issue", "passed": False,
         "message": "a new kind", "rows": [{"x": 1, "y": 2.5}], "nested": {"a": [1, 2]}},
    ]  # fmt: skip
    return make_document(records, environment=samples.sample_environment(), duration_s=2.0)


# ---------------------------------------------------------------- content


def test_failures_come_first_then_no_verdict_then_passed() -> None:
    page = Page(render_html(every_kind_document()))
    statuses = [body["data-status"] for body in page.bodies]
    assert statuses == ["failed"] * 6 + ["passed"] * 3
    names = [row.name for row in build_page(every_kind_document()).rows]
    # Within a verdict, the order of the run.
    assert names[:3] == ["transposed_fn", "region_fn", "loss"]


def test_expected_and_unasserted_failures_are_shown_apart() -> None:
    expected = samples.gradient_record("expected_fn", passed=False, test_id="t.py::test_raises")
    expected["test"] = {"outcome": "passed", "looked_at": True, "file": "t.py", "line": 3}
    unread = samples.gradient_record("unread_fn", passed=False, test_id="t.py::test_unread")
    unread["test"] = {"outcome": "passed", "looked_at": False, "file": "t.py", "line": 9}
    xfailed = samples.gradient_record("xfail_fn", passed=False, test_id="t.py::test_xfail")
    xfailed["test"] = {"outcome": "xfailed", "file": "t.py", "line": 12}
    ok = samples.gradient_record("ok_fn", passed=True)
    text = render_html(make_document([expected, ok, unread, xfailed]))
    page = Page(text)
    assert [body["data-status"] for body in page.bodies] == [
        "unasserted",
        "expected_failure",
        "expected_failure",
        "passed",
    ]
    verdict_line = " ".join(re.search(r'<p class="verdict".*?</p>', text, re.S)[0].split())
    assert "no failures, 1 unasserted" in verdict_line
    assert "2 failed as expected" in verdict_line and "failed</strong>" not in verdict_line
    assert '<header class="top warn">' in text
    assert 'data-filter="expected_failure"' in text and 'data-filter="unasserted"' in text
    rows = {row.name: row for row in build_page(make_document([expected, unread])).rows}
    # a failure its test expected is as settled as a pass: closed, no "run again" line
    assert not rows["expected_fn"].open and rows["unread_fn"].open
    assert rows["expected_fn"].status_label == "failed as expected"
    only_expected = render_html(make_document([expected, ok]))
    assert '<header class="top good">' in only_expected and "all passed" in only_expected


def test_each_kind_shows_its_own_detail() -> None:
    text = render_html(every_kind_document())
    page = Page(text)
    visible = " ".join(page.text)
    # Gradient: numbers, hint, heatmap per failing block, reproduce line.
    assert "analytic ≈ numericᵀ" in visible
    assert text.count('<svg class="heatmap"') == 3  # transposed, region, manual
    assert "gradcheck_kit.check_gradients(transposed_fn, inputs, mode='full'" in visible
    assert "eps=1e-06, atol=1e-05, rtol=0.001, seed=0, rng='fixed'" in visible
    # Manual: the three ways and the odd one out, the derivative in the reproduce line.
    assert "odd one out" in visible and "check_matches_manual(loss, manual_grad, inputs" in visible
    # Training: parameter, step, cause, fix, source line.
    for fact in ("fc2.bias", "optimizer.zero_grad() is never called", "train.py:12 in train"):
        assert fact in visible
    # Benchmark: the bar chart and the speedup line with its crossover.
    assert '<svg class="chart bars"' in text and '<svg class="chart sweep"' in text
    assert "crossover at batch 256" in visible and "cuda 1.51× slower than cpu" in visible
    # Parity and unknown kinds: message and a table of their fields.
    assert "gradients differ: TF32 matmuls" in visible and "params/0.weight" in visible
    assert "a new kind" in visible and "future_kind" in visible
    # Header: counts by kind, environment, the settings most checks share.
    assert "6 failed" in visible and "NVIDIA H100 80GB HBM3" in visible
    assert "mode full (asked: auto)" in visible


def test_fields_a_project_adds_through_its_hook_show_in_the_details() -> None:
    # what pytest_gradcheck_record returns lands in the record's "extra"
    record = samples.gradient_record("g", passed=False)
    record["extra"] = {"git_sha": "abc123", "dataset": "cifar<10>"}
    page = Page(render_html(make_document([record], environment=samples.sample_environment())))
    visible = " ".join(page.text)
    assert "extra" in visible and "abc123" in visible and "cifar<10>" in visible


def test_passed_checks_take_one_line_and_are_closed() -> None:
    page = build_page(every_kind_document())
    ok = next(row for row in page.rows if row.name == "ok_fn")
    assert not ok.full and not ok.open
    assert "max |diff|" in ok.line and "0 / 64 mismatched" in ok.line
    bench = next(row for row in page.rows if row.kind == "device_benchmark")
    assert bench.full and bench.open  # the charts are its point


def test_heatmap_of_a_transposed_jacobian_is_mirrored() -> None:
    record = samples.gradient_record(passed=False, pattern="transposed", n=6)
    hm = heatmap(record["pairs"][0])
    assert (hm.grid_rows, hm.grid_cols, hm.source) == (6, 6, "error_map")
    cells = _cells(hm)
    # J vs its transpose: zero on the diagonal, the same error mirrored across it.
    assert all(cells[(i, i)] == cells[(0, 0)] for i in range(6))
    assert all(cells[(i, j)] == cells[(j, i)] for i in range(6) for j in range(6))
    assert cells[(0, 1)] != cells[(0, 0)]


def test_heatmap_of_a_partly_wrong_jacobian_shows_the_region() -> None:
    record = samples.gradient_record(passed=False, pattern="region", n=8)
    cells = _cells(heatmap(record["pairs"][0]))
    red = {c for c, fill in cells.items() if fill in _red()}
    assert red == {(i, j) for i in range(4) for j in range(4)}


def test_heatmap_from_worst_entries_and_pooling() -> None:
    pair = {
        "output_shape": [1],
        "input_shape": [1000],
        "worst": [
            {"output_index": [0], "input_index": [999], "abs_error": 2.0, "allowed": 1e-3},
            {"output_index": [0], "input_index": [5], "abs_error": "nan", "allowed": 1e-3},
        ],
    }
    hm = heatmap(pair)
    assert (hm.grid_rows, hm.grid_cols, hm.col_step, hm.source) == (1, 32, 32, "worst")
    assert hm.unmeasured == "M0 0h32v1h-32z"
    cells = _cells(hm)
    assert set(cells) == {(0, 0), (0, 31)}
    assert cells[(0, 0)] == "#1b1b1b"  # NaN
    assert hm.height >= 18  # a strip is drawn thicker than its cells


def test_heatmap_of_a_loss_against_a_matrix_keeps_the_matrix_shape() -> None:
    worst = [
        {"output_index": [], "input_index": [2, j], "abs_error": 1.0, "allowed": 1e-3}
        for j in range(5)
    ]
    hm = heatmap({"output_shape": [], "input_shape": [4, 5], "worst": worst})
    assert (hm.grid_rows, hm.grid_cols, hm.layout) == (4, 5, "input")
    assert set(_cells(hm)) == {(2, j) for j in range(5)}  # one wrong row of weights: one row
    manual = samples.manual_record()
    manual["pairs"][0]["input_shape"] = [2, 2]
    text = render_html(make_document([manual]))
    assert "is one number; cells are the entries of" in text


def test_heatmaps_stop_at_the_page_limit() -> None:
    records = [samples.gradient_record(f"f{i}", passed=False, n=2) for i in range(MAX_HEATMAPS + 3)]
    page = build_page(make_document(records))
    assert page.heatmaps_left_out == 3
    text = render_html(make_document(records))
    assert text.count('<svg class="heatmap"') == MAX_HEATMAPS
    assert "3 more have their numbers only" in text


def test_failures_past_the_detail_limit_keep_their_row_and_hint_only() -> None:
    records = [samples.gradient_record(f"f{i}", passed=False, n=2) for i in range(MAX_DETAILS + 2)]
    page = build_page(make_document(records))
    assert page.details_left_out == 2
    last = page.rows[-1]
    assert last.bare and not last.full and last.detail is None and last.status == "failed"
    text = render_html(make_document(records))
    assert f"Failures are shown in full for the first {MAX_DETAILS}; 2 more" in text
    # a bare failure: its name is plain text (nothing to open) and its body has one row
    body = text[text.rindex("<tbody") :].split("</table>")[0]
    assert f">{last.name}<" in body and "<button" not in body
    assert body.count("<tr") == 1
    assert all(not row.bare for row in page.rows[:MAX_DETAILS])


def test_benchmark_reading_is_lenient() -> None:
    record = {
        "kind": "device_benchmark",
        "devices": {
            "cpu": {"forward_backward": {"median": 0.002, "iqr": 0.0001}},
            "cuda": {"forward_backward": {"median": 0.001}},
            "mps": {"skipped": "not built with MPS"},
        },
        "sweep": [{"size": 10, "speedup": 0.5}, {"size": 1000, "speedup": 4}],
        "crossover": 100,
    }
    bench = charts.read_benchmark(record)
    assert bench is not None
    assert bench.speedups == {"forward_backward": 2.0}
    assert bench.skipped == (("mps", "not built with MPS"),)
    chart = charts.speedup_chart(bench)
    assert chart is not None and chart.crossover_x is not None
    assert chart.left < chart.crossover_x < chart.right
    assert chart.parity_y is not None and chart.top < chart.parity_y < chart.bottom
    assert charts.read_benchmark({"kind": "device_benchmark", "devices": "gpu"}) is None
    # Unreadable timings: the record is shown by its fields instead.
    text = render_html(make_document([{"kind": "device_benchmark", "name": "b", "devices": 3}]))
    assert '<svg class="chart' not in text and "devices" in text


# ---------------------------------------------------------------- escaping


HOSTILE = "<script>alert(1)</script>"


def test_a_hostile_test_id_shows_as_text() -> None:
    records = [
        samples.gradient_record(HOSTILE, passed=False, test_id=HOSTILE, hint=HOSTILE),
        samples.training_record(HOSTILE, parameter=HOSTILE, test_id=HOSTILE),
        {"kind": HOSTILE, "name": HOSTILE, "passed": False, HOSTILE: HOSTILE},
    ]
    text = render_html(make_document(records, environment={"python": HOSTILE}))
    assert HOSTILE not in text
    assert html.escape(HOSTILE, quote=False) in text
    page = Page(text)
    assert page.tags.count("script") == 2  # the page's JSON data and its own JS, no more
    assert sum(HOSTILE in t for t in page.text) >= 8


# Text from user code, with what is hard to escape: markup, quotes, entities, the end of a
# script, control characters, non-ASCII.
user_text = (
    st.lists(
        st.one_of(
            st.sampled_from(
                ["<", ">", "&", '"', "'", "`", "=", "</script>", "&amp;", "<!--", "\n"]
            ),
            st.characters(codec="utf-8", exclude_categories=("Cs",)),
        ),
        min_size=1,
        max_size=12,
    )
    .map("".join)
    .filter(lambda s: s.strip() and not {"\r", "\x00", "§"} & set(s))
)


def _hostile_document(payload: str) -> dict[str, Any]:
    gradient = samples.gradient_record(payload, passed=False, test_id=payload, hint=payload)
    gradient["notes"] = [payload]
    gradient["pairs"][0]["output"] = payload
    gradient["pairs"][0]["input"] = payload
    manual = samples.manual_record(payload, test_id=payload)
    training = samples.training_record(payload, parameter=payload, test_id=payload)
    finding = training["findings"][0]
    finding.update(title=payload, cause=payload, fix=payload, location=payload, expected=payload)
    benchmark = samples.device_benchmark_record(payload, test_id=payload)
    benchmark["devices"][1]["device"] = payload
    benchmark["size_name"] = payload
    skipped = samples.device_benchmark_record(payload, cuda=False)
    skipped["devices"][1] = {"device": payload, "skipped": payload}
    parity = samples.device_parity_record(payload, passed=False, test_id=payload)
    parity["message"] = payload
    parity["leaves"][0]["leaf"] = payload
    unknown = {"kind": payload, "name": payload, "passed": False, "message": payload,
               payload: payload, "rows": [{payload: payload}]}  # fmt: skip
    environment = {**samples.sample_environment(), "python": payload, payload: payload}
    environment["options"] = {"args": [payload]}
    document = make_document(
        [gradient, manual, training, benchmark, skipped, parity, unknown],
        environment=environment,
        version=payload,
        sources=[
            {
                "path": payload,
                "created": payload,
                "checks": 1,
                "failed": 0,
                "environment": {"python": payload},
            }
        ],
    )
    document["created"] = payload
    return document


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=user_text)
def test_user_text_is_escaped_everywhere(payload: str) -> None:
    text = render_html(_hostile_document(payload))
    page = Page(text)
    # A harmless text of the same shape: a line break may rightly put a value in a <pre>.
    harmless = "".join(c if c == "\n" else "§" for c in payload)
    baseline = Page(render_html(_hostile_document(harmless)))
    # The payload changed no markup: the same elements, in the same order...
    assert page.tags == baseline.tags
    # ...no attribute an injection would bring...
    assert {name for name, _ in page.attributes} == {name for name, _ in baseline.attributes}
    # ...and it reads back as the very text it was, wherever it went (but in "run again",
    # whose test id is quoted for the shell).
    assert _visible(page) == _visible(baseline).replace(harmless, payload)
    assert _visible(page).count(payload) >= 40
    # The embedded JSON cannot end its script early.
    for script in page.scripts:
        assert "</script" not in script.lower()


# ---------------------------------------------------------------- self-contained


def test_the_page_fetches_nothing() -> None:
    text = render_html(every_kind_document())
    page = Page(text)
    assert not {"link", "img", "iframe", "object", "embed", "video", "audio"} & set(page.tags)
    for name, value in page.attributes:
        assert name not in ("src", "srcset", "xlink:href", "action"), (name, value)
        if name == "href":
            assert value.startswith("#"), value
    assert not re.search(r"https?://|url\(|@import|fetch\(|XMLHttpRequest", text)


def test_an_empty_run_renders() -> None:
    text = render_html(make_document([]))
    assert "No check was recorded." in text and "all passed" in text


# ---------------------------------------------------------------- atomic writing


def test_a_failure_mid_write_leaves_the_previous_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "reports" / "gradcheck.html"
    write_html(every_kind_document(), path)
    before = path.read_bytes()

    from gradcheck_kit.report import html as html_module

    def broken(document: Any, *, title: str = "") -> Any:
        yield "<!DOCTYPE html><html><body>half a page"
        raise RuntimeError("renderer died")

    monkeypatch.setattr(html_module, "generate_html", broken)
    with pytest.raises(RuntimeError, match="renderer died"):
        html_module.write_html(every_kind_document(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["gradcheck.html"]


def test_a_run_killed_mid_write_leaves_the_previous_report(tmp_path: Path) -> None:
    path = tmp_path / "gradcheck.html"
    path.write_text("the previous report", encoding="utf-8")
    ready = tmp_path / "ready"
    # A writer that stops half-way (as a killed CI job does) and is then SIGKILLed.
    script = textwrap.dedent(
        f"""
        import pathlib, time
        from gradcheck_kit.report.files import write_text_atomic

        def chunks():
            yield "<!DOCTYPE html>" + "x" * 100_000
            pathlib.Path({str(ready)!r}).write_text("1")
            time.sleep(60)
            yield "never"

        write_text_atomic(pathlib.Path({str(path)!r}), chunks())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            subprocess.run([sys.executable, "-c", "pass"], check=False)  # ~20 ms
        assert ready.exists(), "the writer never got half-way"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert path.read_text(encoding="utf-8") == "the previous report"
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".gradcheck-")]
    # Only its temporary file is left (nothing can clean up after SIGKILL), never the target...
    assert len(leftovers) == 1
    # ...and the next write to the folder removes it: its writer is gone.
    write_text_atomic(path, "the next report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gradcheck.html", "ready"]


# ---------------------------------------------------------------- helpers


def _visible(page: Page) -> str:
    text = "".join(page.text)
    return re.sub(r"run again: python -m pytest .*? --gradcheck", "", text, flags=re.DOTALL)


def _cells(hm: Any) -> dict[tuple[int, int], str]:
    """Cell -> fill, read back from the layers' paths."""
    cells: dict[tuple[int, int], str] = {}
    for layer in hm.layers:
        for c, r, n in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\d+z", layer.d):
            for k in range(int(n)):
                cells[(int(r), int(c) + k)] = layer.fill
    return cells


def _red() -> set[str]:
    from gradcheck_kit.report import heatmap as heatmap_module

    return set(heatmap_module._OVER)


def test_cells_helper_reads_runs() -> None:
    from gradcheck_kit.report.heatmap import Layer

    class Fake:
        layers = (Layer("#f00", "M1 2h3v1h-3z"),)

    assert _cells(Fake()) == {(2, 1): "#f00", (2, 2): "#f00", (2, 3): "#f00"}


# --------------------------------------------------------------------------- every kind, readable


def _one_page(record: dict[str, Any]) -> str:
    return render_html(make_document([record]))


def test_training_findings_that_differ_only_in_the_parameter_make_one_card() -> None:
    parameters = ["input_linear.weight", "input_linear.bias", "out.weight", "out.bias"]
    findings = [
        {
            "kind": "no_gradient",
            "title": "Trainable parameter never received a gradient",
            "parameter": p,
            "found": f"no backward pass gave {p!r} a gradient",
            "fix": f"pass ignore=[{p!r}]",
        }
        for p in parameters
    ] + [{"kind": "grad_not_reset", "title": "Gradient not reset", "parameter": "out.bias"}]
    record = {"kind": "training", "name": "Net", "passed": False, "findings": findings}
    page = build_page(make_document([record]))
    (row,) = page.rows
    cards = row.detail.findings
    assert [c.title for c in cards] == [
        "Trainable parameter never received a gradient (4 parameters)",
        "Gradient not reset",
    ]
    assert dict(cards[0].facts)["parameters"] == ", ".join(parameters)
    assert dict(cards[0].facts)["found"] == "no backward pass gave '<parameter>' a gradient"
    assert row.summary.startswith("Trainable parameter never received a gradient: input_linear")
    assert row.summary.endswith("(and 1 more)")
    html_text = _one_page(record)
    assert html_text.count('<div class="finding">') == 2


def test_a_function_audit_is_shown_as_tables_not_json() -> None:
    pair = {
        "output": "output", "input": "inputs[0]", "output_shape": [3], "input_shape": [3],
        "passed": False, "max_abs_error": 0.5, "max_rel_error": 0.5, "mismatched": 3,
        "total": 9, "worst": [],
    }  # fmt: skip
    record = {
        "kind": "autograd_function", "name": "Square", "passed": False, "check":
        "check_autograd_function", "dtype": "float64", "dtype_policy": "float64", "seed": 0,
        "findings": [
            {"check": "backward", "status": "failed", "text": "backward is off by 2", "input": "x"},
            {"check": "forward_mode", "status": "skipped", "text": "no jvp staticmethod"},
        ],
        "gradient": {"kind": "gradient", "pairs": [pair], "notes": ["a note <b>"]},
        "second_order": None, "hints": [], "notes": [],
    }  # fmt: skip
    page = build_page(make_document([record]))
    (row,) = page.rows
    assert row.detail.template == "autograd_function"
    assert [r[0] for r in row.detail.findings.rows] == ["backward", "forward mode"]
    assert row.detail.blocks.rows[0][-1] == "failed"
    assert not any(f.long for f in row.fields), [f.key for f in row.fields if f.long]
    html_text = _one_page(record)
    assert "properties checked" in html_text and "no jvp staticmethod" in html_text
    assert '"pairs"' not in html_text and "&lt;b&gt;" in html_text


def test_the_vmap_fallback_note_is_information_not_an_error() -> None:
    import torch

    import gradcheck_kit as gk

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return x * grad  # a factor 2 missing: diagnosing it evaluates in batches

    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(Square.apply, x, mode="full")
    (note,) = [n for n in result.notes if "vmap" in n]
    assert note == (
        "vmap is not supported by this Function (it has no setup_context); "
        "batched checks ran one by one instead"
    )
    html_text = _one_page(result.with_test_id("t.py::test").to_dict())
    assert "RuntimeError" not in html_text
    assert f'<p class="note info">{note}</p>' in html_text


def test_a_graph_record_is_a_card_of_its_own_kind() -> None:
    import torch

    import gradcheck_kit as gk

    try:
        gk.assert_requires_grad({"x": torch.zeros(2)})
    except gk.errors.GraphCheckError as error:
        record = error.result.to_dict()
    page = build_page(make_document([record]))
    assert [(k.kind, k.label, k.failed) for k in page.kinds] == [("graph", "graph", 1)]
    (row,) = page.rows
    assert row.summary.startswith("[gradcheck] Tensors do not require grad!")
    assert dict((f.key, f.value) for f in row.fields)["offending"] == "x"


def test_benchmark_rows_show_what_pytest_benchmark_measured() -> None:
    record = samples.device_benchmark_record("Net step")
    record["devices"] = [
        {
            "device": "cpu",
            "forward_backward": {
                "median_s": 0.002, "iqr_s": 0.0001, "runs": 17, "iterations": 4,
                "min_s": 0.0019, "mean_s": 0.0021, "stddev_s": 0.00005,
            },
        }
    ]  # fmt: skip
    record.pop("sweep", None)
    page = build_page(make_document([record]))
    table = page.rows[0].detail.timings
    assert table.columns[-4:] == ("iterations", "min", "mean", "stddev")
    (cells,) = table.rows
    assert cells[3:] == ("0.1 ms", "17", "4", "1.9 ms", "2.1 ms", "50 µs")
