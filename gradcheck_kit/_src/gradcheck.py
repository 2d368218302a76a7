"""check_gradients / check_module_gradients: autograd against finite differences.

Orchestrates trees (inputs/outputs), jacobian (numbers), tolerances, diagnose
(hints) and state (leave no trace) into a :class:`GradCheckResult`. Never
raises on a wrong gradient; raises :class:`InvalidArgument` on misuse.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from . import recording
from .engine.diagnose import Block, diagnose
from .engine.jacobian import (
    Evaluator,
    central_differences,
    directional_differences,
    flat_cat,
    forward_directional,
    reverse_jacobian,
    vjp_rows,
)
from .engine.numerics import allowed_error, element_steps
from .engine.precision import full_float32_precision, tf32_note
from .engine.tolerances import machine_eps, resolve_tolerances
from .engine.trees import InputLeaf, InputTree, OutputLeaf, flatten_outputs
from .errors import InvalidArgument, JacobianTooLargeError, NonFiniteOutputError
from .results import ErrorMap, GradCheckResult, Hint, PairResult, ProbeResult, WorstElement
from .state import capture_rng_state, preserved, seed_everything
from .validation import check_choice, check_int, check_positive

__all__ = [
    "check_gradients",
    "check_module_gradients",
    "CheckOptions",
    "FirstCall",
    "first_call",
    "call_again",
]

Mode = Literal["auto", "full", "fast"]
DtypePolicy = Literal["float64", "native"]
RngPolicy = Literal["fixed", "replay"]

_MODES = ("auto", "full", "fast")
_DTYPES = ("float64", "native")
_RNGS = ("fixed", "replay")
_WRT = ("parameters", "inputs", "both")

# auto mode checks the full Jacobian up to this many entries, projections beyond
_AUTO_FULL_MAX_ENTRIES = 1 << 20
_AUTO_FULL_MAX_INPUTS = 4096
_DEFAULT_BUDGET = 1 << 30
_WORST_KEPT = 5
_EXTRA_TRIES_WHEN_RANDOM = 4
# Fast mode's default number of probes: more for small inputs, where they cost little.
_PROBES_SMALL = 4
_PROBES_LARGE = 2
_PROBES_SMALL_MAX_INPUTS = 1 << 16


@dataclass(frozen=True)
class CheckOptions:
    """Validated options shared by every gradient check."""

    mode: str
    dtype: str
    eps: float | None
    atol: float | None
    rtol: float | None
    seed: int
    rng: str
    n_probes: int | None
    max_jacobian_bytes: int

    @classmethod
    def create(
        cls,
        *,
        mode: str,
        dtype: str,
        eps: float | None,
        atol: float | None,
        rtol: float | None,
        seed: int,
        rng: str,
        n_probes: int | None,
        max_jacobian_bytes: int,
    ) -> CheckOptions:
        check_choice(mode, _MODES, "mode")
        check_choice(dtype, _DTYPES, "dtype")
        check_choice(rng, _RNGS, "rng")
        check_positive(eps, "eps")
        if atol is not None and (not isinstance(atol, (int, float)) or atol < 0):
            raise InvalidArgument(f"atol={atol!r} must be a number >= 0.")
        if rtol is not None and (not isinstance(rtol, (int, float)) or rtol < 0):
            raise InvalidArgument(f"rtol={rtol!r} must be a number >= 0.")
        check_int(seed, "seed", min_value=0)
        if n_probes is not None:
            check_int(n_probes, "n_probes", min_value=1)
        check_int(max_jacobian_bytes, "max_jacobian_bytes", min_value=1)
        return cls(mode, dtype, eps, atol, rtol, seed, rng, n_probes, max_jacobian_bytes)


def _fn_name(fn: Any) -> str:
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type):  # e.g. MyFunction.apply of a torch.autograd.Function
        return f"{owner.__name__}.{getattr(fn, '__name__', 'apply')}"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return type(fn).__name__
    if str(name).startswith("_VariableFunctionsClass."):
        return "torch." + str(name).split(".", 1)[1]
    return str(name)


def _captured_objects(fn: Any) -> list[Any]:
    """Tensors and modules ``fn`` can reach without being passed them: closure cells, ``self``."""
    found: list[Any] = []
    if isinstance(fn, nn.Module):
        found.append(fn)
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, (nn.Module, torch.Tensor)):
        found.append(owner)
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, (nn.Module, torch.Tensor, torch.optim.Optimizer)):
            found.append(value)
    return found


def _unravel(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for size in reversed(shape):
        out.append(index % size if size else 0)
        index = index // size if size else 0
    return tuple(reversed(out))


def _rel(abs_err: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
    denom = numeric.abs()
    rel = abs_err / denom
    return torch.where(denom > 0, rel, torch.where(abs_err > 0, math.inf, 0.0))


def _pair_result(
    out_path: str,
    in_path: str,
    out_shape: tuple[int, ...],
    in_shape: tuple[int, ...],
    analytic: torch.Tensor,
    numeric: torch.Tensor,
    allowed: torch.Tensor,
) -> tuple[PairResult, torch.Tensor]:
    diff = (analytic - numeric).abs()
    nan = torch.isnan(analytic) != torch.isnan(numeric)
    diff = torch.where(torch.isnan(analytic) & torch.isnan(numeric), 0.0, diff)
    diff = torch.where(nan, math.inf, diff)
    mismatch = (diff > allowed) | nan
    rel = _rel(diff, numeric)
    total = int(diff.numel())
    worst: list[WorstElement] = []
    if total:
        excess = torch.where(mismatch, diff - allowed, -math.inf).reshape(-1)
        n_bad = int(mismatch.sum())
        order = (
            torch.argsort(excess, descending=True)[: min(_WORST_KEPT, n_bad)]
            if n_bad
            else torch.argmax(diff.reshape(-1)).reshape(1)
        )
        n_in = analytic.shape[1]
        for flat in order.tolist():
            r, c = divmod(int(flat), n_in)
            worst.append(
                WorstElement(
                    output_index=_unravel(r, out_shape),
                    input_index=_unravel(c, in_shape),
                    analytic=float(analytic[r, c]),
                    numeric=float(numeric[r, c]),
                    abs_error=float(diff[r, c]),
                    rel_error=float(rel[r, c]),
                    allowed=float(allowed[r, c]),
                )
            )
    pair = PairResult(
        output=out_path,
        input=in_path,
        output_shape=out_shape,
        input_shape=in_shape,
        passed=not bool(mismatch.any()),
        max_abs_error=float(diff.max()) if total else 0.0,
        max_rel_error=float(rel.max()) if total else 0.0,
        mismatched=int(mismatch.sum()),
        total=total,
        worst=tuple(worst),
        # a passing block draws nothing in the report, and a map is ~20 kB of JSON
        error_map=_error_map(diff, mismatch, out_shape, in_shape) if bool(mismatch.any()) else None,
    )
    return pair, mismatch


def _error_map(
    diff: torch.Tensor,
    mismatch: torch.Tensor,
    out_shape: tuple[int, ...],
    in_shape: tuple[int, ...],
) -> ErrorMap | None:
    """|diff| max-pooled onto a small grid, for the report's heatmap (whole blocks only)."""
    rows, cols = int(math.prod(out_shape)), int(math.prod(in_shape))
    if diff.dim() != 2 or tuple(diff.shape) != (rows, cols) or diff.numel() == 0:
        return None  # fast mode judged a single entry, not the block
    row_step, col_step = ErrorMap.steps(rows, cols)
    kernel = (row_step, col_step)
    pooled = torch.nn.functional.max_pool2d(diff[None, None], kernel, ceil_mode=True)[0, 0]
    counts = torch.nn.functional.avg_pool2d(
        mismatch.to(torch.float64)[None, None], kernel, ceil_mode=True, divisor_override=1
    )[0, 0]
    return ErrorMap(
        rows=rows,
        cols=cols,
        row_step=row_step,
        col_step=col_step,
        # 4 digits draw the same picture and keep a failing run's JSON a third the size
        abs_error=tuple(tuple(float(f"{v:.4g}") for v in row) for row in pooled.tolist()),
        mismatched=tuple(tuple(round(v) for v in row) for row in counts.tolist()),
    )


