"""``@pytest.mark.gradcheck(world_size=N)``: a test's body on N gloo ranks (real pytest runs).

Each rank launch costs 2-3 s on 2 cores, so the cases share two inner runs: one in
pytest's default import mode, one in ``importlib`` mode with a package and a class.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist
from support import ranks
from test_plugin_basics import PLUGIN

from gradcheck_kit.pytest_plugin.options import RankOptions, rank_options
from gradcheck_kit.pytest_plugin.plugin import SKIP_REASON

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="no gloo in this torch build"
)

# the whole run's limit, the ranks' start-up included: 2-3 s alone, more on a busy machine
HANG_TIMEOUT = 12

RANK_TESTS = """
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import gradcheck_kit as gk

PIDS = Path({pids!r})


@pytest.mark.gradcheck(world_size=2)
def test_all_reduce():
    t = torch.ones(1)
    dist.all_reduce(t)
    assert t.item() == 2


@pytest.mark.gradcheck(world_size=2)
def test_fails_on_rank_one(ddp_world):
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    gk.check_gradients(torch.sin, x, name="sin_on_rank")
    assert ddp_world.rank == dist.get_rank() and ddp_world.world_size == 2
    value = 10 * ddp_world.rank
    assert value < 5, "rank-one-only failure"


@pytest.mark.gradcheck(world_size=2, timeout={timeout})
def test_hangs_on_rank_one():
    (PIDS / f"rank{{dist.get_rank()}}").write_text(str(os.getpid()))
    if dist.get_rank() == 1:
        time.sleep(600)


@pytest.mark.gradcheck(world_size=2)
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_parametrized_with_tmp_path(scale, tmp_path, ddp_world):
    (tmp_path / f"from_rank{{ddp_world.rank}}").write_text(str(scale))
    t = torch.tensor([scale])
    dist.all_reduce(t)
    dist.barrier()  # both files written
    assert t.item() == 2 * scale
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from_rank0", "from_rank1"]


@pytest.mark.gradcheck(world_size=3)
def test_three_ranks(ddp_world):
    got = [None] * 3
    dist.all_gather_object(got, (ddp_world.rank, os.getpid()))
    assert [rank for rank, _ in got] == [0, 1, 2]
    assert len({{pid for _, pid in got}} | {{os.getppid()}}) == 4


@pytest.mark.gradcheck(world_size=2)
def test_skips_on_every_rank():
    pytest.skip("no second GPU here")


@pytest.mark.gradcheck(world_size=2)
def test_unsendable_fixture(request):
    pass


@pytest.mark.gradcheck(world_size=1)
def test_world_of_one():
    pass


@pytest.mark.gradcheck(world_size="two")
def test_world_named():
    pass


@pytest.mark.gradcheck(timeout=5)
def test_timeout_without_world():
    pass


@pytest.mark.gradcheck(world_size=2, backend="carrier-pigeon")
def test_unknown_backend():
    pass


def test_ddp_world_without_the_marker(ddp_world):
    pass
"""

# importlib mode gives `pkg.test_in_class` a name that needs the package; the fixture's
# value is of a class of the test module, so it unpickles only once the module is imported.
CLASS_TESTS = """
import dataclasses

import pytest
import torch
import torch.distributed as dist

from .helpers import SCALE


@dataclasses.dataclass
class Batch:
    values: list


@pytest.fixture
def batch():
    return Batch([SCALE, 2 * SCALE])


@pytest.mark.gradcheck(world_size=2)
class TestInClass:
    def test_method(self, batch, gradcheck):
        t = torch.tensor(batch.values)
        dist.all_reduce(t)
        assert t.tolist() == [2 * SCALE, 4 * SCALE]
        x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        gradcheck(torch.tanh, x, name=f"tanh_rank{{dist.get_rank()}}")
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--strict-markers", *PLUGIN, *args)


def _section(result: pytest.RunResult, test: str) -> str:
    """The FAILURES/ERRORS section of one test in the terminal output."""
    text = result.stdout.str()
    start = re.search(rf"^_+ (ERROR at setup of )?{re.escape(test)} _+$", text, re.M)
    assert start is not None, f"no section for {test}:\n{text}"
    end = re.search(r"^(_{3,} |={3,} )", text[start.end() :], re.M)
    return text[start.end() : start.end() + (end.start() if end else len(text))]


def _durations(result: pytest.RunResult) -> dict[str, float]:
    """``--durations=0`` lines: ``{test name: seconds}`` of the call phase."""
    found = re.findall(r"^([\d.]+)s call\s+\S+::(\S+)$", result.stdout.str(), re.M)
    return {name: float(seconds) for seconds, name in found}


