"""The plugin's check options, fixtures and targets, through real pytest runs (pytester)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_plugin_basics import PLUGIN

from gradcheck_kit.pytest_plugin.options import CheckDefaults, apply_marker


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # in a subprocess: the inner runs import torch and user modules of their own
    return pytester.runpytest_subprocess(
        "--strict-markers", *PLUGIN, "-p", "no:cacheprovider", *args
    )


def results_of(pytester: pytest.Pytester) -> list[dict[str, object]]:
    document = json.loads((pytester.path / "reports" / "gradcheck.json").read_text())
    return list(document["results"])


# ---------------------------------------------------------------- options


OPTIONS_PROBE = """
import json, pytest

def test_probe(gradcheck, pytestconfig):
    print("OPTIONS=" + json.dumps(gradcheck.options, sort_keys=True))
"""


def options_printed(result: pytest.RunResult) -> dict[str, object]:
    for line in result.stdout.lines:
        if "OPTIONS=" in line:
            return dict(json.loads(line.split("OPTIONS=", 1)[1]))
    raise AssertionError("the inner test printed no options:\n" + result.stdout.str())


def test_defaults_without_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(OPTIONS_PROBE)
    result = run(pytester, "-s")
    assert options_printed(result) == {"dtype": "float64", "mode": "auto", "seed": 0}


def test_ini_sets_options_and_the_command_line_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(OPTIONS_PROBE)
    pytester.makeini(
        """
        [pytest]
        gradcheck_mode = fast
        gradcheck_dtype = native
        gradcheck_seed = 3
        gradcheck_atol = 1e-4
        """
    )
    result = run(pytester, "-s", "--gradcheck-mode=full", "--gradcheck-rtol", "0.01")
    assert options_printed(result) == {
        "atol": 1e-4,
        "dtype": "native",
        "mode": "full",
        "rtol": 0.01,
        "seed": 3,
    }


def test_pyproject_ini_options_are_read(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(OPTIONS_PROBE)
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        gradcheck_mode = "full"
        gradcheck_seed = "11"
        """
    )
    result = run(pytester, "-s")
    assert options_printed(result)["mode"] == "full"
    assert options_printed(result)["seed"] == 11


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gradcheck-mode=exact"], "Expected one of auto, full, fast"),
        (["--gradcheck-dtype=float16"], "Expected one of float64, native"),
        (["--gradcheck-seed=-1"], "Expected >= 0"),
        (["--gradcheck-atol=abc"], "Expected a number such as 1e-5"),
        (["--gradcheck-device=tpu"], "Expected one of cpu, cuda, all"),
    ],
)
def test_bad_option_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(OPTIONS_PROBE)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_bad_ini_value_names_the_key(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(OPTIONS_PROBE)
    pytester.makeini("[pytest]\ngradcheck_mode = sometimes\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*gradcheck_mode = 'sometimes' in the ini file*"])


def test_options_are_listed_in_help(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")
    result.stdout.fnmatch_lines(
        [
            "gradient checks:",
            "*--gradcheck-mode={auto,full,fast}*",
            "*--gradcheck-dtype={float64,native}*",
            "*--gradcheck-device={cpu,cuda,all}*",
            "*--gradcheck-seed=N*",
            "*--gradcheck-targets=MOD:FACTORY,...*",
        ]
    )


# ---------------------------------------------------------------- marker overrides


def test_marker_overrides_the_run_options_for_its_test() -> None:
    base = CheckDefaults(mode="fast", atol=1e-3)
    changed = apply_marker(base, {"mode": "full", "atol": 1e-5, "n_probes": 8})
    assert changed.as_kwargs() == {
        "mode": "full",
        "dtype": "float64",
        "seed": 0,
        "atol": 1e-5,
        "n_probes": 8,
    }
    assert apply_marker(base, {"devices": ["cpu", "cuda"]}).devices() == ("cpu", "cuda")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "exact"}, "mode='exact' is not one of"),
        ({"seed": -2}, "seed=-2 must be an int >= 0"),
        ({"atol": "small"}, "atol='small' must be a number"),
        ({"devices": ["tpu"]}, "devices=['tpu']"),
        ({"tolerance": 1}, "can't have 'tolerance' keyword argument"),
    ],
)
def test_bad_marker_values_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        apply_marker(CheckDefaults(), kwargs)


