"""CPU vs CUDA benchmarks and gradient parity (gradcheck_kit._src.devices).

Everything here runs on a CPU-only machine; the CUDA cases skip with the reason.
No timing assertions: only that timings exist, are positive and are reported.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support.fingerprint import fingerprint
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit._src import recording
from gradcheck_kit._src.devices import benchmark as bm
from gradcheck_kit._src.devices import common as dc
from gradcheck_kit._src.devices import parity as dp
from gradcheck_kit._src.engine.precision import Tf32Settings
from gradcheck_kit._src.state.rng import capture_rng_state

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="CUDA device not available (torch.cuda.is_available() is False)"
)
CPU2 = (torch.device("cpu"), torch.device("cpu"))
FAST: dict[str, Any] = {"min_run_time": 0.005, "warmup": 1}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))


def _inputs() -> torch.Tensor:
    return torch.randn(4, 6)


def _parity(fn: Any, make_inputs: Any, **kwargs: Any) -> gk.results.DeviceParityResult:
    """Two CPU runs compared through the internal entry point (no second device here)."""
    tolerances = (kwargs.pop("atol", None), kwargs.pop("rtol", None))
    options: dict[str, Any] = {"loss_fn": None, "seed": 0, "name": None, "repeat": False}
    options.update(kwargs)
    return dp._parity(fn, make_inputs, CPU2, tolerances=tolerances, **options)


class _SecondCallDiffers:
    """A function that computes differently from its second call on (a device-dependent bug)."""

    def __init__(self, second: Any) -> None:
        self.calls = 0
        self.second = second

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (x @ x.T).sin() if self.calls == 1 else self.second(x)


# ------------------------------------------------------------------ benchmark


def test_cpu_only_benchmark_has_a_cpu_row_and_a_skipped_cuda_row() -> None:
    bench = gk.benchmark_devices(_net(), _inputs, **FAST)
    cpu = bench.timing("cpu")
    assert cpu.skipped is None and cpu.name
    for phase in ("forward", "forward_backward"):
        timing = cpu.timing(phase)
        assert timing is not None and timing.median_s > 0 and timing.runs >= 1
    if not CUDA:
        cuda = bench.timing("cuda")
        assert cuda.skipped is not None and cuda.skipped.startswith("CUDA device not available")
        assert bench.skipped == {"cuda": cuda.skipped}
        assert bench.speedup() == {}


def test_backward_false_times_forward_only_and_optimizer_adds_train_step() -> None:
    bench = gk.benchmark_devices(_net(), _inputs, devices=("cpu",), backward=False, **FAST)
    assert bench.phases == ("forward",)
    bench = gk.benchmark_devices(
        _net(),
        _inputs,
        devices=["cpu"],
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        **FAST,
    )
    assert bench.phases == ("forward", "forward_backward", "train_step")
    assert bench.main_phase == "train_step"


def test_size_sweep_shape_and_summary() -> None:
    bench = gk.benchmark_devices(
        _net(), lambda n: torch.randn(n, 6), sizes=[2, 8, 32], size_name="batch", **FAST
    )
    assert bench.sizes == (2, 8, 32)
    assert [(r.device, r.size) for r in bench.timings] == [
        (d, s) for s in (2, 8, 32) for d in ("cpu", "cuda")
    ]
    text = bench.summary()
    assert text.startswith("Device benchmark: Sequential (cpu, cuda)")
    assert "batch" in text and "forward_backward median (IQR)" in text
    if not CUDA:
        assert text.count("skipped: CUDA device not available") == 3
        assert bench.crossover is None


def test_to_dict_is_strict_json_in_the_report_shape() -> None:
    bench = gk.benchmark_devices(_net(), lambda n: torch.randn(n, 6), sizes=[2, 4], **FAST)
    record = json.loads(json.dumps(bench.to_dict(), allow_nan=False))
    assert record["kind"] == "device_benchmark"
    assert [d["device"] for d in record["devices"]] == ["cpu", "cuda"]
    assert record["devices"][0]["forward"]["median_s"] > 0
    assert [p["size"] for p in record["sweep"]] == [2, 4]
    assert "crossover" in record
    labelled = bench.with_test_id("tests/x.py::t")
    assert labelled.to_dict()["test_id"] == "tests/x.py::t" and bench.test_id is None


def test_records_validate_against_the_report_schema_and_render() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from importlib import resources

    from gradcheck_kit.report.document import make_document
    from gradcheck_kit.report.html import render_html

    bench = gk.benchmark_devices(_net(), lambda n: torch.randn(n, 6), sizes=[2, 4], **FAST)
    failed = _parity(_SecondCallDiffers(lambda x: (x @ x.T).sin() * 1.01), _grad_inputs)
    skipped = gk.check_device_parity(_net(), _inputs)
    records = [r.with_test_id(f"t::{i}").to_dict() for i, r in enumerate((bench, failed, skipped))]
    document = json.loads(json.dumps(make_document(records), allow_nan=False))
    package = resources.files("gradcheck_kit")
    schemas = [
        json.loads(package.joinpath(path).read_text())
        for path in ("report/document_schema.json", "_src/schema.json")
    ]
    registry = referencing.Registry().with_resources(
        (schema["$id"], referencing.Resource.from_contents(schema)) for schema in schemas
    )
    validator = jsonschema.Draft202012Validator(schemas[0], registry=registry)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, errors
    html = render_html(document)
    assert "device benchmark" in html and "device parity" in html


def test_crossover_is_the_first_size_from_which_the_last_device_stays_faster() -> None:
    speed = {1: {"f": 0.5}, 2: {"f": 1.5}, 3: {"f": 0.9}, 4: {"f": 2.0}, 5: {"f": 3.0}}
    assert bm._crossover((1, 2, 3, 4, 5), speed, "f") == 4
    assert bm._crossover((5, 4, 1), speed, "f") == 4
    assert bm._crossover((1, 3), speed, "f") is None
    assert bm._crossover((2, 4), speed, "f") == 2


def test_benchmark_leaves_module_inputs_and_rng_untouched() -> None:
    net = _net()
    net.train()
    before = fingerprint(net)
    rng = capture_rng_state()
    py_state = random.getstate()
    bench = gk.benchmark_devices(
        net, lambda: torch.randn(3, 6), optimizer=lambda p: torch.optim.SGD(p, lr=1.0), **FAST
    )
    assert bench.timing("cpu").skipped is None
    assert fingerprint(net) == before
    assert capture_rng_state() == rng and random.getstate() == py_state
    assert all(p.device.type == "cpu" and p.grad is None for p in net.parameters())


def test_results_are_published() -> None:
    seen: list[Any] = []
    unsubscribe = recording.subscribe(seen.append)
    try:
        gk.benchmark_devices(_net(), _inputs, devices=("cpu",), **FAST)
        gk.check_device_parity(_net(), _inputs)
    finally:
        unsubscribe()
    assert [r.kind for r in seen] == ["device_benchmark", "device_parity"]


def test_benchmark_callable_groups_by_callable_and_phase() -> None:
    class FakeBenchmark:
        group: str | None = None

        def __init__(self) -> None:
            self.extra_info: dict[str, Any] = {}
            self.calls = 0

        def __call__(self, step: Any) -> str:
            step()
            self.calls += 1
            return "done"

    fake = FakeBenchmark()
    assert bm.benchmark_callable(fake, "cpu", _net(), _inputs, phase="forward") == "done"
    assert fake.group == "Sequential forward" and fake.extra_info["device"] == "cpu"
    if not CUDA:
        with pytest.raises(gk.errors.DeviceUnavailableError, match="CUDA device not available"):
            bm.benchmark_callable(FakeBenchmark(), "cuda", _net(), _inputs)
    with pytest.raises(gk.InvalidArgument, match="train_step"):
        bm.benchmark_callable(FakeBenchmark(), "cpu", _net(), _inputs, phase="train_step")


# ------------------------------------------------------------------ rounds and replay


class _SharedLog(list[Any]):
    """A list that ``copy.deepcopy`` shares: the device copy writes into the test's log."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedLog:
        return self


