"""CPU vs CUDA: device benchmarks and gradient parity across devices.

* :func:`benchmark_devices` times forward and forward+backward of a module or
  function on each device (optionally over a size sweep) in rounds
  (:mod:`.timing`: calibrated iterations, warm-up rounds, median, IQR, mean,
  stddev) and reports speedups and the crossover size where the second device
  starts to win. Each round replays the same work: the device's copy is put back
  where it started and every RNG is seeded before the round.
* :func:`check_device_parity` / :func:`assert_device_parity` run the same
  inputs through the same parameters on each device and compare outputs and
  gradients within tolerances derived from the dtype and the problem size.
* :func:`benchmark_callable` is the building block of the pytest plugin's
  ``device_benchmark`` fixture: it hands one device's step to pytest-benchmark's
  ``benchmark`` fixture, grouped so that cpu and cuda sit side by side.

Devices that are not present are reported as skipped, with the reason, never as
failures. The user's module is copied (``copy.deepcopy`` then ``.to(device)``);
it is never moved, and its tensors and every RNG state are left as they were.
Every timed round ends in ``torch.cuda.synchronize()`` on CUDA (every timed call,
under pytest-benchmark, whose clock knows nothing of devices).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import nn

from . import recording
from .engine.precision import Tf32Settings
from .errors import DeviceParityError, DeviceUnavailableError, InvalidArgument, InvalidArgumentType
from .raising import fail_unless_passed
from .serial import one_at_a_time
from .state.rng import replaying_rng, seed_everything
from .state.snapshot import preserved
from .timing import ROUNDS_PER_RUN, RoundTimes, calibrate, check_round_options, time_rounds
from .undo import undoing_writes, watching_user_code
from .validation import check_int, check_type

__all__ = [
    "DeviceBenchmark",
    "DeviceParityResult",
    "DeviceTiming",
    "ParityLeaf",
    "PhaseTiming",
    "assert_device_parity",
    "benchmark_callable",
    "benchmark_devices",
    "check_device_parity",
    "device_skip_reason",
    "parity_tolerances",
]

Phase = str
_PHASES: Final = ("forward", "forward_backward", "train_step")
# dtype -> (atol, rtol) floor of the parity comparison, as torch.testing.assert_close's table.
_PARITY_FLOOR: Final[dict[torch.dtype, tuple[float, float]]] = {
    torch.float64: (1e-12, 1e-7),
    torch.float32: (1e-6, 1.3e-6),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1e-2, 1.6e-2),
}
# Relative error allowed per sqrt(term) of a reduction: roundoff of a sum of n
# terms grows like sqrt(n) * eps for random signs; 8 covers the tails.
_ROUNDOFF_SAFETY: Final = 8.0
# What TF32 costs: a 10-bit mantissa in matmuls and convolutions.
_TF32_EPS: Final = 2.0**-10


# ------------------------------------------------------------------ devices


def _parse_device(device: object, name: str = "devices") -> torch.device:
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str):
        try:
            parsed = torch.device(device)
        except RuntimeError as exc:
            raise InvalidArgument(
                f"{name} contains {device!r}, which is not a torch device "
                f"(expected 'cpu', 'cuda', 'cuda:1', 'mps', ...): {exc}"
            ) from None
    else:
        raise InvalidArgumentType(
            f"{name} contains {device!r}: a device must be a str or torch.device, "
            f"not {type(device).__name__}."
        )
    if parsed.type == "meta":
        raise InvalidArgument(
            f"{name} contains {device!r}: the meta device holds no data, so it can be "
            "neither timed nor compared."
        )
    return parsed


def _parse_devices(devices: object, *, min_count: int = 1) -> tuple[torch.device, ...]:
    if isinstance(devices, (str, torch.device)):
        raise InvalidArgumentType(
            f"devices={devices!r} must be a sequence of devices; "
            f"did you mean devices=({str(devices)!r},)?"
        )
    if not isinstance(devices, Sequence):
        raise InvalidArgumentType(
            f"devices={devices!r} must be a sequence of devices, not {type(devices).__name__}."
        )
    parsed = tuple(_parse_device(d) for d in devices)
    if len(parsed) < min_count:
        raise InvalidArgument(f"devices={devices!r} must name at least {min_count} devices.")
    return parsed


def device_skip_reason(device: str | torch.device) -> str | None:
    """Why ``device`` cannot be used in this process, or ``None`` when it can.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device`` ...

    Raises:
        InvalidArgument: ``device`` is not a device string torch understands.

    Examples:
        >>> device_skip_reason("cpu") is None
        True
        >>> reason = device_skip_reason("cuda")
        >>> reason is None or reason.startswith("CUDA device not available")
        True
    """
    dev = _parse_device(device, "device")
    if dev.type == "cpu":
        return None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = (
                "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            )
            return (
                f"CUDA device not available: torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, {built})"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            return f"CUDA device not available: {str(dev)!r} requested, {count} visible"
        return None
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            return "MPS device not available: torch.backends.mps.is_available() is False"
        return None
    backend = getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and bool(is_available()):
        return None
    return f"{dev.type.upper()} device not available in this torch build"


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return str(torch.cuda.get_device_name(dev))
    if dev.type == "cpu":
        cpu = platform.processor() or platform.machine() or "cpu"
        return f"{cpu}, {torch.get_num_threads()} threads"
    return str(dev)


def _synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


# ------------------------------------------------------------------ inputs and steps


def _to_device(obj: Any, dev: torch.device) -> Any:
    """Copy the tensors nested in ``obj`` to ``dev`` as fresh leaves (requires_grad kept)."""
    if isinstance(obj, torch.Tensor):
        moved = obj.detach().to(dev, copy=True)
        return moved.requires_grad_(obj.requires_grad) if moved.is_floating_point() else moved
    if isinstance(obj, tuple):
        return tuple(_to_device(o, dev) for o in obj)
    if isinstance(obj, list):
        return [_to_device(o, dev) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_device(v, dev) for k, v in obj.items()}
    return obj


def _as_args(inputs: Any) -> tuple[Any, ...]:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, (tuple, list)):
        for i, o in enumerate(obj):
            yield from _tensors(o, f"{prefix}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}[{k!r}]")


def _default_loss(output: Any) -> torch.Tensor:
    # a scalar is its own sum: no extra op in a timed step (a loss already reduced)
    terms = [
        t if t.ndim == 0 else t.sum() for _, t in _tensors(output, "output") if t.requires_grad
    ]
    if not terms:
        raise InvalidArgument(
            "the output has no tensor that requires grad, so there is nothing to "
            "differentiate; pass backward=False or inputs/parameters that require grad."
        )
    return terms[0] if len(terms) == 1 else torch.stack([t.float() for t in terms]).sum()


def _short(value: object) -> str:
    """A one-line repr: tensors by shape and dtype, long reprs cut."""
    if isinstance(value, torch.Tensor):
        return f"<tensor of shape {tuple(value.shape)}, {value.dtype}>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_common(fn_or_module: object, make_inputs: object, loss_fn: object) -> None:
    if not callable(fn_or_module):
        raise InvalidArgumentType(
            f"fn_or_module={_short(fn_or_module)} must be an nn.Module or a callable, "
            f"not {type(fn_or_module).__name__}."
        )
    if not callable(make_inputs):
        raise InvalidArgumentType(
            f"make_inputs={_short(make_inputs)} must be a callable returning the inputs "
            f"(a tensor or a tuple of them), not {type(make_inputs).__name__}; "
            "wrap fixed inputs as make_inputs=lambda: (x,)."
        )
    if loss_fn is not None and not callable(loss_fn):
        raise InvalidArgumentType(f"loss_fn={loss_fn!r} must be callable or None.")


def _check_sizes(sizes: object) -> tuple[int, ...] | None:
    if sizes is None:
        return None
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise InvalidArgumentType(
            f"sizes={sizes!r} must be a sequence of ints, e.g. sizes=[64, 256, 1024]."
        )
    if not sizes:
        raise InvalidArgument("sizes=[] is empty; pass None to time one size.")
    for i, size in enumerate(sizes):
        if isinstance(size, bool) or not isinstance(size, int):
            raise InvalidArgumentType(
                f"sizes[{i}]={size!r} must be an int, not {type(size).__name__}."
            )
        check_int(size, f"sizes[{i}]", min_value=1)
    if len(set(sizes)) != len(sizes):
        raise InvalidArgument(f"sizes={list(sizes)!r} repeats a size.")
    return tuple(sizes)


@dataclass
class _Prepared:
    """One device's copy of the callable, its inputs and its parameters."""

    device: torch.device
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    params: list[tuple[str, nn.Parameter]]
    optimizer: torch.optim.Optimizer | None
    module: nn.Module | None = None


