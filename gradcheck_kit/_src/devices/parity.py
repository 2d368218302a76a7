"""CPU vs CUDA: gradient parity across devices.

:func:`check_device_parity` / :func:`assert_device_parity` run the same inputs
through the same parameters on each device and compare outputs and gradients
within tolerances derived from the dtype and the problem size
(:func:`parity_tolerances`); a failure comes with hints (TF32, nondeterministic
kernels). Devices that are not present make the check skipped, with the reason,
never failed. The user's module is copied (:func:`.common.prepare`); it is never
moved, and its tensors and every RNG state are left as they were.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypedDict

import torch

from .. import recording
from ..engine.precision import Tf32Settings
from ..errors import DeviceParityError, InvalidArgument, InvalidArgumentType
from ..raising import fail_unless_passed
from ..serial import one_at_a_time
from ..state.rng import replaying_rng
from ..state.snapshot import preserved
from ..undo import undoing_writes
from ..validation import check_int
from . import common
from .common import Prepared

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DeviceParityResult",
    "ParityLeaf",
    "assert_device_parity",
    "check_device_parity",
    "parity_tolerances",
]

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


def _run_once(prep: Prepared, loss_fn: Callable[[Any], torch.Tensor] | None, seed: int) -> _Run:
    """Outputs and gradients (inputs requiring grad, parameters), on the CPU in float64."""
    reduce = loss_fn or common.default_loss
    with replaying_rng(seed):
        output = prep.fn(*prep.args)
    named = [(n, t) for n, t in common.named_tensors(prep.args, "input") if t.requires_grad]
    named += [(f"params/{n}", p) for n, p in prep.params]
    outputs = list(common.named_tensors(output, "output"))
    values: dict[str, torch.Tensor] = {n: t.detach() for n, t in outputs}
    dtypes = [t.dtype for _, t in outputs if t.is_floating_point()]
    if named and any(t.requires_grad for _, t in outputs):
        grads = torch.autograd.grad(
            reduce(output), [t for _, t in named], allow_unused=True, materialize_grads=True
        )
        for (n, t), g in zip(named, grads, strict=True):
            values[f"grad {n}"] = g.detach()
            dtypes.append(t.dtype)
    common.synchronize_device(prep.device)
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


def _problem_terms(prep: Prepared) -> int:
    """The longest reduction a device might sum in a different order (a size estimate)."""
    sizes = [t.numel() for _, t in common.named_tensors(prep.args, "input")]
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
    tolerances: tuple[float | None, float | None],
    seed: int,
    name: str | None,
    repeat: bool,
) -> DeviceParityResult:
    """The comparison itself; devices may repeat (two CPU runs), which tests rely on.

    ``tolerances`` is the caller's ``(atol, rtol)``; ``None`` takes the one
    :func:`parity_tolerances` derives.
    """
    start = time.perf_counter()
    label = common.name_of(fn_or_module, name)
    reasons = [(d, common.device_skip_reason(d)) for d in devs]
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
            prep = common.prepare(fn_or_module, inputs, dev, None)
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
    atol, rtol = tolerances
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
    common.check_callables(fn_or_module, make_inputs, loss_fn)
    devs = common.parse_devices(devices, min_count=2)
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
        tolerances=(atol, rtol),
        seed=seed,
        name=name,
        repeat=True,
    )
    recording.publish(result)
    return result


class ParityOptions(TypedDict, total=False):
    """The keyword options of :func:`check_device_parity`; :func:`assert_device_parity` takes them.

    Declared once so that the assertion hands them on unchanged, and mypy still
    catches a misspelled one (``atoll=``) at either call.
    """

    devices: Sequence[str | torch.device]
    loss_fn: Callable[[Any], torch.Tensor] | None
    atol: float | None
    rtol: float | None
    seed: int
    name: str | None


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
    msg: str | Callable[[str], str] | None = None,
    **options: Unpack[ParityOptions],
) -> DeviceParityResult:
    """:func:`check_device_parity`, raising :class:`DeviceParityError` on a difference.

    With fewer than two devices present the check is skipped, not failed: the
    skipped result is returned (``result.status == "skipped"``).

    Args:
        fn_or_module: as for :func:`check_device_parity`.
        make_inputs: as for :func:`check_device_parity`.
        msg: replaces the message, or a function of it (like ``torch.testing.assert_close``).
        **options: the options of :func:`check_device_parity` (``devices``, ``loss_fn``,
            ``atol``, ``rtol``, ``seed``, ``name``), with its defaults.

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
    result = check_device_parity(fn_or_module, make_inputs, **options)
    # a string msg replaces the message here, as in torch.testing.assert_close
    rewrite = (lambda _: msg) if isinstance(msg, str) else msg
    return fail_unless_passed(result, DeviceParityError, rewrite)