class _Recorder(nn.Module):
    """Records, at every call, its random draws and its weight; its depth is random."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Linear(6, 5)
        self.middle = nn.Linear(5, 5)
        self.last = nn.Linear(5, 2)
        self.calls = _SharedLog()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = random.randint(0, 3)
        draws = (depth, random.random(), float(np.random.rand()), float(torch.rand(())))
        self.calls.append((*draws, float(self.first.weight.detach().sum())))
        h = self.first(x).relu()
        for _ in range(depth):
            h = self.middle(h).relu()
        return self.last(h)


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.5, momentum=0.9)


def _rounds_of(calls: list[Any], phases: int, warmup: int, rounds: int, iterations: int) -> Any:
    """Split each phase's calls into its first call and its rounds (warm-up included)."""
    per_phase = 1 + (warmup + rounds) * iterations
    assert len(calls) == phases * per_phase  # no calibration: iterations were given
    for k in range(phases):
        calls_k = calls[k * per_phase : (k + 1) * per_phase]
        yield (
            calls_k[0],
            [
                calls_k[1 + r * iterations : 1 + (r + 1) * iterations]
                for r in range(warmup + rounds)
            ],
        )


def test_rounds_iterations_and_warmup_are_honoured_and_recorded() -> None:
    net = _Recorder()
    bench = gk.benchmark_devices(
        net, _inputs, devices=("cpu",), rounds=4, iterations=3, warmup=2, seed=5
    )
    for phase in ("forward", "forward_backward"):
        timing = bench.timing("cpu").timing(phase)
        assert timing is not None
        assert (timing.runs, timing.rounds, timing.iterations, timing.warmup_rounds) == (4, 4, 3, 2)
        assert timing.min_s is not None and timing.max_s is not None
        assert timing.min_s <= timing.median_s <= timing.max_s
        assert timing.mean_s is not None and timing.stddev_s is not None
    list(_rounds_of(net.calls, phases=2, warmup=2, rounds=4, iterations=3))
    assert (bench.seed, bench.replay) == (5, True)