@dataclasses.dataclass
class FirstCall:
    """``fn`` called once on working copies of the inputs, its outputs sorted out.

    ``xs`` are the checked inputs (copies that require grad), ``checked`` their
    leaves; ``all_leaves`` every floating output, ``leaves``/``outs`` the ones
    compared (outputs autograd marks as not differentiable are left out, as
    torch.autograd.gradcheck does).
    """

    ev: Evaluator
    base: list[Any]
    xs: list[torch.Tensor]
    checked: list[InputLeaf]
    raw: Any
    all_leaves: list[OutputLeaf]
    leaves: list[OutputLeaf]

    @property
    def outs(self) -> list[torch.Tensor]:
        """The compared output tensors."""
        return [leaf.tensor for leaf in self.leaves]

    @property
    def kept(self) -> list[int]:
        """Indices into ``all_leaves`` of the compared outputs."""
        return self.ev.keep if self.ev.keep is not None else list(range(len(self.leaves)))


def first_call(
    fn: Callable[..., Any],
    tree: InputTree,
    opts: CheckOptions,
    prepare_rng: Callable[[], None],
    notes: list[str],
) -> FirstCall:
    """Call ``fn`` on working copies (float64 under ``dtype="float64"``) with grad enabled.

    Shared by every check that compares derivatives of ``fn``; appends what it
    skipped to ``notes``. An exception from ``fn`` propagates with a note on the
    dtype policy.
    """
    work_dtype = torch.float64 if opts.dtype == "float64" else None
    base = tree.working_copies(work_dtype)
    xs: list[torch.Tensor] = []
    checked: list[InputLeaf] = []
    for i, leaf in enumerate(tree.leaves):
        if leaf.checked:
            base[i] = base[i].requires_grad_(True)
            xs.append(base[i])
            checked.append(leaf)
    ev = Evaluator(fn, tree, base, prepare_rng)
    with torch.enable_grad():
        try:
            prepare_rng()
            ev.calls += 1
            raw = tree.call(fn, base, xs)
        except InvalidArgument:
            raise
        except Exception as exc:
            _annotate(exc, opts, work_dtype)
            raise
    all_leaves, skipped = flatten_outputs(raw)
    if skipped:
        notes.append(f"skipped non-floating outputs {', '.join(skipped)} (they have no gradient)")
    ev.all_paths = [leaf.path for leaf in all_leaves]
    leaves = all_leaves
    if any(leaf.tensor.requires_grad for leaf in all_leaves):
        # like torch.autograd.gradcheck: outputs autograd marks as not differentiable
        # (the mean/rstd of native_layer_norm, a deliberately detached statistic) are
        # not compared; with no differentiable output at all, the Jacobian must be zero
        frozen = [leaf.path for leaf in all_leaves if not leaf.tensor.requires_grad]
        if frozen:
            notes.append(
                f"outputs {', '.join(frozen)} do not require grad (not differentiable or "
                f"detached) and were not compared"
            )
            ev.keep = [k for k, leaf in enumerate(all_leaves) if leaf.tensor.requires_grad]
            leaves = [all_leaves[k] for k in ev.keep]
    ev.out_paths = [leaf.path for leaf in leaves]
    ev.out_shapes = [tuple(leaf.tensor.shape) for leaf in leaves]
    _check_outputs_usable(leaves)
    return FirstCall(ev, base, xs, checked, raw, all_leaves, leaves)


def _check_outputs_usable(leaves: Sequence[OutputLeaf]) -> None:
    if leaves and all(leaf.tensor.numel() == 0 for leaf in leaves):
        shapes = ", ".join(f"{leaf.path} {tuple(leaf.tensor.shape)}" for leaf in leaves)
        raise InvalidArgument(
            f"every output fn returns is empty ({shapes}): there is no gradient to check. "
            f"Pick inputs for which fn returns at least one element."
        )
    for out in leaves:
        bad = ~torch.isfinite(out.tensor.detach())
        if bool(bad.any()):
            first = int(bad.reshape(-1).nonzero()[0])
            idx = _unravel(first, tuple(out.tensor.shape))
            value = float(out.tensor.detach().reshape(-1)[first])
            raise NonFiniteOutputError(
                f"{out.path} is {value} at index {idx} at the point being checked; "
                f"gradients are undefined there. Check the inputs' domain (log/sqrt of "
                f"non-positive values, division by zero, overflow)."
            )


def call_again(
    ev: Evaluator,
    xs: Sequence[torch.Tensor],
    ref: torch.Tensor,
    unit_roundoff: float,
    opts: CheckOptions,
    prepare_rng: Callable[[], None],
    notes: list[str],
) -> torch.Tensor:
    """``fn`` evaluated once more at the same point, to tell a random fn from a smooth one.

    The caller compares the result with ``ref`` (``_close_repeat``).
    """
    detached = [x.detach() for x in xs]
    with torch.no_grad():
        prepare_rng()
        before = capture_rng_state()
        again = flat_cat(ev.raw(detached))
        ev.calls += 1
        draws = capture_rng_state() != before
        # Two calls can agree by chance (a random depth drawn from 0..3 repeats one time
        # in four), so a function seen drawing random numbers gets a few more tries.
        tries = _EXTRA_TRIES_WHEN_RANDOM if draws else 0
        while _close_repeat(ref, again, unit_roundoff) and tries:
            again = flat_cat(ev(detached))
            tries -= 1
    if draws and opts.rng == "replay":
        notes.append(
            f"fn draws random numbers; every evaluation replayed the RNG state of seed={opts.seed}"
        )
    return again