# ---------------------------------------------------------------- fixtures


def test_gradcheck_fixture_asserts_records_and_uses_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest, torch

        class Half(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * x
            @staticmethod
            def backward(ctx, g):
                return g   # should be 2 x g

        def x64():
            return torch.linspace(0.5, 1.5, 4, dtype=torch.float64).requires_grad_()

        @pytest.mark.gradcheck(mode="full")
        def test_right(gradcheck):
            result = gradcheck(torch.tanh, x64())
            assert result.mode == "full"
            assert gradcheck.module(torch.nn.Linear(4, 2, dtype=torch.float64), x64()).passed

        @pytest.mark.gradcheck(mode="fast")
        def test_wrong(gradcheck):
            assert not gradcheck.check(Half.apply, x64()).passed
            gradcheck(Half.apply, x64())
        """
    )
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Gradients are not close*fast mode*"])
    by_test = {}
    for record in results_of(pytester):
        by_test.setdefault(str(record["test_id"]).split("::")[-1], []).append(record)
    assert [r["mode"] for r in by_test["test_right"]] == ["full", "full"]
    assert [r["passed"] for r in by_test["test_wrong"]] == [False, False]


def test_grad_device_runs_per_selected_device_and_skips_cuda_without_gpu(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import torch

        def test_device(grad_device):
            assert isinstance(grad_device, torch.device)
            assert torch.zeros(1, device=grad_device).device.type == grad_device.type
        """
    )
    result = run(pytester, "--gradcheck-device=all", "-v", "-rs")
    outcomes = result.parseoutcomes()
    import torch

    if torch.cuda.is_available():
        assert outcomes.get("passed") == 2
    else:
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(["*test_device?cpu? PASSED*", "*CUDA device not available*"])


def test_grad_rng_seeds_and_restores(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import random, numpy, torch, pytest

        @pytest.mark.gradcheck(seed=5)
        def test_seeded(grad_rng):
            first = torch.rand(3)
            torch.manual_seed(5)
            assert torch.equal(first, torch.rand(3))
            assert torch.equal(torch.rand(2, generator=grad_rng),
                               torch.rand(2, generator=torch.Generator().manual_seed(5)))

        def test_unseeded_runs_after():
            torch.rand(1)
        """
    )
    pytester.makeconftest(
        """
        import torch, pytest

        @pytest.fixture(autouse=True)
        def check_restored(request):
            before = torch.random.get_rng_state()
            yield
            if "grad_rng" in request.fixturenames:
                assert torch.equal(before, torch.random.get_rng_state()), "RNG state leaked"
        """
    )
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=2)


def test_training_watch_fixture_fails_a_buggy_loop(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import torch

        def loop(model, opt, zero):
            for _ in range(3):
                if zero:
                    opt.zero_grad()
                model(torch.randn(4, 3)).pow(2).mean().backward()
                opt.step()

        def test_correct(training_watch):
            model = torch.nn.Linear(3, 1)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            training_watch(model, opt)
            loop(model, opt, zero=True)

        def test_missing_zero_grad(training_watch):
            model = torch.nn.Linear(3, 1)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            training_watch(model, opt)
            loop(model, opt, zero=False)
        """
    )
    result = run(pytester)
    # a failure of the test itself (its call phase), not an error at teardown
    result.assert_outcomes(passed=1, failed=1, errors=0)
    result.stdout.fnmatch_lines(
        ["E *gradcheck_kit.errors.TrainingLoopError: *", "FAILED *::test_missing_zero_grad*"]
    )


# ---------------------------------------------------------------- targets