def test_every_round_replays_the_same_draws_on_the_same_weights() -> None:
    net = _Recorder()
    gk.benchmark_devices(
        net, _inputs, devices=("cpu",), optimizer=_sgd, rounds=3, iterations=4, warmup=1
    )
    for first, rounds in _rounds_of(net.calls, phases=3, warmup=1, rounds=3, iterations=4):
        assert all(r == rounds[0] for r in rounds)  # same depths, draws and weights
        assert first == rounds[0][0]  # the untimed first call starts like a round
        assert len({c[:4] for c in rounds[0]}) == 4  # the draws do vary within a round
    # train_step: the weights move within a round, and every round starts from the same ones
    train_rounds = list(_rounds_of(net.calls, 3, 1, 3, 4))[2][1]
    assert len({c[4] for c in train_rounds[0]}) == 4
    assert {r[0][4] for r in train_rounds} == {net.calls[0][4]}


def test_without_replay_rounds_draw_on_and_training_goes_on() -> None:
    net = _Recorder()
    bench = gk.benchmark_devices(
        net,
        _inputs,
        devices=("cpu",),
        optimizer=_sgd,
        rounds=3,
        iterations=4,
        warmup=1,
        replay=False,
    )
    assert bench.replay is False and bench.to_dict()["replay"] is False
    _, rounds = list(_rounds_of(net.calls, 3, 1, 3, 4))[2]
    assert rounds[0] != rounds[1]
    assert len({r[0][4] for r in rounds}) == len(rounds)  # each round starts further on


def test_every_device_of_a_size_gets_the_same_calls_per_round() -> None:
    # Under replay a round's work is the first `iterations` draws from the seed:
    # devices calibrated to different counts would be timed on different work.
    fast, slow = torch.device("cpu"), torch.device("cpu", 0)
    steps = {fast: lambda: None, slow: lambda: time.sleep(0.002)}
    starts = {fast: bm._no_replay, slow: bm._no_replay}
    how = bm._Rounds(rounds=3, iterations=None, warmup=0, min_run_time=0.1)
    timings = bm._time_phase(steps, starts, how, seed=0)
    counts = {dev: t.iterations for dev, t in timings.items()}
    assert counts[fast] == counts[slow] and counts[fast] is not None
    assert counts[fast] <= 5  # the slow step's count (5 ms rounds), not the no-op's thousands
    assert all(t.runs == 3 for t in timings.values())


