"""``gradcheck-kit`` never crashes: any arguments, any file give 0, 1 or 2 and no traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support import samples

from gradcheck_kit import cli
from gradcheck_kit.report.document import make_document

# Help and --version end argparse with 0, a usage error with 2.
ARGPARSE_EXITS = (0, 2)


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run in ``folder`` with sys.path restored: hypothesis cannot use monkeypatch."""
    before, path = Path.cwd(), list(sys.path)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)
        sys.path[:] = path


def run_main(argv: list[str], folder: Path) -> tuple[int, str]:
    """``cli.main(argv)``'s exit status (argparse's SystemExit included) and its output."""
    out, err = io.StringIO(), io.StringIO()
    with _inside(folder), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            assert exc.code in ARGPARSE_EXITS, (argv, exc.code, err.getvalue())
            code = int(exc.code or 0)
    text = out.getvalue() + err.getvalue()
    assert code in (cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_USAGE), (argv, code)
    assert "Traceback" not in text or "--traceback" in argv, (argv, text)
    event(f"{argv[0] if argv else '(none)'} exits {code}")  # --hypothesis-show-statistics
    return code, text


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files the arguments may name: good, broken, deep, a folder."""
    root = tmp_path_factory.mktemp("fuzz")
    good = make_document(
        [samples.gradient_record("g", passed=False), samples.training_record()],
        environment=samples.sample_environment(),
    )
    (root / "good.json").write_text(json.dumps(good), encoding="utf-8")
    (root / "broken.json").write_text('{"schema_version": 2, "results": [', encoding="utf-8")
    (root / "deep.json").write_text("[" * 50_000 + "]" * 50_000, encoding="utf-8")
    (root / "folder").mkdir()
    return root


FILES = ["good.json", "broken.json", "deep.json", "missing.json", "folder", *["good.json"] * 5]
OUTPUTS = [
    "out/page.html",
    "out/merged.json",
    "folder",
    "good.json",
    "",
    "é/ü.html",
    "nul\x00.json",
]
VALUES = ["fast", "full", "auto", "float32", "float64", "nan", "-1", "0", "7", "1e-3", "", " "]
TARGETS = ["no_such_pkg_fuzz:f", "nocolon", "no_such_pkg_fuzz.mod:a.b", ":f", "a:", "1x:f"]
# Random text never names an importable module: a target would run its code.
noise = st.text(max_size=8).map(lambda t: f"zz_{t}")


def _option(flag: str, values: list[str]) -> st.SearchStrategy[list[str]]:
    return st.sampled_from(values).map(lambda value: [flag, value])


def _command(head: list[str], *parts: st.SearchStrategy[list[str]]) -> Any:
    """``head`` then any of ``parts`` (flags with values, operands), in any order."""
    return st.lists(st.one_of(*parts), max_size=5).flatmap(
        lambda chosen: st.permutations(chosen).map(
            lambda order: head + [word for part in order for word in part]
        )
    )


one = st.sampled_from
arguments = st.one_of(
    one(FILES).map(lambda f: ["check-json", f]),
    _command(["check-json"], one(FILES).map(lambda f: [f]), noise.map(lambda t: [t])),
    _command(
        ["report"],
        one(FILES).map(lambda f: [f]),
        _option("-o", OUTPUTS),
        _option("--json", OUTPUTS),
        _option("--title", ["", "<b>x</b>", "é"]),
    ),
    _command(
        ["check"],
        one(TARGETS).map(lambda t: [t]),
        *(_option(flag, VALUES) for flag in ("--mode", "--dtype", "--seed", "--atol", "--rtol")),
        _option("--json", OUTPUTS),
        _option("--path", ["folder", "missing", ""]),
        st.just(["--traceback"]),
    ),
    # anything at all, help and version included
    st.lists(one(["-h", "--version", "--", "-", "check", "report", *FILES, *VALUES]) | noise),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=arguments)
def test_any_arguments_give_an_exit_status_not_a_crash(folder: Path, argv: list[str]) -> None:
    run_main(argv, folder)


@pytest.mark.parametrize(
    "argv",
    [
        ["check-json", "nul\x00.json"],
        ["report", "nul\x00.json"],
        ["report", "good.json", "-o", "nul\x00.html"],
        ["report", "good.json", "-o", "out/page.html", "--json", "nul\x00.json"],
        ["check", "no_such_pkg_fuzz:f", "--json", "nul\x00.json"],
        ["check", "no_such_pkg_fuzz:f", "--path", "nul\x00"],
    ],
)
def test_a_path_holding_a_nul_byte_is_a_usage_error(
    folder: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # The OS refuses such a name ("embedded null byte"); argparse names the argument instead.
    with _inside(folder), pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == cli.EXIT_USAGE
    assert "is not a usable path: it holds a NUL byte" in capsys.readouterr().err


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


FIELDS = [
    "schema_version", "results", "environment", "created", "duration_s", "kind", "passed",
    "name", "test", "pairs", "findings", "devices", "test_id",
]  # fmt: skip
TOP_FIELDS = ("schema_version", "results", "environment", "created", "duration_s")


def _valid_document() -> dict[str, Any]:
    records = [
        samples.gradient_record("g", passed=True),
        samples.training_record(),
        samples.device_benchmark_record(),
    ]
    return json.loads(json.dumps(make_document(records)))


def _edited(key: str, value: Any, record: int) -> dict[str, Any]:
    """A valid document with one field, of the document or of a record, set to ``value``."""
    document = _valid_document()
    if key in TOP_FIELDS:
        document[key] = value
    else:
        document["results"][record][key] = value
    return document


# Any JSON at all, or a real document edited in one place.
documents = json_values | st.builds(
    _edited, st.sampled_from(FIELDS), json_values, st.integers(0, 2)
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents, command=st.sampled_from(["check-json", "report"]))
def test_any_file_gives_an_exit_status_not_a_crash(
    folder: Path, document: Any, command: str
) -> None:
    (folder / "doc.json").write_text(json.dumps(document), encoding="utf-8")
    argv = [command, "doc.json"] + (["-o", "doc.html"] if command == "report" else [])
    run_main(argv, folder)