def write_targets(pytester: pytest.Pytester) -> None:
    package = pytester.mkpydir("myproj_targets")
    (package / "grads.py").write_text(
        textwrap.dedent(
            """
            import torch

            class Half(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x):
                    return x * x
                @staticmethod
                def backward(ctx, g):
                    return g

            def x64():
                return torch.linspace(0.5, 1.5, 4, dtype=torch.float64).requires_grad_()

            def good():
                return [(torch.sin, x64()), (torch.nn.Linear(4, 2, dtype=torch.float64), x64())]

            def bad():
                return Half.apply, x64()

            def raises():
                raise RuntimeError("weights file missing")
            """
        )
    )


def test_targets_from_the_command_line_pass_and_fail_like_tests(pytester: pytest.Pytester) -> None:
    write_targets(pytester)
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = run(
        pytester,
        "--gradcheck",
        "--gradcheck-targets",
        "myproj_targets.grads:good,myproj_targets.grads:bad",
        "-v",
        "--rootdir",
        str(pytester.path),
    )
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*myproj_targets.grads:good::sin PASSED*",
            "*myproj_targets.grads:good::Linear PASSED*",
            "*myproj_targets.grads:bad::apply FAILED*",
        ]
    )
    result.stdout.fnmatch_lines(["*Gradients are not close*"])
    assert len(results_of(pytester)) == 3


def test_targets_from_the_ini_file(pytester: pytest.Pytester) -> None:
    write_targets(pytester)
    pytester.makeini("[pytest]\ngradcheck_targets = myproj_targets.grads:good\npythonpath = .\n")
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("myproj_targets.grads:raises", "*raised RuntimeError: weights file missing*"),
        ("myproj_targets.nothere:f", "*cannot import module 'myproj_targets.nothere'*"),
        ("myproj_targets.grads:nope", "*has no attribute 'nope'*"),
        ("not_a_target", "*is not of the form 'package.module:factory'*"),
    ],
)
def test_broken_targets_are_collection_errors_with_a_message(
    pytester: pytest.Pytester, spec: str, message: str
) -> None:
    write_targets(pytester)
    pytester.makeini("[pytest]\npythonpath = .\n")
    result = run(pytester, "--gradcheck", f"--gradcheck-targets={spec}")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting*", f"gradcheck target: {message}"])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.fnmatch_lines(["*1 error*"])