def test_rounds_are_synchronised_at_both_ends_not_every_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    synced: list[torch.device] = []
    monkeypatch.setattr(bm, "synchronize_device", synced.append)
    gk.benchmark_devices(_net(), _inputs, devices=("cpu",), rounds=3, iterations=5, warmup=1)
    assert len(synced) == 2 * 2 * (1 + 3)  # 2 phases x 2 ends x (warm-up + timed rounds)


def test_timing_restores_every_rng_also_when_the_step_raises() -> None:
    class BreaksLater(_Recorder):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if len(self.calls) == 6:
                raise ZeroDivisionError("raised in round 2")
            return super().forward(x)

    drawing, breaking = _Recorder(), BreaksLater()
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    before = capture_rng_state()
    params = fingerprint(breaking)
    gk.benchmark_devices(drawing, _inputs, devices=("cpu",), rounds=2, iterations=2, warmup=0)
    assert drawing.calls and capture_rng_state() == before
    with pytest.raises(ZeroDivisionError, match="round 2"):
        gk.benchmark_devices(
            breaking, _inputs, devices=("cpu",), optimizer=_sgd, rounds=9, iterations=2, warmup=0
        )
    assert capture_rng_state() == before
    assert fingerprint(breaking) == params


def test_phase_json_has_the_round_statistics_and_the_record_the_seed() -> None:
    bench = gk.benchmark_devices(
        _net(), lambda n: torch.randn(n, 6), sizes=[2, 4], rounds=6, iterations=2, seed=3, **FAST
    )
    record = json.loads(json.dumps(bench.to_dict(), allow_nan=False))
    assert record["seed"] == 3 and record["replay"] is True
    for entry in [record["devices"][0], *(p["devices"][0] for p in record["sweep"])]:
        for phase in ("forward", "forward_backward"):
            stats = entry[phase]
            assert set(stats) == {
                "median_s",
                "iqr_s",
                "runs",
                "iterations",
                "min_s",
                "mean_s",
                "stddev_s",
                "max_s",
                "warmup_rounds",
            }
            assert (stats["runs"], stats["iterations"], stats["warmup_rounds"]) == (6, 2, 1)
            assert stats["min_s"] <= stats["median_s"] <= stats["max_s"]


def _devices_sweep() -> Any:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "devices_sweep.py"
    spec = importlib.util.spec_from_file_location("devices_sweep_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sweeps_independent_check_replays_the_librarys_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sweep = _devices_sweep()
    log: list[tuple[int, float, float]] = []
    original = sweep.DynamicNet.forward

    def recording(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        state = random.getstate()
        depth = random.randint(0, 3)  # what DynamicNet.forward is about to draw
        random.setstate(state)
        log.append((depth, float(self.input_linear.weight.detach().sum()), float(x.sum())))
        return original(self, x)

    monkeypatch.setattr(sweep.DynamicNet, "forward", recording)
    torch.manual_seed(0)
    module = sweep.StepLoss()
    gk.benchmark_devices(
        module,
        lambda: sweep.make_inputs(8),
        devices=("cpu",),
        backward=False,
        optimizer=sweep.sgd,
        rounds=3,
        iterations=4,
        warmup=1,
        seed=7,
    )
    library = log[-3 * 4 :]  # train_step's timed rounds
    log.clear()
    seconds = sweep.independent_rounds(module, 8, "cpu", seed=7, rounds=3, iterations=4, warmup=1)
    assert len(seconds) == 3 and len(log) == (1 + 1 + 3) * 4
    independent = log[-3 * 4 :]
    assert [c[0] for c in independent] == [c[0] for c in library]  # the same depths
    assert len({c[0] for c in library[:4]}) > 1  # which do vary within a round
    for ours, theirs in zip(independent, library, strict=True):
        assert ours[1:] == pytest.approx(theirs[1:], rel=1e-5)  # same weights, same inputs


def test_a_scalar_output_is_its_own_loss() -> None:
    loss = torch.tensor(2.0, requires_grad=True) * 3
    assert dc.default_loss(loss) is loss  # no extra sum in a timed step
    assert dc.default_loss(torch.ones(2, requires_grad=True)).ndim == 0


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"devices": ("cpu", "gpu")}, "'gpu', which is not a torch device"),
        ({"devices": "cpu"}, r"did you mean devices=\('cpu',\)"),
        ({"devices": ("cpu", 3)}, "must be a str or torch.device"),
        ({"devices": ("cpu", "meta")}, "meta device holds no data"),
        ({"devices": ("cpu", "cpu")}, "names a device twice"),
        ({"sizes": [1, 2.5]}, r"sizes\[1\]=2.5 must be an int"),
        ({"sizes": [True]}, r"sizes\[0\]=True must be an int"),
        ({"sizes": "64"}, "must be a sequence of ints"),
        ({"sizes": [0]}, r"sizes\[0\]=0 must be >= 1"),
        ({"sizes": []}, "empty"),
        ({"min_run_time": 0}, "min_run_time=0 must be > 0"),
        ({"warmup": -1}, "warmup=-1 must be >= 0"),
        ({"rounds": 0}, "rounds=0 must be >= 1"),
        ({"iterations": 1.5}, "iterations=1.5 must be an int"),
    ],
)
def test_benchmark_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(gk.InvalidArgument, match=match):
        gk.benchmark_devices(_net(), _inputs, **kwargs)