def _prepare(
    fn_or_module: Callable[..., Any],
    inputs: Any,
    dev: torch.device,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None,
) -> _Prepared:
    if isinstance(fn_or_module, nn.Module):
        module = copy.deepcopy(fn_or_module).to(dev)
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        fn: Callable[..., Any] = module
    else:
        fn, params = fn_or_module, []
    opt = optimizer([p for _, p in params]) if optimizer is not None and params else None
    module_copy = fn if isinstance(fn, nn.Module) else None
    return _Prepared(dev, fn, _as_args(_to_device(inputs, dev)), params, opt, module_copy)


def _leaves(prep: _Prepared) -> list[torch.Tensor]:
    return [t for _, t in _tensors(prep.args, "input") if t.requires_grad] + [
        p for _, p in prep.params
    ]


def _make_step(
    prep: _Prepared,
    phase: Phase,
    loss_fn: Callable[[Any], torch.Tensor] | None,
    *,
    synchronize: bool = False,
) -> Callable[[], None]:
    """A no-argument step for ``phase``; with ``synchronize`` it ends synchronised with the device.

    Rounds synchronise at their ends (:func:`.timing.time_rounds`), so steps timed
    that way queue work as a training loop does; pytest-benchmark's clock does not
    synchronise, so its steps must.
    """
    reduce = loss_fn or _default_loss
    leaves = _leaves(prep)
    dev, fn, args, opt = prep.device, prep.fn, prep.args, prep.optimizer

    def forward() -> None:
        fn(*args)

    def forward_backward() -> None:
        for leaf in leaves:
            leaf.grad = None
        reduce(fn(*args)).backward()

    def train_step() -> None:
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        reduce(fn(*args)).backward()
        if opt is not None:
            opt.step()

    work = {"forward": forward, "forward_backward": forward_backward, "train_step": train_step}[
        phase
    ]
    if not synchronize or dev.type == "cpu":
        return work

    def synchronised() -> None:
        work()
        _synchronize(dev)

    return synchronised


class _RoundStart:
    """Before each round: the device's copy back as it was prepared, every RNG seeded.

    Parameters and buffers get their values back (in place, so the step's
    references stay valid), gradients are dropped, the optimizer gets its state
    back; then Python ``random``, NumPy and torch (CPU and CUDA) are seeded. So a
    round does the same work every time: the same random draws (DynamicNet's
    depths, dropout masks) on the same weights, however far training had gone.
    """

    def __init__(self, prep: _Prepared, seed: int) -> None:
        self._seed = seed
        self._leaves = _leaves(prep)
        tensors = (
            [*prep.module.parameters(), *prep.module.buffers()] if prep.module is not None else []
        )
        self._saved = [(t, t.detach().clone()) for t in tensors]
        self._optimizer = prep.optimizer
        self._optimizer_state = (
            copy.deepcopy(prep.optimizer.state_dict()) if prep.optimizer is not None else None
        )

    def __call__(self) -> None:
        with torch.no_grad():
            for live, saved in self._saved:
                live.copy_(saved)
        for leaf in self._leaves:
            leaf.grad = None
        if self._optimizer is not None and self._optimizer_state is not None:
            # a copy: load_state_dict adopts same-device tensors, which step() then updates
            self._optimizer.load_state_dict(copy.deepcopy(self._optimizer_state))
        seed_everything(self._seed)


# ------------------------------------------------------------------ benchmark results


@dataclass(frozen=True)
class PhaseTiming:
    """Seconds per call of one phase on one device: median and IQR over timed rounds, and more.

    ``runs`` is the number of timed rounds, each of ``iterations`` calls, after
    ``warmup_rounds`` untimed ones; ``min_s``, ``mean_s``, ``stddev_s`` and
    ``max_s`` are over the rounds' seconds per call. :func:`benchmark_devices`
    fills every field; a record written by older versions, or by
    pytest-benchmark through the ``device_benchmark`` fixture, may lack some.

    Examples:
        >>> PhaseTiming(median_s=0.002, iqr_s=0.0001, runs=20).to_dict()["median_s"]
        0.002
        >>> PhaseTiming(0.002, 0.0001, 17, iterations=4, min_s=0.0019).to_dict()["iterations"]
        4
        >>> PhaseTiming(0.002, 0.0001, 17, iterations=4).rounds
        17
    """

    median_s: float
    iqr_s: float
    runs: int
    iterations: int | None = None
    min_s: float | None = None
    mean_s: float | None = None
    stddev_s: float | None = None
    max_s: float | None = None
    warmup_rounds: int | None = None

    @property
    def rounds(self) -> int:
        """The timed rounds (``runs``, by its older name)."""
        return self.runs

    @classmethod
    def from_rounds(cls, times: RoundTimes) -> PhaseTiming:
        """The statistics of :func:`.timing.time_rounds`' rounds.

        Examples:
            >>> from gradcheck_kit._src.timing import RoundTimes
            >>> t = PhaseTiming.from_rounds(RoundTimes((2.0, 1.0, 3.0), 5, warmup_rounds=2))
            >>> t.median_s, t.runs, t.iterations, t.warmup_rounds, t.max_s
            (2.0, 3, 5, 2, 3.0)
        """
        stddev = times.stddev
        return cls(
            median_s=times.median,
            iqr_s=times.iqr,
            runs=times.rounds,
            iterations=times.iterations,
            min_s=times.min,
            mean_s=times.mean,
            stddev_s=stddev if math.isfinite(stddev) else None,
            max_s=times.max,
            warmup_rounds=times.warmup_rounds,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"median_s", "iqr_s", "runs"}``, and the rest where known.

        A NaN IQR becomes null; ``iterations``, ``min_s``, ``mean_s``, ``stddev_s``,
        ``max_s`` and ``warmup_rounds`` are left out when unknown.
        """
        iqr = self.iqr_s if math.isfinite(self.iqr_s) else None
        out: dict[str, Any] = {"median_s": self.median_s, "iqr_s": iqr, "runs": self.runs}
        for key in ("iterations", "min_s", "mean_s", "stddev_s", "max_s", "warmup_rounds"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, float) or math.isfinite(value)):
                out[key] = value
        return out


@dataclass(frozen=True)
class DeviceTiming:
    """One device at one size: its timings per phase, or why it was skipped.

    Examples:
        >>> row = DeviceTiming(device="cuda", skipped="CUDA device not available")
        >>> row.to_dict()
        {'device': 'cuda', 'skipped': 'CUDA device not available'}
    """

    device: str
    name: str | None = None
    size: int | None = None
    skipped: str | None = None
    phases: tuple[tuple[Phase, PhaseTiming], ...] = ()

    def timing(self, phase: Phase) -> PhaseTiming | None:
        """The timing of ``phase`` (``None`` when skipped or not timed).

        Examples:
            >>> DeviceTiming("cpu", phases=(("forward", PhaseTiming(1.0, 0.0, 3)),)).timing(
            ...     "forward").median_s
            1.0
        """
        return dict(self.phases).get(phase)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in the report's ``device_timings`` shape."""
        out: dict[str, Any] = {"device": self.device}
        if self.name is not None:
            out["name"] = self.name
        if self.skipped is not None:
            out["skipped"] = self.skipped
        for phase, timing in self.phases:
            out[phase] = timing.to_dict()
        return out