def test_rank_tests_run_on_every_rank_and_fail_once_naming_the_rank(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    pytester.makepyfile(test_ranks=RANK_TESTS.format(pids=str(pids), timeout=HANG_TIMEOUT))
    result = _run(pytester, "--gradcheck", "-rfEs", "--durations=0", "-p", "no:randomly")
    outcomes = result.parseoutcomes()
    # all_reduce, 2 parametrized, 3 ranks pass; rank one, hang, unsendable fail; the rest error
    assert (outcomes.get("passed"), outcomes.get("failed"), outcomes.get("skipped")) == (4, 3, 1)
    assert outcomes.get("errors", outcomes.get("error")) == 5, result.stdout.str()

    # a failure on rank 1 alone: reported once, naming the rank, with the rank's traceback
    failed = _section(result, "test_fails_on_rank_one")
    assert failed.count("rank 1 of 2 failed: AssertionError: rank-one-only failure") == 1
    assert "assert 10 < 5" in failed  # pytest's assertion rewriting on the rank
    assert "test_ranks.py" in failed and "in test_fails_on_rank_one" in failed
    assert "rank 0 of 2 failed" not in failed
    result.stdout.fnmatch_lines(["FAILED test_ranks.py::test_fails_on_rank_one - *rank 1 of 2*"])

    # a hang ends at the timeout, naming the rank; no process of it is left
    hung = _section(result, "test_hangs_on_rank_one")
    assert f"rank 1 of 2 did not finish within timeout={HANG_TIMEOUT} s" in hung
    assert _durations(result)["test_hangs_on_rank_one"] < HANG_TIMEOUT + 20
    rank_pids = [int((pids / f"rank{r}").read_text()) for r in (0, 1)]
    assert os.getpid() not in rank_pids and not any(ranks.alive(pid) for pid in rank_pids)

    # a fixture value that cannot be pickled is named
    unsendable = _section(result, "test_unsendable_fixture")
    assert "fixture 'request'" in unsendable and "cannot be sent to the ranks" in unsendable
    assert "During handling" not in unsendable

    # bad marker values fail their test alone, at setup, with the keyword named
    for test, text in (
        ("test_world_of_one", "world_size=1 must be an int >= 2"),
        ("test_world_named", "world_size='two' must be an int >= 2"),
        ("test_timeout_without_world", "timeout=5 applies to a test on several ranks"),
        ("test_unknown_backend", "backend='carrier-pigeon' is not one of 'gloo'"),
        ("test_ddp_world_without_the_marker", "ddp_world belongs to a test on several ranks"),
    ):
        assert text in _section(result, test), test
    assert "tests/test_plugin_ranks.py" not in result.stdout.str()  # no parent traceback

    # pytest.skip on the ranks skips the test, at its own line
    assert re.search(
        r"^SKIPPED \[1\] test_ranks.py:\d+: no second GPU here \(on every rank\)$",
        result.stdout.str(),
        re.M,
    ), result.stdout.str()

    # the checks made on the ranks reach the report, each with its rank
    document = json.loads((pytester.path / "reports/gradcheck.json").read_text(encoding="utf-8"))
    ranked = [r for r in document["results"] if r["name"] == "sin_on_rank"]
    assert sorted(r["extra"]["rank"] for r in ranked) == [0, 1]
    assert {r["test_id"] for r in ranked} == {"test_ranks.py::test_fails_on_rank_one"}
    assert {r["test"]["outcome"] for r in ranked} == {"failed"}


def test_a_class_in_a_package_under_importlib_mode_runs_on_the_ranks(
    pytester: pytest.Pytester,
) -> None:
    package = pytester.mkpydir("pkg")
    (package / "helpers.py").write_text("SCALE = 1.5\n", encoding="utf-8")
    (package / "test_in_class.py").write_text(CLASS_TESTS.format(), encoding="utf-8")
    result = _run(pytester, "--gradcheck", "--import-mode=importlib")
    result.assert_outcomes(passed=1)
    document = json.loads((pytester.path / "reports/gradcheck.json").read_text(encoding="utf-8"))
    names = sorted((r["name"], r["extra"]["rank"], r["passed"]) for r in document["results"])
    assert names == [("tanh_rank0", 0, True), ("tanh_rank1", 1, True)]


def test_rank_tests_are_gradcheck_tests_skipped_without_the_flag(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(test_ranks=RANK_TESTS.format(pids=str(tmp_path), timeout=HANG_TIMEOUT))
    result = _run(pytester, "-rs")
    # a bad marker value is an error even so, as for the check keywords; and the
    # unmarked test asks for ddp_world
    result.assert_outcomes(skipped=8, errors=5)
    assert result.stdout.str().count(SKIP_REASON) == 7  # one line per test line: [2] once


class _Node:
    def __init__(self, *kwargs: dict[str, Any]) -> None:
        self.marks = [pytest.mark.gradcheck(**k).mark for k in kwargs]

    def iter_markers(self, name: str) -> list[Any]:
        return list(self.marks)  # closest first, as pytest gives them


@pytest.mark.parametrize(
    ("marks", "expected"),
    [
        ([{"mode": "full"}], None),
        ([{"world_size": 2}], RankOptions(2)),
        (
            [{"timeout": 9}, {"world_size": 4, "backend": "gloo", "timeout": 1}],
            RankOptions(4, "gloo", 9.0),
        ),
        ([{"world_size": 3}, {"world_size": 2}], RankOptions(3)),
    ],
)
def test_rank_options_take_each_keyword_from_the_closest_mark(
    marks: list[dict[str, Any]], expected: RankOptions | None
) -> None:
    assert rank_options(_Node(*marks)) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"world_size": 1}, "world_size=1 must be an int >= 2"),
        ({"world_size": True}, "world_size=True must be an int >= 2"),
        ({"world_size": 2.0}, "world_size=2.0 must be an int >= 2"),
        ({"world_size": 2, "timeout": 0}, "timeout=0 must be a number of seconds > 0"),
        ({"world_size": 2, "timeout": float("nan")}, "timeout=nan"),
        ({"world_size": 2, "backend": 3}, "backend=3 is not one of"),
        ({"backend": "gloo"}, "add world_size=N"),
    ],
)
def test_bad_rank_keywords_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        rank_options(_Node(kwargs))