def test_make_inputs_not_callable() -> None:
    with pytest.raises(gk.InvalidArgument, match=r"make_inputs=.* must be a callable"):
        gk.benchmark_devices(_net(), torch.randn(2, 6))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wrap fixed inputs"):
        gk.check_device_parity(_net(), torch.randn(2, 6))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"devices": ("cpu",)}, "at least 2 devices"),
        ({"devices": ("cpu", "cpu")}, "names a device twice"),
        ({"devices": ("cpu", "cuda:x")}, "not a torch device"),
        ({"atol": -1.0}, "atol=-1.0 must be >= 0"),
        ({"rtol": "big"}, "rtol='big' must be a number"),
    ],
)
def test_parity_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(gk.InvalidArgument, match=match):
        gk.check_device_parity(_net(), _inputs, **kwargs)


# ------------------------------------------------------------------ parity


def _grad_inputs() -> torch.Tensor:
    return torch.randn(5, 7, requires_grad=True)


def test_parity_of_a_pure_function_passes_with_every_leaf() -> None:
    result = _parity(_net(), lambda: torch.randn(5, 6, requires_grad=True))
    assert result.status == "passed" and result.passed
    leaves = {leaf.leaf for leaf in result.leaves}
    assert "output" in leaves and "grad params/0.weight" in leaves


def test_parity_catches_a_device_dependent_function() -> None:
    result = _parity(_SecondCallDiffers(lambda x: (x @ x.T).sin() * 1.001), _grad_inputs)
    assert result.status == "failed" and not result
    text = result.summary()
    assert "differ between devices" in text
    assert "Greatest absolute difference" in text and "at index (" in text
    assert "'output'" in text or "'grad input[0]'" in text


def test_parity_catches_a_float16_computation_against_float32() -> None:
    fn = _SecondCallDiffers(lambda x: (x.half() @ x.half().T).float().sin())
    result = _parity(fn, lambda: torch.randn(30, 40, requires_grad=True))
    assert result.status == "failed"
    assert any(leaf.leaf == "output" and leaf.mismatched > 0 for leaf in result.failures)


def test_parity_float64_reference_against_float32_run_is_caught() -> None:
    calls = [0]

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        y = x if calls[0] == 1 else x.float().double()  # the second "device" rounds to float32
        return (y @ y.T).exp()

    result = _parity(fn, lambda: torch.randn(8, 8, dtype=torch.float64, requires_grad=True))
    assert result.dtype == "float64" and result.status == "failed"


def test_parity_tolerances_grow_with_size_and_shrink_with_precision() -> None:
    small = dp.parity_tolerances(torch.float32, 10)
    large = dp.parity_tolerances(torch.float32, 10**6)
    assert large[1] > small[1]
    assert dp.parity_tolerances(torch.float64, 10**6)[1] < large[1]
    assert dp.parity_tolerances(torch.float16, 10)[1] >= 1e-3


def test_explicit_tolerances_decide() -> None:
    fn = _SecondCallDiffers(lambda x: (x @ x.T).sin() + 1e-4)
    assert _parity(fn, _grad_inputs).status == "failed"
    fn = _SecondCallDiffers(lambda x: (x @ x.T).sin() + 1e-4)
    assert _parity(fn, _grad_inputs, atol=1e-3).status == "passed"