def _speedups(rows: Sequence[DeviceTiming]) -> dict[Phase, float]:
    """How many times faster the last timed device is than the first, per phase."""
    timed = [r for r in rows if r.skipped is None]
    if len(timed) < 2:
        return {}
    first, last = timed[0], timed[-1]
    out: dict[Phase, float] = {}
    for phase, timing in first.phases:
        other = last.timing(phase)
        if other is not None and other.median_s > 0:
            out[phase] = timing.median_s / other.median_s
    return out


@dataclass(frozen=True)
class DeviceBenchmark(recording.Observable):
    """What :func:`benchmark_devices` measured: per device (and size) timings, speedups, crossover.

    ``timings`` holds one :class:`DeviceTiming` per device and size (``size`` is
    ``None`` without a sweep). ``speedup`` compares the last timed device with
    the first (``> 1``: the last device is faster). ``crossover`` is the first
    size from which the last device stays faster on the main phase
    (``None``: it never does, or there is no sweep). ``seed`` is where every
    device's run (with ``replay``: every round) started its random generators.

    Examples:
        >>> import torch
        >>> bench = benchmark_devices(torch.nn.Linear(4, 2), lambda: torch.randn(8, 4),
        ...                           min_run_time=0.01, warmup=1)
        >>> bench.timing("cpu").timing("forward").median_s > 0
        True
        >>> bench.skipped.get("cuda") is None or "CUDA" in bench.skipped["cuda"]
        True
    """

    name: str
    devices: tuple[str, ...]
    timings: tuple[DeviceTiming, ...]
    phases: tuple[Phase, ...]
    backward: bool
    sizes: tuple[int, ...] | None = None
    size_name: str = "size"
    crossover: int | None = None
    duration_s: float = 0.0
    test_id: str | None = None
    kind: str = "device_benchmark"
    seed: int | None = None
    replay: bool | None = None

    @property
    def main_phase(self) -> Phase:
        """The phase speedups and the crossover are judged on (the last one timed)."""
        return self.phases[-1]

    @property
    def skipped(self) -> dict[str, str]:
        """Device -> reason, for the devices that could not be timed."""
        return {r.device: r.skipped for r in self.timings if r.skipped is not None}

    def timing(self, device: str, size: int | None = None) -> DeviceTiming:
        """The row of ``device`` at ``size`` (the first size of a sweep when ``None``).

        Raises:
            KeyError: no such device or size.
        """
        if size is None and self.sizes:
            size = self.sizes[0]
        for row in self.timings:
            if row.device == device and row.size == size:
                return row
        raise KeyError(f"no timing for device {device!r} at size {size!r}")

    def rows_at(self, size: int | None) -> tuple[DeviceTiming, ...]:
        """The rows of every device at ``size``, in device order."""
        return tuple(r for r in self.timings if r.size == size)

    def speedup(self, size: int | None = None) -> dict[Phase, float]:
        """Per phase, the last device's speed over the first's at ``size`` (empty if skipped)."""
        if size is None and self.sizes:
            size = self.sizes[0]
        return _speedups(self.rows_at(size))

    def __bool__(self) -> bool:
        return True

    def with_test_id(self, test_id: str | None) -> DeviceBenchmark:
        """A copy labelled with the test that made it (used by the pytest plugin)."""
        return dataclasses.replace(self, test_id=test_id)

    def summary(self) -> str:
        """A table: one line per size and device with the median (IQR) per phase and the speedup.

        Examples:
            >>> import torch
            >>> bench = benchmark_devices(torch.nn.Linear(4, 2), lambda: torch.randn(8, 4),
            ...                           min_run_time=0.01, warmup=1)
            >>> bench.summary().splitlines()[0].startswith("Device benchmark")
            True
        """
        head = f"Device benchmark: {self.name} ({', '.join(self.devices)})"
        columns = [self.size_name] if self.sizes else []
        columns += ["device", *(f"{p} median (IQR)" for p in self.phases), "speedup"]
        lines: list[list[str]] = []
        for size in self.sizes or (None,):
            rows = self.rows_at(size)
            speed = _speedups(rows).get(self.main_phase)
            for i, row in enumerate(rows):
                cells = [str(size)] if self.sizes else []
                cells.append(row.device)
                if row.skipped is not None:
                    cells += [f"skipped: {row.skipped}"] + [""] * len(self.phases)
                else:
                    for phase in self.phases:
                        t = row.timing(phase)
                        cells.append(
                            "" if t is None else f"{_fmt_s(t.median_s)} ({_fmt_s(t.iqr_s)})"
                        )
                    cells.append(f"{speed:.2f}x" if speed is not None and i > 0 else "")
                lines.append(cells)
        widths = [
            max([len(c)] + [len(r[i]) for r in lines if not _skipped_row(r)])
            for i, c in enumerate(columns)
        ]
        text = [
            head,
            "",
            "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
        ]
        for cells in lines:
            if _skipped_row(cells):
                fixed = len(columns) - len(self.phases) - 1
                text.append(
                    "  ".join(c.ljust(w) for c, w in zip(cells[:fixed], widths, strict=False))
                    + "  "
                    + cells[fixed]
                )
            else:
                text.append(
                    "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()
                )
        if self.sizes and len(self.devices) > 1 and not self.skipped:
            where = (
                f"from {self.size_name} {self.crossover}"
                if self.crossover is not None
                else "at none of the sizes measured"
            )
            text += ["", f"Crossover ({self.main_phase}): {self.devices[-1]} is faster {where}."]
        return "\n".join(text)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in the report's ``device_benchmark`` shape (``kind="device_benchmark"``).

        Examples:
            >>> import json, torch
            >>> bench = benchmark_devices(torch.nn.Linear(4, 2), lambda: torch.randn(8, 4),
            ...                           min_run_time=0.01, warmup=1)
            >>> json.loads(json.dumps(bench.to_dict(), allow_nan=False))["kind"]
            'device_benchmark'
        """
        first = self.sizes[0] if self.sizes else None
        speed = self.speedup(first)
        out: dict[str, Any] = {
            "kind": self.kind,
            "schema_version": 1,
            "name": self.name,
            "test_id": self.test_id,
            "passed": True,
            "backward": self.backward,
            "size_name": self.size_name,
            "devices": [r.to_dict() for r in self.rows_at(first)],
            "speedup": speed or None,
            "duration_s": self.duration_s,
        }
        if self.seed is not None:
            out["seed"] = self.seed
        if self.replay is not None:
            out["replay"] = self.replay
        if self.sizes:
            sweep = []
            for size in self.sizes:
                point: dict[str, Any] = {
                    "size": size,
                    "devices": [r.to_dict() for r in self.rows_at(size)],
                }
                if s := self.speedup(size):
                    point["speedup"] = s
                sweep.append(point)
            out["sweep"] = sweep
            out["crossover"] = self.crossover
        return out


def _skipped_row(cells: list[str]) -> bool:
    return any(c.startswith("skipped: ") for c in cells)


def _fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _crossover(
    sizes: tuple[int, ...], speed_by_size: dict[int, dict[Phase, float]], phase: Phase
) -> int | None:
    """The first size from which the last device stays faster (ordered by size)."""
    ordered = sorted(sizes)
    wins = [speed_by_size.get(s, {}).get(phase) for s in ordered]
    if any(w is None for w in wins):
        return None
    crossover: int | None = None
    for size, win in zip(ordered, wins, strict=True):
        if win is not None and win > 1.0:
            crossover = size if crossover is None else crossover
        else:
            crossover = None
    return crossover


# ------------------------------------------------------------------ timing


@dataclass(frozen=True)
class _Rounds:
    """How :func:`benchmark_devices` times each phase (its arguments, checked)."""

    rounds: int | None
    iterations: int | None
    warmup: int
    min_run_time: float


def _no_replay() -> None:
    return None


def _time_phase(
    steps: dict[torch.device, Callable[[], None]],
    starts: dict[torch.device, Callable[[], None]],
    how: _Rounds,
    seed: int,
) -> dict[torch.device, PhaseTiming]:
    """One phase on every present device, all with the same calls per round.

    The same count matters under replay: a round's work is the first
    ``iterations`` draws from the seed (the first depths of a random-depth net),
    so devices with different counts would be timed on different work.
    Calibrated on each device, the smallest count is used on all: the faster
    devices' rounds get shorter than calibrated (more of them fill
    ``min_run_time``), and no device's rounds grow past its own calibration.
    """
    counts: list[int] = []
    for dev, step in steps.items():
        if starts[dev] is _no_replay:
            seed_everything(seed)  # not replayed: seeded once per device and phase
        starts[dev]()
        with watching_user_code():
            step()  # lazy state (CUDA context, cuDNN autotune) before calibration; writes undone
        if how.iterations is None:
            count, _ = calibrate(
                step,
                min_round_time=how.min_run_time / ROUNDS_PER_RUN,
                synchronize=functools.partial(_synchronize, dev),
                begin_round=starts[dev],
            )
            counts.append(count)
    iterations = how.iterations if how.iterations is not None else min(counts)
    return {
        dev: PhaseTiming.from_rounds(
            time_rounds(
                step,
                synchronize=functools.partial(_synchronize, dev),
                begin_round=starts[dev],
                rounds=how.rounds,
                iterations=iterations,
                warmup=how.warmup,
                min_run_time=how.min_run_time,
            )
        )
        for dev, step in steps.items()
    }


def _name_of(fn_or_module: object, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(fn_or_module, nn.Module):
        return type(fn_or_module).__name__
    return str(getattr(fn_or_module, "__qualname__", None) or type(fn_or_module).__name__)


@one_at_a_time
def benchmark_devices(
    fn_or_module: Callable[..., Any],
    make_inputs: Callable[..., Any],
    *,
    devices: Sequence[str | torch.device] = ("cpu", "cuda"),
    backward: bool = True,
    sizes: Sequence[int] | None = None,
    size_name: str = "size",
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
    rounds: int | None = None,
    iterations: int | None = None,
    warmup: int = 2,
    min_run_time: float = 0.2,
    seed: int = 0,
    replay: bool = True,
    name: str | None = None,
) -> DeviceBenchmark:
    """Time forward and forward+backward on each device, in rounds that replay the same work.

    The same inputs (``make_inputs()`` called once per size from RNG seed
    ``seed``, then copied to each device) and the same parameters
    (``copy.deepcopy(module).to(device)``; the caller's module is never moved)
    run on every device.

    Each phase is timed like pytest-benchmark does: one untimed call (lazy
    initialisation), calibration of the calls per round (``iterations``) so
    that a round lasts at least ``min_run_time / 20`` on the slowest device (the
    smallest count is used on all devices of a size, so that they replay the
    same work), ``warmup`` untimed rounds, then the timed rounds; each round is
    timed from a synchronised
    device to a synchronised device (``torch.cuda.synchronize()``), and each
    round's seconds per call is one sample of the median, IQR, mean, stddev,
    min and max in :class:`PhaseTiming`.

    With ``replay`` (the default) every round, calibration and warm-up rounds
    included, starts from the same state: the device's copy of the parameters,
    buffers and optimizer state as prepared, no gradients, and Python
    ``random``, NumPy and torch (CPU and CUDA) seeded with ``seed``. A step that
    draws random numbers (a random depth, dropout) then does the same work in
    every round, and an optimizer step does not drift (or diverge) from round
    to round, so the spread is the machine's, not the workload's; a second
    timer that replays the same way measures the same work. Without it the
    generators are seeded once per device and phase, and state carries over
    between rounds. The caller's RNG states are put back either way.

    Devices not present are reported as skipped.

    Args:
        fn_or_module: an ``nn.Module`` or a function of the inputs.
        make_inputs: ``make_inputs()`` (or ``make_inputs(size)`` with ``sizes``)
            returning a tensor or a tuple of tensors (the positional arguments).
        devices: the devices to compare; speedups are first over last.
        backward: also time forward+backward (``loss_fn(output).backward()``;
            the default loss sums the outputs). The forward phase runs with
            autograd on, as in a training step.
        sizes: a size sweep: each size gives one ``make_inputs(size)``.
        size_name: what a size is, for tables and the report (``"batch"``).
        loss_fn: reduces the output to the scalar that backward starts from.
        optimizer: ``optimizer(params) -> Optimizer``: also time a full training
            step (``zero_grad`` with ``set_to_none``, forward, backward, ``step``)
            as phase ``train_step``.
        rounds: timed rounds per phase; ``None``: as many as fill ``min_run_time``,
            at least 5.
        iterations: calls per round; ``None``: calibrated (see above). Under
            replay a round does the work of the first ``iterations`` draws from
            the seed: for a random workload, fix it (to enough calls to average
            the draws) to time the same work at every size.
        warmup: untimed rounds before the timed ones (caches, allocator, autotuning).
        min_run_time: seconds of timed rounds per phase (when ``rounds`` is ``None``);
            a calibrated round lasts at least a twentieth of it.
        seed: where every device's run (with ``replay``, every round) starts the
            random generators; the caller's RNG states are put back.
        replay: start every round from the same state and seed (see above).
        name: a label (default: the module's class or function's name).

    Returns:
        A :class:`DeviceBenchmark`, also published to the ``--gradcheck`` report.

    Raises:
        InvalidArgument: an unknown device, ``make_inputs`` not callable, sizes not ints, ...

    Examples:
        >>> import torch
        >>> bench = benchmark_devices(
        ...     torch.nn.Linear(8, 4), lambda batch: torch.randn(batch, 8),
        ...     sizes=[4, 16], size_name="batch", min_run_time=0.01, warmup=1)
        >>> [row.size for row in bench.timings if row.device == "cpu"]
        [4, 16]
    """
    _check_common(fn_or_module, make_inputs, loss_fn)
    devs = _parse_devices(devices)
    if len(set(devs)) != len(devs):
        raise InvalidArgument(f"devices={tuple(devices)!r} names a device twice.")
    size_tuple = _check_sizes(sizes)
    check_round_options(rounds, iterations, warmup, min_run_time)
    check_int(seed, "seed", min_value=0)
    check_type(bool, replay, "replay")
    how = _Rounds(rounds, iterations, warmup, float(min_run_time))
    if optimizer is not None and not callable(optimizer):
        raise InvalidArgumentType(
            f"optimizer={optimizer!r} must be a callable params -> Optimizer."
        )
    phases: tuple[Phase, ...] = ("forward",)
    if backward:
        phases += ("forward_backward",)
    if optimizer is not None:
        phases += ("train_step",)
    reasons = {d: device_skip_reason(d) for d in devs}
    names = {d: _device_name(d) for d in devs if reasons[d] is None}

    start = time.perf_counter()
    rows: list[DeviceTiming] = []
    # timed calls run unwatched (a dispatch mode would slow them): writes the first
    # warm-up call makes are undone, and later calls write the same tensors
    with preserved(fn_or_module), undoing_writes(only_user_code=True):
        for size in size_tuple or (None,):
            with replaying_rng(seed):
                inputs = make_inputs(size) if size is not None else make_inputs()
                present = [d for d in devs if reasons[d] is None]
                preps = {d: _prepare(fn_or_module, inputs, d, optimizer) for d in present}
                starts: dict[torch.device, Callable[[], None]] = {
                    d: _RoundStart(p, seed) if replay else _no_replay for d, p in preps.items()
                }
                timed: dict[torch.device, list[tuple[Phase, PhaseTiming]]] = {
                    d: [] for d in present
                }
                for phase in phases:
                    steps = {d: _make_step(p, phase, loss_fn) for d, p in preps.items()}
                    for d, timing in _time_phase(steps, starts, how, seed).items():
                        timed[d].append((phase, timing))
                del preps, starts, steps
            for dev in devs:
                reason = reasons[dev]
                if reason is not None:
                    rows.append(DeviceTiming(str(dev), size=size, skipped=reason))
                else:
                    rows.append(DeviceTiming(str(dev), names[dev], size, None, tuple(timed[dev])))
    result = DeviceBenchmark(
        name=_name_of(fn_or_module, name),
        devices=tuple(str(d) for d in devs),
        timings=tuple(rows),
        phases=phases,
        backward=backward,
        sizes=size_tuple,
        size_name=size_name,
        duration_s=time.perf_counter() - start,
        seed=seed,
        replay=replay,
    )
    if size_tuple:
        speed_by_size = {s: result.speedup(s) for s in size_tuple}
        result = dataclasses.replace(
            result, crossover=_crossover(size_tuple, speed_by_size, result.main_phase)
        )
    recording.publish(result)
    return result


@one_at_a_time
def benchmark_callable(
    benchmark_fixture: Any,
    device: str | torch.device,
    fn_or_module: Callable[..., Any],
    make_inputs: Callable[[], Any],
    *,
    phase: Phase = "forward_backward",
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
    group: str | None = None,
    seed: int = 0,
) -> Any:
    """Time one device's step with pytest-benchmark's ``benchmark`` fixture (passed in).

    Sets ``benchmark_fixture.group`` to ``group`` (default: the name of the
    callable and the phase) so that the cpu and cuda cases of a test
    parametrised over devices share one group in pytest-benchmark's table and
    ``--benchmark-json``; ``extra_info`` gets the device, its name and the phase.

    Args:
        benchmark_fixture: pytest-benchmark's ``benchmark`` fixture object.
        device: where to run; a copy of the module and of the inputs goes there.
        fn_or_module: as for :func:`benchmark_devices`.
        make_inputs: ``make_inputs()`` returning the inputs.
        phase: ``"forward"``, ``"forward_backward"`` or ``"train_step"`` (needs ``optimizer``).
        loss_fn: as for :func:`benchmark_devices`.
        optimizer: as for :func:`benchmark_devices`.
        seed: the inputs and the timed calls start the random generators from it,
            once (the rounds are pytest-benchmark's: not replayed); the caller's RNG
            states are put back.
        group: the pytest-benchmark group.

    Returns:
        What ``benchmark_fixture(step)`` returns.

    Raises:
        DeviceUnavailableError: the device is not present (a fixture turns it into a skip).
        InvalidArgument: bad arguments.

    Examples:
        >>> class FakeBenchmark:  # stands in for pytest-benchmark's fixture
        ...     group, extra_info = None, {}
        ...     def __call__(self, step):
        ...         step()
        >>> import torch
        >>> fake = FakeBenchmark()
        >>> benchmark_callable(fake, "cpu", torch.nn.Linear(3, 1), lambda: torch.randn(2, 3))
        >>> fake.group, fake.extra_info["device"]
        ('Linear forward_backward', 'cpu')
    """
    _check_common(fn_or_module, make_inputs, loss_fn)
    dev = _parse_device(device, "device")
    if phase not in _PHASES:
        raise InvalidArgument(f"phase={phase!r} is not one of {', '.join(map(repr, _PHASES))}.")
    if phase == "train_step" and optimizer is None:
        raise InvalidArgument("phase='train_step' needs optimizer=lambda params: ...")
    reason = device_skip_reason(dev)
    if reason is not None:
        raise DeviceUnavailableError(reason)
    benchmark_fixture.group = group or f"{_name_of(fn_or_module, None)} {phase}"
    benchmark_fixture.extra_info.update(
        {"device": str(dev), "device_name": _device_name(dev), "phase": phase}
    )
    with replaying_rng(seed):
        inputs = make_inputs()
        prep = _prepare(fn_or_module, inputs, dev, optimizer)
    # pytest-benchmark reads its clock without synchronising: the step must
    step = _make_step(prep, phase, loss_fn, synchronize=True)
    # seeded once; the rounds are pytest-benchmark's, so they are not replayed
    with replaying_rng(seed):
        step()  # one untimed call: CUDA context, lazy initialisation
        start = time.perf_counter()
        returned = benchmark_fixture(step)
    timing = _benchmark_fixture_timing(benchmark_fixture)
    if timing is not None:
        recording.publish(
            DeviceBenchmark(
                name=benchmark_fixture.group,
                devices=(str(dev),),
                timings=(
                    DeviceTiming(str(dev), _device_name(dev), None, None, ((phase, timing),)),
                ),
                phases=(phase,),
                backward=phase != "forward",
                duration_s=time.perf_counter() - start,
                seed=seed,
                replay=False,
            )
        )
    return returned


def _benchmark_fixture_timing(benchmark_fixture: Any) -> PhaseTiming | None:
    """What pytest-benchmark measured (its ``stats``), or ``None`` when it timed nothing.

    Read by duck typing: pytest-benchmark keeps ``fixture.stats`` (rounds,
    ``iterations``) with the per-iteration times in ``fixture.stats.stats``; it is
    ``None`` under ``--benchmark-disable`` and absent on a stand-in.
    """
    metadata = getattr(benchmark_fixture, "stats", None)
    stats = getattr(metadata, "stats", None)
    try:
        rounds = int(stats.rounds)  # type: ignore[union-attr]
        if rounds < 1:
            return None
        return PhaseTiming(
            median_s=float(stats.median),  # type: ignore[union-attr]
            iqr_s=float(stats.iqr) if rounds > 1 else math.nan,  # type: ignore[union-attr]
            runs=rounds,
            iterations=int(getattr(metadata, "iterations", 1) or 1),
            min_s=float(stats.min),  # type: ignore[union-attr]
            mean_s=float(stats.mean),  # type: ignore[union-attr]
            stddev_s=float(stats.stddev) if rounds > 1 else None,  # type: ignore[union-attr]
        )
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return None


# ------------------------------------------------------------------ parity


@dataclass(frozen=True)
class ParityLeaf:
    """One output or gradient compared between the reference device and another.

    ``index`` is the worst element (largest excess over the allowed error).

    Examples:
        >>> leaf = ParityLeaf("output", "cuda", 2e-7, 1e-6, 1e-5, 1.3e-6, (0, 1), 1.0, 1.0, 0, 4)
        >>> leaf.passed
        True
    """

    leaf: str
    device: str
    max_abs_error: float
    max_rel_error: float
    allowed: float
    rtol: float
    index: tuple[int, ...]
    reference: float
    value: float
    mismatched: int
    numel: int

    @property
    def passed(self) -> bool:
        """No element outside the tolerance."""
        return self.mismatched == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers as strings)."""
        return {
            "leaf": self.leaf,
            "device": self.device,
            "max_abs_error": _num(self.max_abs_error),
            "max_rel_error": _num(self.max_rel_error),
            "allowed": _num(self.allowed),
            "rtol": _num(self.rtol),
            "index": list(self.index),
            "reference": _num(self.reference),
            "value": _num(self.value),
            "mismatched": self.mismatched,
            "numel": self.numel,
        }


def _num(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


@dataclass(frozen=True)
class DeviceParityResult(recording.Observable):
    """Outputs and gradients on each device compared with the first device's.

    ``status`` is ``"passed"``, ``"failed"`` or ``"skipped"`` (fewer than two
    devices present; ``skipped_reason`` says why). A skipped result is truthy:
    nothing was found wrong.

    Examples:
        >>> import torch
        >>> result = check_device_parity(torch.nn.Linear(3, 2), lambda: torch.randn(4, 3))
        >>> result.status in ("passed", "skipped"), bool(result)
        (True, True)
    """

    name: str
    devices: tuple[str, ...]
    status: str
    dtype: str
    leaves: tuple[ParityLeaf, ...] = ()
    skipped_reason: str | None = None
    hints: tuple[str, ...] = ()
    duration_s: float = 0.0
    test_id: str | None = None
    kind: str = "device_parity"

    @property
    def passed(self) -> bool:
        """True unless a leaf differs beyond its tolerance (skipped counts as passed)."""
        return self.status != "failed"

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> tuple[ParityLeaf, ...]:
        """The leaves with mismatched elements."""
        return tuple(leaf for leaf in self.leaves if not leaf.passed)

    @property
    def max_abs_error(self) -> float:
        """The largest absolute difference over every leaf (0.0 with none)."""
        return max((leaf.max_abs_error for leaf in self.leaves), default=0.0)

    def with_test_id(self, test_id: str | None) -> DeviceParityResult:
        """A copy labelled with the test that made it (used by the pytest plugin)."""
        return dataclasses.replace(self, test_id=test_id)

    def summary(self) -> str:
        """The assertion message: torch-style numbers, the leaf, and the likely cause.

        Examples:
            >>> import torch
            >>> result = check_device_parity(torch.nn.Linear(3, 2), lambda: torch.randn(4, 3))
            >>> "parity" in result.summary()
            True
        """
        devs = " vs ".join(self.devices)
        if self.status == "skipped":
            return f"[gradcheck] Device parity skipped ({devs}): {self.skipped_reason}"
        if self.status == "passed":
            return (
                f"[gradcheck] Device parity holds ({devs}, {self.dtype}): "
                f"{len(self.leaves)} outputs and gradients agree; "
                f"greatest absolute difference {self.max_abs_error:.3g}."
            )
        worst = max(self.failures, key=lambda f: f.max_abs_error / max(f.allowed, 1e-300))
        where = "(" + ", ".join(map(str, worst.index)) + ")"
        lines = [
            f"[gradcheck] Outputs or gradients differ between devices! "
            f"(assert_device_parity, {devs}, {self.dtype})",
            "",
            f"Mismatched elements: {worst.mismatched} / {worst.numel} "
            f"({100.0 * worst.mismatched / max(worst.numel, 1):.1f}%)",
            f"Greatest absolute difference: {worst.max_abs_error:.3g} at index {where} "
            f"(up to {worst.allowed:.3g} allowed)",
            f"Greatest relative difference: {worst.max_rel_error:.3g} (rtol {worst.rtol:.3g})",
            f"At index {where}: {self.devices[0]} {worst.reference!r}, "
            f"{worst.device} {worst.value!r}",
            f"The failure occurred for {worst.leaf!r} on {worst.device}",
        ]
        others = [f for f in self.failures if f is not worst]
        if others:
            lines.append("Also differ: " + ", ".join(f"{f.leaf!r} ({f.device})" for f in others))
        lines += [f"Hint: {h}" for h in self.hints]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``kind="device_parity"``).

        Examples:
            >>> import json, torch
            >>> result = check_device_parity(torch.nn.Linear(3, 2), lambda: torch.randn(4, 3))
            >>> json.loads(json.dumps(result.to_dict(), allow_nan=False))["kind"]
            'device_parity'
        """
        return {
            "kind": self.kind,
            "schema_version": 1,
            "name": self.name,
            "test_id": self.test_id,
            "passed": None if self.status == "skipped" else self.passed,
            "status": self.status,
            "devices": list(self.devices),
            "dtype": self.dtype,
            "skipped": self.skipped_reason,
            "message": "" if self.status == "passed" else self.summary(),
            "hints": list(self.hints),
            "max_abs_error": _num(self.max_abs_error),
            "leaves": [leaf.to_dict() for leaf in self.leaves],
            "duration_s": self.duration_s,
        }


def parity_tolerances(dtype: torch.dtype, terms: int) -> tuple[float, float]:
    """``(atol, rtol)`` for comparing one ``dtype`` computation across devices.

    Devices sum in different orders, so a reduction of ``terms`` elements may
    differ by about ``sqrt(terms) * eps`` relative to its scale; the result is
    the larger of that (times a safety factor) and a per-dtype floor (the
    floors of ``torch.testing.assert_close``; float64 tighter). ``atol`` is
    relative to the compared tensor's largest magnitude.

    Examples:
        >>> atol, rtol = parity_tolerances(torch.float32, 1000)
        >>> 1e-6 < rtol < 1e-4
        True
    """
    floor_atol, floor_rtol = _PARITY_FLOOR.get(dtype, _PARITY_FLOOR[torch.float32])
    eps = float(torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0
    rtol = max(floor_rtol, _ROUNDOFF_SAFETY * eps * math.sqrt(max(terms, 1)))
    return max(floor_atol, rtol), rtol


@dataclass
class _Run:
    values: dict[str, torch.Tensor]
    dtype: torch.dtype


def _run_once(prep: _Prepared, loss_fn: Callable[[Any], torch.Tensor] | None, seed: int) -> _Run:
    """Outputs and gradients (inputs requiring grad, parameters), on the CPU in float64."""
    reduce = loss_fn or _default_loss
    with replaying_rng(seed):
        output = prep.fn(*prep.args)
    named = [(n, t) for n, t in _tensors(prep.args, "input") if t.requires_grad]
    named += [(f"params/{n}", p) for n, p in prep.params]
    outputs = list(_tensors(output, "output"))
    values: dict[str, torch.Tensor] = {n: t.detach() for n, t in outputs}
    dtypes = [t.dtype for _, t in outputs if t.is_floating_point()]
    if named and any(t.requires_grad for _, t in outputs):
        grads = torch.autograd.grad(
            reduce(output), [t for _, t in named], allow_unused=True, materialize_grads=True
        )
        for (n, t), g in zip(named, grads, strict=True):
            values[f"grad {n}"] = g.detach()
            dtypes.append(t.dtype)
    _synchronize(prep.device)
    lowest = min(dtypes, key=lambda d: torch.finfo(d).bits, default=torch.float64)
    return _Run({k: v.to("cpu", torch.float64) for k, v in values.items()}, lowest)


def _compare(
    name: str,
    ref: torch.Tensor,
    other: torch.Tensor,
    device: str,
    atol: float,
    rtol: float,
) -> ParityLeaf:
    if ref.shape != other.shape:
        return ParityLeaf(
            name, device, math.inf, math.inf, atol, rtol, (), math.nan, math.nan, 1, 1
        )
    finite = ref[torch.isfinite(ref)]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    allowed_abs = max(atol, rtol * scale) if math.isfinite(scale) else atol
    diff = (ref - other).abs()
    same = (ref == other) | (torch.isnan(ref) & torch.isnan(other))  # equal infs and NaNs agree
    diff = torch.where(same, torch.zeros_like(diff), diff)
    diff = torch.nan_to_num(diff, nan=math.inf)
    magnitude = torch.where(torch.isfinite(ref), ref.abs(), torch.zeros_like(ref))
    bound = allowed_abs + rtol * magnitude  # a non-finite reference must be matched exactly
    bad = diff > bound
    if ref.numel() == 0:
        return ParityLeaf(name, device, 0.0, 0.0, allowed_abs, rtol, (), 0.0, 0.0, 0, 0)
    excess = (diff - bound).flatten()
    flat = int(torch.argmax(excess))
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), ref.shape))
    rel = diff / magnitude.clamp_min(1e-300)
    return ParityLeaf(
        leaf=name,
        device=device,
        max_abs_error=float(diff.max()),
        max_rel_error=float(rel.max()),
        allowed=allowed_abs,
        rtol=rtol,
        index=index,
        reference=float(ref.flatten()[flat]),
        value=float(other.flatten()[flat]),
        mismatched=int(bad.sum()),
        numel=ref.numel(),
    )


def _problem_terms(prep: _Prepared) -> int:
    """The longest reduction a device might sum in a different order (a size estimate)."""
    sizes = [t.numel() for _, t in _tensors(prep.args, "input")]
    sizes += [p.numel() for _, p in prep.params]
    return max([1, *sizes])


def _hints(
    devs: Sequence[torch.device],
    dtype: torch.dtype,
    failures: Sequence[ParityLeaf],
    repeat_differs: dict[str, bool],
) -> tuple[str, ...]:
    hints: list[str] = []
    cuda = [d for d in devs if d.type == "cuda"]
    for device, differs in repeat_differs.items():
        if differs:
            hints.append(
                f"{device} gave different results on two identical runs: a nondeterministic "
                "kernel (atomicAdd-based index_add/scatter_add/embedding backward, "
                "cuBLAS split-K workspaces, ...) or a function that is not a pure function "
                "of its inputs. Try torch.use_deterministic_algorithms(True) with "
                "CUBLAS_WORKSPACE_CONFIG=:4096:8."
            )
    tf32 = Tf32Settings.capture().enabled()
    if cuda and dtype == torch.float32 and tf32:
        worst_rel = max((f.max_rel_error for f in failures), default=0.0)
        # Unknown capability (no CUDA in this process) is treated as Ampere or newer.
        ampere = not torch.cuda.is_available() or any(
            torch.cuda.get_device_capability(d)[0] >= 8 for d in cuda
        )
        if ampere:
            hints.append(
                f"TF32 is on for {', '.join(tf32)}: on Ampere and newer GPUs float32 "
                f"matmuls and convolutions then round to a 10-bit mantissa (~{_TF32_EPS:.0e} "
                f"relative; the worst relative difference here is {worst_rel:.2g}). To compare "
                "full float32, set torch.backends.cuda.matmul.fp32_precision and "
                "torch.backends.cudnn.conv.fp32_precision to 'ieee' (torch < 2.9: "
                "torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False)."
            )
    if (
        cuda
        and not any(repeat_differs.values())
        and not torch.are_deterministic_algorithms_enabled()
    ):
        hints.append(
            "Runs on CUDA repeated identically here, but CUDA kernels may still reduce in a "
            "different order than the CPU; if the differences are near rounding level, "
            "loosen rtol, or compare in float64."
        )
    return tuple(hints)


def _parity(
    fn_or_module: Callable[..., Any],
    make_inputs: Callable[[], Any],
    devs: tuple[torch.device, ...],
    *,
    loss_fn: Callable[[Any], torch.Tensor] | None,
    atol: float | None,
    rtol: float | None,
    seed: int,
    name: str | None,
    repeat: bool,
) -> DeviceParityResult:
    """The comparison itself; devices may repeat (two CPU runs), which tests rely on."""
    start = time.perf_counter()
    label = _name_of(fn_or_module, name)
    reasons = [(d, device_skip_reason(d)) for d in devs]
    present = tuple(d for d, r in reasons if r is None)
    if len(present) < 2:
        why = "; ".join(f"{d}: {r}" for d, r in reasons if r is not None)
        return DeviceParityResult(
            name=label,
            devices=tuple(str(d) for d in devs),
            status="skipped",
            dtype="",
            skipped_reason=f"fewer than two devices available ({why})",
            duration_s=time.perf_counter() - start,
        )
    with preserved(fn_or_module), undoing_writes():
        with replaying_rng(seed):
            inputs = make_inputs()
        runs: list[tuple[torch.device, _Run]] = []
        repeat_differs: dict[str, bool] = {}
        terms = 1
        for dev in present:
            prep = _prepare(fn_or_module, inputs, dev, None)
            terms = max(terms, _problem_terms(prep))
            runs.append((dev, _run_once(prep, loss_fn, seed)))
            if repeat and dev.type != "cpu":
                again = _run_once(prep, loss_fn, seed)
                repeat_differs[str(dev)] = any(
                    not torch.equal(a, again.values[k]) for k, a in runs[-1][1].values.items()
                )
    ref, others = runs[0][1], runs[1:]
    dtype = min(
        (r.dtype for _, r in runs), key=lambda d: torch.finfo(d).bits, default=torch.float64
    )
    d_atol, d_rtol = parity_tolerances(dtype, terms)
    use_atol = d_atol if atol is None else float(atol)
    use_rtol = d_rtol if rtol is None else float(rtol)
    leaves: list[ParityLeaf] = []
    for dev, run in others:
        for key, ref_value in ref.values.items():
            value = run.values.get(key)
            if value is None:
                leaves.append(
                    ParityLeaf(
                        key,
                        str(dev),
                        math.inf,
                        math.inf,
                        use_atol,
                        use_rtol,
                        (),
                        math.nan,
                        math.nan,
                        1,
                        1,
                    )
                )
                continue
            leaves.append(_compare(key, ref_value, value, str(dev), use_atol, use_rtol))
    failures = [leaf for leaf in leaves if not leaf.passed]
    hints = _hints(present, dtype, failures, repeat_differs) if failures else ()
    return DeviceParityResult(
        name=label,
        devices=tuple(str(d) for d in present),
        status="failed" if failures else "passed",
        dtype=str(dtype).removeprefix("torch."),
        leaves=tuple(leaves),
        hints=hints,
        duration_s=time.perf_counter() - start,
    )


@one_at_a_time
def check_device_parity(
    fn_or_module: Callable[..., Any],
    make_inputs: Callable[[], Any],
    *,
    devices: Sequence[str | torch.device] = ("cpu", "cuda"),
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    name: str | None = None,
) -> DeviceParityResult:
    """Compare outputs and gradients across devices; never raises on a difference.

    Runs ``fn_or_module`` on each device with the same inputs (``make_inputs()``
    once, copied) and parameters (a deep copy per device), each run from RNG
    seed ``seed``, and compares against the first device: every output, the
    gradient of ``loss_fn(output)`` (default: the sum) with respect to every
    input requiring grad and every parameter. An element passes when
    ``|a - b| <= max(atol, rtol * max|reference|) + rtol * |reference|``; by
    default ``atol, rtol = parity_tolerances(dtype, size)`` for the lowest
    floating dtype involved and the largest input or parameter. Non-CPU devices
    run twice, so a nondeterministic kernel can be told from a device difference.

    Args:
        fn_or_module: an ``nn.Module`` or a function of the inputs.
        make_inputs: ``make_inputs()`` returning a tensor or a tuple of tensors.
        devices: two or more devices, the first is the reference.
        loss_fn: reduces the output to a scalar before backward.
        atol: overrides the derived absolute tolerance.
        rtol: overrides the derived relative tolerance.
        seed: every run starts from it (the caller's RNG state is put back).
        name: a label.

    Returns:
        A :class:`DeviceParityResult` (``status="skipped"`` when fewer than two
        devices are present), also published to the ``--gradcheck`` report.

    Raises:
        InvalidArgument: an unknown or repeated device, a negative tolerance, ``make_inputs``
            not callable, ...

    Examples:
        >>> import torch
        >>> result = check_device_parity(torch.nn.Linear(3, 2), lambda: torch.randn(4, 3))
        >>> result.status if torch.cuda.is_available() else result.skipped_reason[:26]
        'fewer than two devices ava'
    """
    _check_common(fn_or_module, make_inputs, loss_fn)
    devs = _parse_devices(devices, min_count=2)
    if len(set(devs)) != len(devs):
        raise InvalidArgument(
            f"devices={tuple(devices)!r} names a device twice; parity compares different devices."
        )
    _check_tolerance(atol, "atol")
    _check_tolerance(rtol, "rtol")
    check_int(seed, "seed", min_value=0)
    result = _parity(
        fn_or_module,
        make_inputs,
        devs,
        loss_fn=loss_fn,
        atol=atol,
        rtol=rtol,
        seed=seed,
        name=name,
        repeat=True,
    )
    recording.publish(result)
    return result


def _check_tolerance(value: object, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentType(f"{name}={value!r} must be a number >= 0 or None.")
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{name}={value!r} must be >= 0.")


def assert_device_parity(
    fn_or_module: Callable[..., Any],
    make_inputs: Callable[[], Any],
    *,
    devices: Sequence[str | torch.device] = ("cpu", "cuda"),
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    name: str | None = None,
    msg: str | Callable[[str], str] | None = None,
) -> DeviceParityResult:
    """:func:`check_device_parity`, raising :class:`DeviceParityError` on a difference.

    With fewer than two devices present the check is skipped, not failed: the
    skipped result is returned (``result.status == "skipped"``).

    Args:
        fn_or_module: as for :func:`check_device_parity`.
        make_inputs: as for :func:`check_device_parity`.
        devices: as for :func:`check_device_parity`.
        loss_fn: as for :func:`check_device_parity`.
        atol: as for :func:`check_device_parity`.
        rtol: as for :func:`check_device_parity`.
        seed: as for :func:`check_device_parity`.
        name: as for :func:`check_device_parity`.
        msg: replaces the message, or a function of it (like ``torch.testing.assert_close``).

    Returns:
        The :class:`DeviceParityResult`.

    Raises:
        DeviceParityError: an output or gradient differs beyond the tolerance (``.result``).
        InvalidArgument: bad arguments.

    Examples:
        >>> import torch
        >>> assert_device_parity(torch.nn.Linear(3, 2), lambda: torch.randn(4, 3)).passed
        True
    """
    __tracebackhide__ = True
    result = check_device_parity(
        fn_or_module,
        make_inputs,
        devices=devices,
        loss_fn=loss_fn,
        atol=atol,
        rtol=rtol,
        seed=seed,
        name=name,
    )
    # a string msg replaces the message here, as in torch.testing.assert_close
    rewrite = (lambda _: msg) if isinstance(msg, str) else msg
    return fail_unless_passed(result, DeviceParityError, rewrite)