class _Check:
    """One run of the checker over prepared inputs."""

    def __init__(
        self,
        fn: Callable[..., Any],
        tree: InputTree,
        opts: CheckOptions,
        *,
        name: str,
        check: str,
        preserve: Sequence[Any],
    ) -> None:
        self.fn = fn
        self.tree = tree
        self.opts = opts
        self.name = name
        self.check = check
        self.preserve = preserve
        self.notes: list[str] = []
        self.tf32_switched: list[str] = []
        self.linear_ok = True
        self.hints: list[Hint] = []

    # -- set-up ---------------------------------------------------------------------------
    def _prepare_rng(self) -> None:
        if self.opts.rng == "replay":
            seed_everything(self.opts.seed)

    def run(self) -> GradCheckResult:
        start = time.perf_counter()
        with preserved(*self.preserve), full_float32_precision() as self.tf32_switched:
            seed_everything(self.opts.seed)
            result = self._run()
        return _finish(result, time.perf_counter() - start)

    def _run(self) -> GradCheckResult:
        call = first_call(self.fn, self.tree, self.opts, self._prepare_rng, self.notes)
        ev, xs, outs = call.ev, call.xs, call.outs
        note = tf32_note(self.tf32_switched, xs)
        if note:
            self.notes.append(note)
        self.in_paths = [leaf.path for leaf in call.checked]
        self.out_paths = ev.out_paths
        self._shapes = list(ev.out_shapes)
        dtypes = [x.dtype for x in xs] + [o.dtype for o in outs]
        worst_dtype = max(dtypes, key=machine_eps)
        self.tol = resolve_tolerances(
            worst_dtype, eps=self.opts.eps, atol=self.opts.atol, rtol=self.opts.rtol
        )
        self.u_out = max(machine_eps(o.dtype) for o in outs)
        self.u_in = max(machine_eps(x.dtype) for x in xs)
        self.dtype_name = str(worst_dtype).removeprefix("torch.")
        ref = flat_cat(outs)
        again = call_again(ev, xs, ref, self.u_out, self.opts, self._prepare_rng, self.notes)
        if not _close_repeat(ref, again, self.u_out):
            return self._nondeterministic(ref, again)

        n_in = sum(int(x.numel()) for x in xs)
        n_out = int(ref.numel())
        mode = self.opts.mode
        entries = n_in * n_out
        # A, numeric, error estimate and allowance are held at once: 4 float64 matrices.
        needed = 4 * 8 * entries
        if mode == "auto":
            mode = (
                "full"
                if entries <= _AUTO_FULL_MAX_ENTRIES
                and n_in <= _AUTO_FULL_MAX_INPUTS
                and needed <= self.opts.max_jacobian_bytes
                else "fast"
            )
        elif mode == "full" and needed > self.opts.max_jacobian_bytes:
            raise JacobianTooLargeError(
                f"the full Jacobian has {n_out} x {n_in} = {entries:,} entries and needs about "
                f"{needed / 2**20:,.0f} MiB, over max_jacobian_bytes="
                f"{self.opts.max_jacobian_bytes:,}. Use mode='fast' (random projections, constant "
                f"cost) or raise max_jacobian_bytes."
            )
        self.mode = mode
        if mode == "full":
            probes: list[ProbeResult] = []
            pairs = self._full(ev, xs, outs, ref)
        else:
            pairs, probes = self._fast(ev, xs, outs, ref)
        passed = (
            all(p.passed for p in pairs) and self.linear_ok if mode == "full" else self.fast_verdict
        )
        if ev.fallback_reason:
            self.notes.append(f"evaluated without vmap (loop): {ev.fallback_reason}")
        return self._result(
            passed=passed,
            status="passed" if passed else "mismatch",
            pairs=pairs,
            probes=probes,
            evaluations=ev.calls,
            vectorized=ev.vectorized,
        )

    # -- verdicts -------------------------------------------------------------------------
    def _result(self, **kw: Any) -> GradCheckResult:
        # frozen results hold tuples, so that equality and hashing work after a round trip
        for key in ("pairs", "probes"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return GradCheckResult(
            name=self.name,
            mode=getattr(self, "mode", self.opts.mode),
            mode_requested=self.opts.mode,
            dtype=getattr(self, "dtype_name", self.opts.dtype),
            dtype_policy=self.opts.dtype,
            eps=self.tol.eps,
            atol=self.tol.atol,
            rtol=self.tol.rtol,
            seed=self.opts.seed,
            rng=self.opts.rng,
            hints=tuple(self.hints),
            notes=tuple(self.notes),
            check=self.check,
            **kw,
        )

    def _nondeterministic(self, ref: torch.Tensor, again: torch.Tensor) -> GradCheckResult:
        diff = (ref - again).abs()
        diff = torch.where(torch.isnan(diff), math.inf, diff)
        flat = int(torch.argmax(diff))
        path, idx = self._locate_output(flat)
        if self.opts.rng == "replay":
            text = (
                f"fn returned different outputs for the same inputs even with the RNG state "
                f"replayed (largest difference {float(diff[flat]):.3g} in {path} at index {idx}). "
                f"It depends on something other than its inputs and the random generators: "
                f"nondeterministic kernels (torch.use_deterministic_algorithms(True)), global "
                f"counters, the clock, or state it mutates between calls."
            )
        else:
            text = (
                f"fn returned different outputs for the same inputs (largest difference "
                f"{float(diff[flat]):.3g} in {path} at index {idx}): it draws random numbers "
                f"(dropout, sampling, a random depth as in a dynamic graph) or keeps state "
                f"between calls, so finite differences cannot be compared with it as it is. "
                f"Pass rng='replay' to give every evaluation the same RNG state (torch CPU and "
                f"CUDA, Python random, NumPy), or put a module in eval() mode."
            )
        self.hints.insert(0, Hint(kind="nondeterministic", text=text, output=path))
        self.mode = self.opts.mode
        return self._result(passed=False, status="nondeterministic", evaluations=2)

    def _locate_output(self, flat: int) -> tuple[str, tuple[int, ...]]:
        offset = 0
        for path, shape in zip(self.out_paths, self._shapes, strict=True):
            m = math.prod(shape)
            if flat < offset + m:
                return path, _unravel(flat - offset, shape)
            offset += m
        return self.out_paths[-1], ()

    def _linearity(
        self,
        xs: list[torch.Tensor],
        rows: list[torch.Tensor],
        cots: list[torch.Tensor],
        second: int,
        combined: int,
        drawn: str,
    ) -> Hint | None:
        """The linearity probe over batched vjp ``rows`` (None when backward is linear).

        Row 0 is g1's vjp, row ``second`` g2's, row ``combined`` that of g1 - 2 g2;
        ``cots`` holds the cotangents, stacked the same way.
        """
        floor = self.tol.atol * sum(float(_combination_weight(c, second, combined)) for c in cots)
        return _linearity_hint(
            [r[0] for r in rows],
            [r[second] for r in rows],
            [r[combined] for r in rows],
            self.in_paths,
            [tuple(x.shape) for x in xs],
            max(self.u_in, self.u_out),
            floor,
            drawn,
        )

    # -- full mode ------------------------------------------------------------------------
    def _full(
        self,
        ev: Evaluator,
        xs: list[torch.Tensor],
        outs: list[torch.Tensor],
        ref: torch.Tensor,
    ) -> list[PairResult]:
        tol = self.tol
        with torch.enable_grad():
            analytic = reverse_jacobian(outs, xs, ev)
            # Unit cotangents cannot show a backward that ignores grad_output (right for a
            # scalar loss, where grad_output is 1, wrong inside a network) or bends it (abs,
            # clamp): three random ones can.
            seed = self.opts.seed
            gen = torch.Generator().manual_seed(seed)
            g1 = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outs]
            g2 = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outs]
            cots = [
                torch.stack([a, b, _combined_cotangent(a, b)]).to(o.device)
                for a, b, o in zip(g1, g2, outs, strict=True)
            ]
            probe_rows = vjp_rows(outs, xs, cots, ev)
        linear = self._linearity(
            xs, probe_rows, cots, 1, 2, f"g1, g2: two random grad_outputs drawn with seed={seed}"
        )
        self.linear_ok = linear is None
        if linear is not None:
            self.hints.append(linear)
        pairs: list[PairResult] = []
        blocks: list[Block] = []
        nonsmooth = 0
        for i, x in enumerate(xs):
            steps = element_steps(x, tol.eps).to(x.device)
            n_i = int(x.numel())
            coords = torch.arange(n_i, device=x.device)
            fd = central_differences(ev, xs, i, coords, steps, [1.0], ref, self.u_out)
            numeric = fd.values[1.0].T.cpu()
            err = fd.roundoff[1.0].T.cpu()
            A = analytic[i]
            allowed = allowed_error(numeric, err, atol=tol.atol, rtol=tol.rtol, safety=tol.safety)
            suspect = ((A - numeric).abs() > allowed) | torch.isnan(numeric) | torch.isnan(A)
            cols = suspect.any(dim=0).nonzero().reshape(-1)
            if cols.numel():
                numeric, allowed, kinked = self._refine(
                    ev, xs, i, cols, steps, ref, A, numeric, err, allowed
                )
                nonsmooth += kinked
            offset = 0
            for k, o in enumerate(outs):
                m = int(o.numel())
                rows = slice(offset, offset + m)
                pair, mismatch = _pair_result(
                    self.out_paths[k],
                    self.in_paths[i],
                    tuple(o.shape),
                    tuple(x.shape),
                    A[rows],
                    numeric[rows],
                    allowed[rows],
                )
                pairs.append(pair)
                blocks.append(
                    Block(
                        output=self.out_paths[k],
                        input=self.in_paths[i],
                        output_shape=tuple(o.shape),
                        input_shape=tuple(x.shape),
                        analytic=A[rows],
                        numeric=numeric[rows],
                        mismatch=mismatch,
                        input_values=x.detach().reshape(-1).to(torch.float64).cpu(),
                    )
                )
                offset += m
        if any(not p.passed for p in pairs):
            self.hints.extend(diagnose(blocks))
            if any(torch.isnan(b.numeric[b.mismatch]).any() for b in blocks):
                self.hints.append(
                    Hint(
                        kind="domain",
                        text=(
                            "finite differences gave NaN: x ± eps leaves the function's domain "
                            "(log/sqrt near 0, a boundary). Move the inputs away from the "
                            "boundary or pass a smaller eps."
                        ),
                    )
                )
        if nonsmooth:
            self.notes.append(
                f"{nonsmooth} Jacobian entries are not smooth within eps of the input (finite "
                f"differences at eps and 2*eps disagree); they were judged with that larger "
                f"error estimate"
            )
        return pairs

    # Steps (h, 2h) at three scales: 1, 1/8 and 1/64 of the base step. The difference
    # between a step and its double is an empirical error estimate (curvature, a kink in
    # between, roundoff); a smaller scale sees past a kink or a domain boundary that the
    # base step crossed. An entry is judged at the first scale where it agrees within
    # that scale's own estimate, so a wrong gradient has to be wrong at every scale.
    _SCALES = ((1.0, 2.0), (0.125, 0.25), (1.0 / 64, 1.0 / 32))

    def _refine(
        self,
        ev: Evaluator,
        xs: list[torch.Tensor],
        leaf: int,
        cols: torch.Tensor,
        steps: torch.Tensor,
        ref: torch.Tensor,
        analytic: torch.Tensor,
        numeric: torch.Tensor,
        err: torch.Tensor,
        allowed: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Re-judge the suspect columns ``cols`` with error estimates and smaller steps."""
        x = xs[leaf]
        multipliers = [m for pair in self._SCALES for m in pair if m != 1.0]
        fd = central_differences(
            ev, xs, leaf, cols.to(x.device), steps, multipliers, ref, self.u_out
        )
        vals = {c: v.T.cpu() for c, v in fd.values.items()}
        rounds = {c: r.T.cpu() for c, r in fd.roundoff.items()}
        vals[1.0] = numeric[:, cols]
        rounds[1.0] = err[:, cols]
        best_n, best_allowed, kinked = self._judge_scales(analytic[:, cols], vals, rounds)
        numeric = numeric.clone()
        allowed = allowed.clone()
        numeric[:, cols] = best_n
        allowed[:, cols] = best_allowed
        return numeric, allowed, kinked

    def _judge_scales(
        self,
        analytic: torch.Tensor,
        vals: dict[float, torch.Tensor],
        rounds: dict[float, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Numeric value and allowance per entry: the first scale that agrees, else scale 1."""
        tol = self.tol
        best_n = vals[1.0].clone()
        best_allowed = torch.full_like(best_n, -1.0)
        decided = torch.zeros_like(best_n, dtype=torch.bool)
        kinked = 0
        for small, large in self._SCALES:
            d_small, d_large = vals[small], vals[large]
            trunc = (d_small - d_large).abs()
            trunc = torch.where(torch.isnan(trunc), 0.0, trunc)
            scale_err = rounds[small] + rounds[large] + trunc
            scale_allowed = allowed_error(
                d_small, scale_err, atol=tol.atol, rtol=tol.rtol, safety=tol.safety
            )
            if small == 1.0:
                kinked = int((trunc > 0.1 * d_small.abs() + tol.atol).sum())
                best_allowed = scale_allowed
            agrees = ((analytic - d_small).abs() <= scale_allowed) & ~decided
            best_n = torch.where(agrees, d_small, best_n)
            best_allowed = torch.where(agrees, scale_allowed, best_allowed)
            decided |= agrees
        return best_n, best_allowed, kinked

    # -- fast mode ------------------------------------------------------------------------
    # Each probe compares u^T J v three ways against the finite differences' *own* error
    # estimate (h vs 2h), not against a tolerance summed over all entries: that sum grows
    # with the problem and hides a single wrong entry. A probe that fails is only a
    # detector; the verdict comes from the Jacobian entry the bisection narrows it down
    # to, judged with the same per-entry atol/rtol as full mode.
    def _fast(
        self,
        ev: Evaluator,
        xs: list[torch.Tensor],
        outs: list[torch.Tensor],
        ref: torch.Tensor,
    ) -> tuple[list[PairResult], list[ProbeResult]]:
        tol = self.tol
        K = self.opts.n_probes
        if K is None:
            # Small problems get more probes for free; on a large model every probe costs
            # four evaluations and two passes over the parameters, and one Rademacher probe
            # already weighs every Jacobian entry.
            n_in = sum(int(x.numel()) for x in xs)
            K = _PROBES_SMALL if n_in <= _PROBES_SMALL_MAX_INPUTS else _PROBES_LARGE
        gen = torch.Generator().manual_seed(self.opts.seed)
        # Rademacher (+-1) probes: every entry weighs exactly 1 in u^T J v, so no entry can
        # hide behind a near-zero Gaussian draw, and they are cheap to draw for huge models.
        us = [[_rademacher(o, gen) for o in outs] for _ in range(K)]
        # Steps relative to each entry's magnitude (at least 1), in the input's own dtype:
        # the direction actually taken is measured after rounding anyway.
        magnitudes = [torch.clamp(x.detach().abs(), min=1.0) for x in xs]
        dirs = [[_rademacher(m, gen) * m for m in magnitudes] for _ in range(K)]
        # One more row, a combination of the first probes, tests that backward is linear
        # in grad_output at the price of one batched row.
        extra = [
            _combined_cotangent(us[0][j], us[1][j] if K > 1 else None) for j in range(len(outs))
        ]
        cots = [torch.stack([*(us[k][j] for k in range(K)), extra[j]]) for j in range(len(outs))]
        with torch.enable_grad():
            rows = vjp_rows(outs, xs, cots, ev)
        linear = self._linearity(
            xs,
            rows,
            cots,
            min(1, K - 1),
            K,
            f"g1, g2: the first two projection vectors, drawn with seed={self.opts.seed}"
            if K > 1
            else f"g1 = g2: the projection vector, drawn with seed={self.opts.seed}",
        )
        if linear is not None:
            self.hints.insert(0, linear)
        # Step h first: a probe that agrees within roundoff passes without the 2h step
        # (truncation error cannot make a right gradient look wrong-but-close). Only the
        # probes that do not agree pay for the 2h evaluations that estimate truncation.
        values, rounds, eff = directional_differences(ev, xs, dirs, tol.eps, [1.0], ref, self.u_out)
        probes: list[ProbeResult] = []
        forward_ok = True
        suspects: list[int] = []
        forward_bad = False
        stats = []
        for k in range(K):
            u_flat = flat_cat(us[k])
            a, scale = 0.0, 0.0
            for i in range(len(xs)):
                term = eff[k][i].mul(rows[i][k])
                a += float(term.sum(dtype=torch.float64))
                scale += float(term.abs_().sum(dtype=torch.float64))
            n1 = float((u_flat * values[1.0][k]).sum())
            rnd = float((u_flat.abs() * rounds[1.0][k]).sum())
            stats.append((u_flat, a, n1, rnd + 8 * self.u_in * scale))
        unsure = [
            k for k, (_, a, n1, err) in enumerate(stats) if not abs(a - n1) <= tol.safety * err
        ]
        n2s: dict[int, float] = {}
        if unsure:
            twice, _, _ = directional_differences(
                ev, xs, [dirs[k] for k in unsure], tol.eps, [2.0], ref, self.u_out
            )
            for j, k in enumerate(unsure):
                n2s[k] = float((stats[k][0] * twice[2.0][j]).sum())
        for k in range(K):
            u_flat, a, n1, base_err = stats[k]
            # FD error (h vs 2h, roundoff) plus the roundoff of the analytic dot products
            err = base_err + (abs(n1 - n2s[k]) if k in n2s else 0.0)
            tight = tol.safety * err + 1e-300
            loose = tol.atol + tol.rtol * abs(n1) + tol.safety * err
            fwd: float | None = None
            # One forward-mode probe: a jvp costs about a forward pass, and one Rademacher
            # projection already weighs every entry of a wrong jvp.
            if forward_ok and k == 0:
                jv = forward_directional(ev, xs, eff[k])
                if jv is None:
                    forward_ok = False
                else:
                    fwd = float((u_flat.cpu() * jv).sum())
            reverse_ok = abs(a - n1) <= tight and not (math.isnan(a) or math.isnan(n1))
            if fwd is not None and not abs(fwd - n1) <= loose and abs(a - n1) <= loose:
                forward_bad = True
            probes.append(
                ProbeResult(
                    reverse=a,
                    forward=fwd,
                    numeric=n1,
                    error_estimate=err,
                    allowed=tight,
                    passed=reverse_ok,
                )
            )
            if not reverse_ok:
                suspects.append(k)
        if not forward_ok:
            self.notes.append(
                "forward-mode AD is not supported by fn; probes compared reverse mode with "
                "finite differences only"
            )
        if forward_bad:
            # the verdict is about backward (what training uses), as torch.autograd.gradcheck's
            # default; a wrong jvp is reported without failing the check
            text = (
                "forward mode (jvp) disagrees with finite differences while reverse mode agrees: "
                "the forward-mode derivative (e.g. a custom Function's jvp) is wrong; this "
                "matters only where fn is used with torch.func.jvp or forward-mode AD"
            )
            self.hints.append(Hint(kind="forward", text=text))
            self.notes.append(text)
        pairs: list[PairResult] = []
        if suspects:
            k = max(
                suspects,
                key=lambda j: abs(probes[j].reverse - probes[j].numeric) / probes[j].allowed,
            )
            pair = self._localise(ev, xs, outs, ref, us[k], [r[k] for r in rows], k, eff[k])
            if pair is not None:
                pairs.append(pair)
                if pair.passed:
                    self.notes.append(
                        f"{len(suspects)} of {K} projections exceeded the finite differences' "
                        f"error estimate, but the entry they narrow down to is within "
                        f"atol/rtol (worst |diff| {pair.max_abs_error:.3g})"
                    )
        self.fast_verdict = linear is None and (
            not suspects or (bool(pairs) and all(p.passed for p in pairs))
        )
        return pairs, probes

    def _localise(
        self,
        ev: Evaluator,
        xs: list[torch.Tensor],
        outs: list[torch.Tensor],
        ref: torch.Tensor,
        u: list[torch.Tensor],
        g_rows: list[torch.Tensor],
        k: int,
        w: list[torch.Tensor],
    ) -> PairResult | None:
        """Bisect a failing probe down to one Jacobian entry and judge that entry.

        Inputs first (finite differences of ``u^T J v_S`` on halves ``S``), then
        outputs (``[J^T u_S]_j`` by reverse mode against the numeric column).
        About ``4 log2(n) + 2`` evaluations and ``log2(m)`` backward passes.
        """
        tol = self.tol
        u_flat = flat_cat(u).cpu()
        g = torch.cat([r.reshape(-1).to(torch.float64).cpu() for r in g_rows])
        w_flat = torch.cat([t.reshape(-1).to(torch.float64).cpu() for t in w])
        sizes = [int(x.numel()) for x in xs]

        def masked(
            vec: torch.Tensor, a: int, b: int, like: Sequence[torch.Tensor]
        ) -> list[torch.Tensor]:
            parts = []
            offset = 0
            for t in like:
                n = int(t.numel())
                seg = torch.zeros(n, dtype=torch.float64)
                s, e = max(a, offset), min(b, offset + n)
                if s < e:
                    seg[s - offset : e - offset] = vec[s:e]
                parts.append(seg.reshape(t.shape).to(t.device))
                offset += n
            return parts

        lo, hi = 0, int(w_flat.numel())
        while hi - lo > 1:
            mid = (lo + hi) // 2
            halves = [(lo, mid), (mid, hi)]
            dirs = [masked(w_flat, a, b, xs) for a, b in halves]
            vals, rnds, _ = directional_differences(ev, xs, dirs, tol.eps, [1.0], ref, self.u_out)
            scores = []
            for h, (a, b) in enumerate(halves):
                analytic = float((g[a:b] * w_flat[a:b]).sum())
                numeric = float((u_flat * vals[1.0][h].cpu()).sum())
                rnd = float((u_flat.abs() * rnds[1.0][h].cpu()).sum())
                scale = float((g[a:b] * w_flat[a:b]).abs().sum())
                noise = rnd + 8 * self.u_in * scale + 1e-300
                scores.append(abs(analytic - numeric) / noise)
            lo, hi = halves[0] if scores[0] >= scores[1] else halves[1]
        leaf, local = 0, lo
        while local >= sizes[leaf]:
            local -= sizes[leaf]
            leaf += 1
        x = xs[leaf]
        steps = element_steps(x, tol.eps).to(x.device)
        coords = torch.tensor([local], device=x.device)
        multipliers = [m for pair in self._SCALES for m in pair]
        fd = central_differences(ev, xs, leaf, coords, steps, multipliers, ref, self.u_out)
        col_vals = {c: v[0].cpu() for c, v in fd.values.items()}
        col_rounds = {c: r[0].cpu() for c, r in fd.roundoff.items()}
        column = col_vals[1.0]
        col_err = col_rounds[1.0] + (column - col_vals[2.0]).abs()
        col_err = torch.where(torch.isnan(col_err), 0.0, col_err)

        # outputs: bisect with reverse mode on masked cotangents
        lo, hi = 0, int(u_flat.numel())
        with torch.enable_grad():
            while hi - lo > 1:
                mid = (lo + hi) // 2
                halves = [(lo, mid), (mid, hi)]
                cots_split = [masked(u_flat, a, b, outs) for a, b in halves]
                cots = [torch.stack([c[j] for c in cots_split]) for j in range(len(outs))]
                grads = vjp_rows(outs, xs, cots, ev)
                scores = []
                for h, (a, b) in enumerate(halves):
                    analytic = float(grads[leaf][h].reshape(-1)[local])
                    numeric = float((u_flat[a:b] * column[a:b]).sum())
                    err = float((u_flat[a:b].abs() * col_err[a:b]).sum()) + 1e-300
                    scores.append(abs(analytic - numeric) / err)
                lo, hi = halves[0] if scores[0] >= scores[1] else halves[1]
            one_hot = [torch.zeros(o.shape, dtype=torch.float64, device=o.device) for o in outs]
            out_leaf, out_local = 0, lo
            while out_local >= int(outs[out_leaf].numel()):
                out_local -= int(outs[out_leaf].numel())
                out_leaf += 1
            one_hot[out_leaf].reshape(-1)[out_local] = 1.0
            row = vjp_rows(outs, xs, [h.unsqueeze(0) for h in one_hot], ev)
        analytic_entry = torch.tensor([[float(row[leaf][0].reshape(-1)[local])]])
        numeric_entry, allowed, _ = self._judge_scales(
            analytic_entry,
            {c: v[lo : lo + 1].reshape(1, 1) for c, v in col_vals.items()},
            {c: r[lo : lo + 1].reshape(1, 1) for c, r in col_rounds.items()},
        )
        pair, _ = _pair_result(
            self.out_paths[out_leaf],
            self.in_paths[leaf],
            tuple(outs[out_leaf].shape),
            tuple(x.shape),
            analytic_entry,
            numeric_entry,
            allowed,
        )
        out_index = _unravel(out_local, tuple(outs[out_leaf].shape))
        in_index = _unravel(local, tuple(x.shape))
        worst = tuple(
            dataclasses.replace(e, output_index=out_index, input_index=in_index) for e in pair.worst
        )
        self.notes.append(
            f"fast mode narrowed probe {k} down by bisection to d {self.out_paths[out_leaf]}"
            f"{list(out_index)} / d {self.in_paths[leaf]}{list(in_index)}"
        )
        return dataclasses.replace(pair, worst=worst)


# The linearity probe: vjp(g1 - 2 g2) must equal vjp(g1) - 2 vjp(g2). A negative,
# non-unit coefficient catches a backward that ignores grad_output (c != c - 2c) and one
# that bends it (|g1 - 2 g2| != |g1| - 2|g2|).
_COMBINATION = -2.0


def _combined_cotangent(g1: torch.Tensor, g2: torch.Tensor | None) -> torch.Tensor:
    return g1 + _COMBINATION * (g2 if g2 is not None else g1)


def _combination_weight(cots: torch.Tensor, second: int, combined: int) -> torch.Tensor:
    """Sum |g1| + 2 sum |g2| + sum |g1 - 2 g2| over one output's stacked cotangents."""
    return (
        cots[0].abs().sum()
        + abs(_COMBINATION) * cots[second].abs().sum()
        + cots[combined].abs().sum()
    )


def _linearity_hint(
    v1: Sequence[torch.Tensor],
    v2: Sequence[torch.Tensor],
    v12: Sequence[torch.Tensor],
    in_paths: Sequence[str],
    in_shapes: Sequence[tuple[int, ...]],
    unit_roundoff: float,
    floor: float,
    drawn: str,
) -> Hint | None:
    """A hint when backward is not linear in grad_output, else None.

    ``v1``, ``v2`` and ``v12`` are the vjps (per input) of ``g1``, ``g2`` and
    ``g1 - 2 g2`` (``v2`` is ``v1`` when a single cotangent gives ``-g1``). The same backward
    computes all three, so a linear one agrees up to the roundoff of its sums; the
    allowance, sqrt(u) times the largest magnitudes of the three, is far above that
    and far below what a nonlinear backward gives. ``floor`` is the absolute part: what atol
    allows each Jacobian entry, summed over the cotangents' entries (an entry whose
    gradient is zero by cancellation carries roundoff of the terms that cancelled).
    """
    worst: tuple[float, int, int, float, float] | None = None
    for i, (a, c) in enumerate(zip(v1, v12, strict=True)):
        a, c = a.detach().reshape(-1), c.detach().reshape(-1)
        if a.numel() == 0:
            continue
        b = v2[i].detach().reshape(-1)
        # In the gradients' own dtype with one temporary and per-tensor magnitudes: on a
        # model with millions of parameters this costs a few passes over the gradients.
        diff = torch.add(a, b, alpha=_COMBINATION).sub_(c).abs_()
        scale = sum(
            w * float(torch.linalg.vector_norm(t, math.inf))
            for w, t in ((1.0, a), (abs(_COMBINATION), b), (1.0, c))
        )
        allowed = math.sqrt(unit_roundoff) * scale + floor
        j = int(torch.argmax(diff.nan_to_num_(nan=0.0)))
        over = float(diff[j]) - allowed
        if over > 0 and math.isfinite(over) and (worst is None or over > worst[0]):
            want = float(a[j]) + _COMBINATION * float(b[j])
            worst = (over, i, j, float(c[j]), want)
    if worst is None:
        return None
    _, i, j, got, want = worst
    return Hint(
        kind="grad_output",
        input=in_paths[i],
        text=(
            f"backward is not linear in grad_output: the gradient of {in_paths[i]} at index "
            f"{_unravel(j, in_shapes[i])} is {got:.6g} for grad_output g1 - 2·g2, but g1's "
            f"minus twice g2's is {want:.6g} ({drawn}). A backward must return "
            f"J^T · grad_output: it ignores grad_output (the gradient as if grad_output were "
            f"all ones, right for a scalar loss and wrong inside a network) or transforms it "
            f"(abs, clamp, a norm). Multiply by grad_output in the backward."
        ),
    )


def _rademacher(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random +-1 entries shaped like ``like``, in its dtype (float64 for non-floats)."""
    dtype = like.dtype if like.is_floating_point() else torch.float64
    signs = torch.randint(0, 2, like.shape, generator=gen, dtype=dtype)
    return signs.mul_(2).sub_(1).to(like.device)


def _close_repeat(a: torch.Tensor, b: torch.Tensor, unit_roundoff: float) -> bool:
    if a.shape != b.shape:
        return False
    both_nan = torch.isnan(a) & torch.isnan(b)
    ok = (a - b).abs() <= 16 * unit_roundoff * torch.maximum(a.abs(), b.abs())
    return bool((ok | both_nan | (a == b)).all())


def _annotate(exc: BaseException, opts: CheckOptions, work_dtype: torch.dtype | None) -> None:
    note = "gradcheck_kit: raised by fn while evaluating it on copies of the inputs"
    if work_dtype is torch.float64:
        note += (
            " cast to float64 (dtype='float64'); if fn uses float32 tensors it captured (weights, "
            "constants), pass dtype='native' or check a module with check_module_gradients"
        )
    if hasattr(exc, "add_note"):
        exc.add_note(note)


def _finish(result: GradCheckResult, duration: float) -> GradCheckResult:
    final = dataclasses.replace(result, duration_s=duration)
    recording.publish(final)
    return final


def check_gradients(
    fn: Callable[..., Any],
    inputs: Any,
    *,
    mode: Mode = "auto",
    dtype: DtypePolicy = "float64",
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    rng: RngPolicy = "fixed",
    n_probes: int | None = None,
    max_jacobian_bytes: int = _DEFAULT_BUDGET,
    name: str | None = None,
) -> GradCheckResult:
    """Compare ``fn``'s autograd gradients with finite differences.

    ``fn`` is called as ``fn(x)`` for a tensor, ``fn(*inputs)`` for a tuple or
    list and ``fn(**inputs)`` for a dict; it returns a tensor or a pytree of
    tensors. Floating tensors with ``requires_grad=True`` are checked, other
    leaves pass through. The check runs on copies and restores every tensor,
    ``.grad``, flag, mode and RNG state it could touch.

    Args:
        fn: the function under test.
        inputs: a tensor, a tuple/list of arguments or a dict of keyword arguments.
        mode: ``"full"`` compares whole Jacobians; ``"fast"`` compares random
            projections ``u^T J v`` by reverse mode, forward mode and finite
            differences at constant cost; ``"auto"`` picks full for small problems.
        dtype: ``"float64"`` checks float64 copies (most precise); ``"native"``
            checks in the tensors' own dtype with steps and tolerances from a
            floating-point error model.
        eps: base finite-difference step (scaled by ``max(1, |x|)``); default by dtype.
        atol: absolute tolerance per Jacobian entry; default by dtype.
        rtol: relative tolerance per Jacobian entry; default by dtype.
        seed: seeds the RNGs for the check and the random probes of fast mode.
        rng: ``"fixed"`` seeds once (a stochastic ``fn`` is reported as
            nondeterministic); ``"replay"`` gives every evaluation the same RNG state.
        n_probes: number of random projections in fast mode; by default 4 when the
            checked inputs hold up to 65,536 elements, 2 beyond (each probe of a
            large model costs four evaluations of ``fn``).
        max_jacobian_bytes: memory budget for full mode.
        name: label for messages and reports (default: ``fn``'s qualified name).

    Returns:
        A :class:`GradCheckResult`; ``result.passed`` is the verdict.

    Raises:
        InvalidArgument: bad arguments, nothing requiring grad, empty inputs,
            non-tensor or non-floating outputs, NaN/Inf outputs, a Jacobian over budget.
        UnsupportedInputError: sparse or complex tensors.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> x = torch.randn(4, dtype=torch.float64, requires_grad=True)
        >>> gk.check_gradients(lambda t: (t ** 3).sum(), x).passed
        True
        >>> gk.check_gradients(torch.tanh, x.float(), dtype="native").dtype
        'float32'
    """
    opts = CheckOptions.create(
        mode=mode,
        dtype=dtype,
        eps=eps,
        atol=atol,
        rtol=rtol,
        seed=seed,
        rng=rng,
        n_probes=n_probes,
        max_jacobian_bytes=max_jacobian_bytes,
    )
    if not callable(fn):
        raise InvalidArgument(f"fn={fn!r} is not callable; pass the function to check first.")
    tree = InputTree(inputs)
    preserve = [inputs, *_captured_objects(fn)]
    return _Check(
        fn, tree, opts, name=name or _fn_name(fn), check="check_gradients", preserve=preserve
    ).run()


def _module_call(
    work: nn.Module, names: list[str], loss_fn: Callable[[Any], Any] | None
) -> Callable[..., Any]:
    def call(params: dict[str, torch.Tensor], args: tuple[Any, ...]) -> Any:
        out = torch.func.functional_call(work, params, args)
        return loss_fn(out) if loss_fn is not None else out

    return call


def check_module_gradients(
    module: nn.Module,
    inputs: Any,
    *,
    loss_fn: Callable[[Any], Any] | None = None,
    wrt: Literal["parameters", "inputs", "both"] = "parameters",
    mode: Mode = "auto",
    dtype: DtypePolicy = "float64",
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    rng: RngPolicy = "fixed",
    n_probes: int | None = None,
    max_jacobian_bytes: int = _DEFAULT_BUDGET,
    name: str | None = None,
) -> GradCheckResult:
    """Check a module's gradients with respect to its parameters, its inputs, or both.

    Runs on a deep copy through :func:`torch.func.functional_call`, so the
    module, its parameters, buffers, ``.grad`` and mode are never touched.
    Parameters with ``requires_grad=False`` (frozen) are not checked.

    Args:
        module: the ``nn.Module`` under test.
        inputs: its forward arguments: a tensor, a tuple/list or a dict.
        loss_fn: optional ``loss_fn(output) -> tensor`` applied to the output
            (close over targets); without it the output itself is checked.
        wrt: ``"parameters"`` (default), ``"inputs"`` or ``"both"``.
        mode: as in :func:`check_gradients`.
        dtype: as in :func:`check_gradients`; ``"float64"`` checks a float64 copy.
        eps: as in :func:`check_gradients`.
        atol: as in :func:`check_gradients`.
        rtol: as in :func:`check_gradients`.
        seed: as in :func:`check_gradients`.
        rng: as in :func:`check_gradients`; ``"replay"`` checks dropout in train mode.
        n_probes: as in :func:`check_gradients`.
        max_jacobian_bytes: as in :func:`check_gradients`.
        name: label for messages and reports (default: the module's class name).

    Returns:
        A :class:`GradCheckResult` whose parameter leaves are named ``params/<qualified name>``.

    Raises:
        InvalidArgument: as in :func:`check_gradients`, or a module without
            trainable parameters when they are to be checked.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
        >>> result = gk.check_module_gradients(net, torch.randn(4, 3))
        >>> result.passed, result.pairs[0].input
        (True, 'params/0.weight')
    """
    if not isinstance(module, nn.Module):
        raise InvalidArgument(
            f"module must be a torch.nn.Module, got {type(module).__name__}; for a plain "
            f"function use check_gradients(fn, inputs)."
        )
    check_choice(wrt, _WRT, "wrt")
    if loss_fn is not None and not callable(loss_fn):
        raise InvalidArgument(f"loss_fn={loss_fn!r} is not callable.")
    opts = CheckOptions.create(
        mode=mode,
        dtype=dtype,
        eps=eps,
        atol=atol,
        rtol=rtol,
        seed=seed,
        rng=rng,
        n_probes=n_probes,
        max_jacobian_bytes=max_jacobian_bytes,
    )
    named = dict(module.named_parameters())
    named_buffers = dict(module.named_buffers())
    trainable = [n for n, p in named.items() if p.requires_grad]
    if wrt in ("parameters", "both") and not trainable:
        raise InvalidArgument(
            f"{type(module).__name__} has no trainable parameters (requires_grad=True) to check; "
            f"pass wrt='inputs' to check gradients with respect to its inputs."
        )
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    if isinstance(inputs, dict):
        raise InvalidArgument(
            "check_module_gradients passes inputs positionally; give a tensor or a tuple of "
            "forward arguments (wrap keyword arguments in a small nn.Module or use "
            "check_gradients)."
        )
    with preserved(module, inputs):
        work = copy.deepcopy(module)
    want_params = wrt in ("parameters", "both")
    want_inputs = wrt in ("inputs", "both")
    param_ids = {id(p) for n, p in named.items() if p.requires_grad}
    checked_params = {id(p) for n, p in named.items() if p.requires_grad}

    def select(t: torch.Tensor) -> bool:
        if id(t) in param_ids:
            return want_params and id(t) in checked_params
        return want_inputs and t.requires_grad

    state: dict[str, Any] = {**named, **named_buffers}
    tree = InputTree({"params": state, "args": tuple(args)}, root="", select=select)
    call = _module_call(work, list(state), loss_fn)

    def fn(params: dict[str, torch.Tensor], args: tuple[Any, ...]) -> Any:
        return call(params, args)

    # readable paths: params/<name> and inputs[i]
    for idx, leaf in enumerate(tree.leaves):
        path = leaf.path
        if path.startswith("['params']"):
            path = "params/" + path[len("['params']") :].strip("[]'\"")
        elif path.startswith("['args']"):
            path = "inputs" + path[len("['args']") :]
        tree.leaves[idx] = type(leaf)(path, leaf.original, leaf.checked)
    return _Check(
        fn,
        tree,
        opts,
        name=name or type(module).__name__,
        check="check_module_gradients",
        preserve=[module, inputs],
    ).run()