def test_tf32_hint_is_given_for_float32_cuda_failures() -> None:
    saved = Tf32Settings.capture()
    torch.set_float32_matmul_precision("high")
    try:
        leaf = dp.ParityLeaf("output", "cuda", 1e-3, 1e-3, 1e-6, 1e-6, (0,), 1.0, 1.001, 1, 4)
        hints = dp._hints(
            (torch.device("cpu"), torch.device("cuda")), torch.float32, [leaf], {"cuda": True}
        )
    finally:
        saved.restore()
    text = " ".join(hints)
    assert "nondeterministic" in text and "use_deterministic_algorithms" in text
    if not CUDA:
        assert "TF32 is on for cuBLAS matmuls, cuDNN convolutions" in text
        assert "fp32_precision" in text and "allow_tf32" in text


def test_parity_without_a_second_device_is_skipped_not_failed() -> None:
    if CUDA:
        pytest.skip("a CUDA device is present: parity runs for real (see the CUDA tests)")
    result = gk.check_device_parity(_net(), _inputs)
    assert result.status == "skipped" and result.passed
    assert (
        result.skipped_reason is not None and "CUDA device not available" in result.skipped_reason
    )
    assert gk.assert_device_parity(_net(), _inputs).status == "skipped"
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert record["passed"] is None and record["kind"] == "device_parity"


def test_assert_device_parity_raises_with_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    failing = _parity(_SecondCallDiffers(lambda x: (x @ x.T).cos()), _grad_inputs)
    monkeypatch.setattr(dp, "_parity", lambda *a, **k: failing)
    with pytest.raises(gk.errors.DeviceParityError, match="differ between devices") as info:
        gk.assert_device_parity(_net(), _inputs)
    assert info.value.result is failing
    with pytest.raises(gk.errors.DeviceParityError, match=r"^custom$"):
        gk.assert_device_parity(_net(), _inputs, msg="custom")
    with pytest.raises(gk.errors.DeviceParityError, match=r"^pre: "):
        gk.assert_device_parity(_net(), _inputs, msg=lambda m: "pre: " + m)


def test_equal_infinities_and_nans_agree_and_a_new_nan_does_not() -> None:
    ref = torch.tensor([1.0, math.inf, -math.inf, math.nan], dtype=torch.float64)
    assert dp._compare("output", ref, ref.clone(), "cpu", 1e-6, 1e-6).passed
    other = ref.clone()
    other[0] = math.nan
    leaf = dp._compare("output", ref, other, "cpu", 1e-6, 1e-6)
    assert leaf.mismatched == 1 and leaf.index == (0,)
    json.dumps(leaf.to_dict(), allow_nan=False)


def test_a_raising_function_propagates_and_leaves_rng_untouched() -> None:
    rng = capture_rng_state()

    def broken(x: torch.Tensor) -> torch.Tensor:
        torch.rand(3)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _parity(broken, _grad_inputs)
    with pytest.raises(RuntimeError, match="boom"):
        gk.benchmark_devices(broken, _grad_inputs, devices=("cpu",), **FAST)
    assert capture_rng_state() == rng


def test_parity_leaves_module_and_rng_untouched() -> None:
    net = nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5))
    before = fingerprint(net)
    rng = capture_rng_state()
    result = _parity(net, lambda: torch.randn(3, 6, requires_grad=True))
    assert result.status == "passed"  # dropout sees the same seed on every run
    assert fingerprint(net) == before and capture_rng_state() == rng


# ------------------------------------------------------------------ CUDA


@needs_cuda
def test_cuda_benchmark_times_both_devices() -> None:
    bench = gk.benchmark_devices(_net(), _inputs, **FAST)
    assert bench.skipped == {}
    assert set(bench.speedup()) == {"forward", "forward_backward"}


@needs_cuda
def test_cuda_parity_float64_passes_and_user_module_stays_on_cpu() -> None:
    net = _net().double()
    result = gk.assert_device_parity(net, lambda: torch.randn(4, 6, dtype=torch.float64))
    assert result.status == "passed"
    assert all(p.device.type == "cpu" for p in net.parameters())