def test_target_decorator_in_a_test_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import torch
        import gradcheck_kit as gk

        CALLED = []

        @gk.target(mode="full")
        def trig():
            CALLED.append(1)
            x = torch.linspace(0.5, 1.5, 3, dtype=torch.float64).requires_grad_()
            return [(torch.sin, x), (torch.cos, x)]

        def test_plain():
            pass
        """
    )
    off = run(pytester, "-v", "-rs")
    off.assert_outcomes(passed=1, skipped=1)
    off.stdout.fnmatch_lines(["*trig::target SKIPPED*", "*run with --gradcheck*"])
    on = run(pytester, "--gradcheck", "-v")
    on.assert_outcomes(passed=3)
    on.stdout.fnmatch_lines(["*trig::sin PASSED*", "*trig::cos PASSED*"])
    assert {r["mode"] for r in results_of(pytester)} == {"full"}


def test_a_newcomers_project_with_src_layout_and_own_conftest(pytester: pytest.Pytester) -> None:
    src = pytester.path / "src" / "newcomer"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "ops.py").write_text(
        textwrap.dedent(
            """
            import torch

            def smooth_abs(x):
                return torch.sqrt(x * x + 1.0)

            def target():
                return smooth_abs, torch.randn(5, dtype=torch.float64, requires_grad=True)
            """
        )
    )
    tests = pytester.path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text(
        "import pytest\n\n@pytest.fixture\ndef x():\n"
        "    import torch\n    return torch.randn(3, dtype=torch.float64, requires_grad=True)\n"
    )
    (tests / "test_ops.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from newcomer.ops import smooth_abs

            @pytest.mark.gradcheck
            def test_smooth_abs(gradcheck, x):
                gradcheck(smooth_abs, x)
            """
        )
    )
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        pythonpath = ["src"]
        testpaths = ["tests"]
        gradcheck_targets = "newcomer.ops:target"
        """
    )
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 checks, 0 failed*"])
    assert Path(pytester.path / "reports" / "gradcheck.html").is_file()


def test_fixtures_are_documented_in_pytest_fixtures(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--fixtures")
    result.stdout.fnmatch_lines(
        [
            "gradcheck -- *",
            "*Gradient-check assertions bound to the run's*",
            "training_watch -- *",
            "grad_device -- *",
            "grad_rng -- *",
        ]
    )


def test_device_benchmark_times_each_device_in_one_group(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an outer xdist run leaves its worker variables to the inner one, and pytest-benchmark
    # switches itself off where it thinks xdist is active
    for name in [n for n in os.environ if n.startswith("PYTEST_XDIST")]:
        monkeypatch.delenv(name)
    pytester.makepyfile(
        """
        import torch

        def test_step(device_benchmark):
            model = torch.nn.Linear(8, 2)
            device_benchmark(model, lambda: torch.randn(4, 8), phase="forward_backward")
        """
    )
    out_json = pytester.path / "bench.json"
    # pytest-benchmark's plugin on (PLUGIN disables it for the other inner runs)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--gradcheck-device=all",
        "--benchmark-min-rounds=2",
        "--benchmark-max-time=0.05",
        f"--benchmark-json={out_json}",
        "-rs",
    )
    import torch

    if torch.cuda.is_available():
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(["*CUDA device not available*"])
    benchmarks = json.loads(out_json.read_text())["benchmarks"]
    assert {b["group"] for b in benchmarks} == {"Linear forward_backward"}
    assert {b["extra_info"]["device"] for b in benchmarks} >= {"cpu"}


def test_device_benchmark_without_pytest_benchmark_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import torch

        def test_step(device_benchmark):
            device_benchmark(torch.nn.Linear(2, 1), lambda: torch.randn(3, 2))
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*device_benchmark needs pytest-benchmark's `benchmark` fixture*"])
    result.stdout.no_fnmatch_line("*During handling*")


# ---------------------------------------------------------------- expected failures

EXPECTED_FAILURES = """
import pytest, torch
import gradcheck_kit as gk


class Triple(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return 3 * grad


def x():
    return torch.randn(3, dtype=torch.float64, requires_grad=True)


def test_caught():
    with pytest.raises(gk.GradientMismatchError):
        gk.assert_gradients_close(Triple.apply, x())


def test_caught_through_the_fixture(gradcheck):
    with pytest.raises(AssertionError):
        gradcheck(Triple.apply, x())


def test_read():
    assert not gk.check_gradients(Triple.apply, x()).passed


def test_never_read():
    gk.check_gradients(Triple.apply, x())


@pytest.mark.xfail(raises=gk.GradientMismatchError, strict=True)
def test_known_bug():
    gk.assert_gradients_close(Triple.apply, x())
"""


def test_real_checks_expected_by_their_tests_are_not_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(EXPECTED_FAILURES)
    result = run(pytester, "--gradcheck", "-p", "no:randomly")
    result.assert_outcomes(passed=4, xfailed=1, warnings=1)
    result.stdout.fnmatch_lines(["5 checks, 0 failed, 4 failed as expected, 1 unasserted (*"])
    result.stdout.no_fnmatch_line("FAILED *")
    verdicts = {
        str(r["test_id"]).split("::")[1]: (r["passed"], r["test"]) for r in results_of(pytester)
    }
    # the check's own reads of its result, before it returned, do not count as the test's
    assert verdicts["test_never_read"][1]["looked_at"] is False
    assert {name: test["outcome"] for name, (_, test) in verdicts.items()} == {
        "test_caught": "passed",
        "test_caught_through_the_fixture": "passed",
        "test_read": "passed",
        "test_never_read": "passed",
        "test_known_bug": "xfailed",
    }
    assert all(passed is False for passed, _ in verdicts.values())
    json_file = pytester.path / "reports" / "gradcheck.json"
    check = subprocess.run(
        [sys.executable, "-m", "gradcheck_kit", "check-json", str(json_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "UNASSERTED Triple.apply (" in check.stdout
    assert "::test_never_read)" in check.stdout
