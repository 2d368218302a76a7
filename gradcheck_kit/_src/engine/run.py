"""What every check around ``fn`` does before and after the numbers.

The scope of a check (state preserved, TF32 off for float32 CUDA work, RNGs
seeded, nothing left allocated after an error), the first call on working
copies, the repeat call that tells a random ``fn`` from a smooth one, names,
and publishing the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, Generic, TypeVar

import torch
from torch import nn

from .. import coverage, recording
from ..errors import InvalidArgument, NonFiniteOutputError
from ..failure_inputs import Subject, with_reproduction
from ..readback import read_host
from ..results import Hint
from ..state.rng import rng_fingerprint, seed_everything, seed_torch
from ..state.snapshot import preserved
from ..undo import undoing_writes
from .captured import captures_to_cast, cast_to_float64, raising_named_dtype_errors
from .evaluation import Evaluator, flat_cat
from .jacobian import Point
from .memory import AllocationCounter, Footprint, MemoryBudget
from .numerics import unravel
from .options import CheckOptions
from .precision import full_float32_precision
from .tolerances import machine_eps, resolve_tolerances
from .trees import InputLeaf, InputTree, OutputLeaf, flatten_outputs

__all__ = [
    "fn_name",
    "captured_objects",
    "check_scope",
    "FirstCall",
    "first_call",
    "Repeat",
    "call_again",
    "repeat_at_point",
    "close_repeat",
    "close_within_roundoff",
    "call_on_copies",
    "annotate",
    "finish",
    "CheckRun",
]

R = TypeVar("R")

# A function seen drawing random numbers gets this many more repeat calls: two calls
# can agree by chance (a random depth drawn from 0..3 repeats one time in four).
_EXTRA_TRIES_WHEN_RANDOM: Final = 4
_PACKAGE_DIR: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fn_name(fn: Any) -> str:
    """A readable name for ``fn`` in messages: ``MyFunction.apply``, ``torch.sin``, ``f``."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type):  # e.g. MyFunction.apply of a torch.autograd.Function
        return f"{owner.__name__}.{getattr(fn, '__name__', 'apply')}"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return type(fn).__name__
    if str(name).startswith("_VariableFunctionsClass."):
        return "torch." + str(name).split(".", 1)[1]
    return str(name)


def captured_objects(fn: Any) -> list[Any]:
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


def _release_frames(exc: BaseException | None) -> None:
    """Clear the locals of this package's finished frames in ``exc``'s tracebacks.

    An exception keeps every frame it passed through alive, and with them the
    batches of perturbed inputs and Jacobian blocks a check held: a caught error
    (``pytest.raises``) would keep them allocated. The user's own frames keep
    their locals, for tracebacks that show them.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb: types.TracebackType | None = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
                # a frame still executing (the one re-raising) cannot be cleared
                with contextlib.suppress(RuntimeError):
                    tb.tb_frame.clear()
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__


@contextmanager
def check_scope(preserve: Sequence[Any], seed: int) -> Iterator[list[str]]:
    """The span of one check: yields the CUDA backends whose TF32 was switched off.

    torch's generators are seeded with ``seed`` (Python's ``random`` and NumPy's
    are left on their streams: a check's draws from them are undone with the
    rest). Everything in ``preserve`` (and the RNGs, modes and flags) is restored
    on exit, also when the block raises; an error leaves nothing of the check
    allocated. Tensors out of ``preserve``'s reach (a global module, a buffer of
    ``self.model``) get back whatever the check wrote into them in place
    (:func:`~..undo.undoing_writes`).
    """
    try:
        # inference_mode(False): a check called inside torch.inference_mode() still
        # needs autograd for its own copies (inputs made in it are copied out of it)
        with (
            torch.inference_mode(False),
            preserved(*preserve),
            undoing_writes(only_user_code=True),
            coverage.exercised(),
            full_float32_precision() as switched,
        ):
            seed_torch(seed)
            yield switched
    except BaseException as exc:
        _release_frames(exc)
        raise


@dataclasses.dataclass
class FirstCall:
    """``fn`` called once on working copies of the inputs, its outputs sorted out.

    ``xs`` are the checked inputs (copies that require grad), ``checked`` their
    leaves; ``all_leaves`` every floating output, ``leaves``/``outs`` the ones
    compared (outputs autograd marks as not differentiable are left out, as
    torch.autograd.gradcheck does). ``seconds`` is how long the call took.
    """

    ev: Evaluator
    base: list[Any]
    xs: list[torch.Tensor]
    checked: list[InputLeaf]
    raw: Any
    all_leaves: list[OutputLeaf]
    leaves: list[OutputLeaf]
    seconds: float
    nothing_to_check: str | None = None
    # per non-empty compared output, whether its sum is finite: on the device until
    # read together with the repeat call's verdict (see :meth:`ensure_usable`)
    finite_sums: list[torch.Tensor] | None = None

    def ensure_usable(self, finite: Sequence[float] | None = None) -> None:
        """Raise :class:`NonFiniteOutputError` for an output with NaN or Inf at the point.

        ``finite`` holds the values of :attr:`finite_sums`, read to the host with
        other figures; without it they are read here. Does nothing once checked.

        Raises:
            NonFiniteOutputError: an output has a NaN or Inf entry.
        """
        if self.finite_sums is None:
            return
        if finite is None:
            finite = [v[0] for v in read_host(self.finite_sums)]
        self.finite_sums = None
        _check_outputs_usable(self.leaves, finite)

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
    *,
    defer_finite: bool = False,
) -> FirstCall:
    """Call ``fn`` on working copies (float64 under ``dtype="float64"``) with grad enabled.

    Shared by every check that compares derivatives of ``fn``; appends what it
    skipped to ``notes``. An exception from ``fn`` propagates with a note on the
    dtype policy. With ``defer_finite`` the outputs' finiteness is left on the
    device for the caller to read with other figures (:meth:`FirstCall.ensure_usable`).
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
        prepare_rng()
        ev.calls += 1
        start = time.perf_counter()
        raw = call_on_copies(fn, tree, base, xs, opts)
        seconds = time.perf_counter() - start
    all_leaves, skipped = flatten_outputs(raw)
    if skipped:
        notes.append(f"skipped non-floating outputs {', '.join(skipped)} (they have no gradient)")
    ev.all_paths = [leaf.path for leaf in all_leaves]
    ev.all_shapes = [tuple(leaf.tensor.shape) for leaf in all_leaves]
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
    sums: list[torch.Tensor] | None = _finite_sums(leaves)
    empty = _nothing_to_check(checked, xs, leaves, notes)
    if not defer_finite or empty is not None:
        # with nothing to check there is no later read to wait for
        assert sums is not None
        _check_outputs_usable(leaves, [v[0] for v in read_host(sums)])
        sums = None
    if empty is not None and opts.empty == "error":
        raise InvalidArgument(
            f"{empty}: there is no gradient to check (empty='error'). Pick inputs for which "
            f"fn takes and returns at least one element, or pass empty='pass' to let such a "
            f"check pass with a note, as torch.autograd.gradcheck does."
        )
    return FirstCall(ev, base, xs, checked, raw, all_leaves, leaves, seconds, empty, sums)


def _describe(path: str, t: torch.Tensor) -> str:
    return f"{path} {tuple(t.shape)}"


def _nothing_to_check(
    checked: Sequence[InputLeaf],
    xs: Sequence[torch.Tensor],
    leaves: Sequence[OutputLeaf],
    notes: list[str],
) -> str | None:
    """Why the Jacobian has no entry (every checked input or output is empty), or None.

    An empty input beside others is noted: it has nothing to compare, the others are checked.
    """
    pairs = zip(checked, xs, strict=True)
    empty_in = [_describe(leaf.path, x) for leaf, x in pairs if not x.numel()]
    if xs and len(empty_in) == len(xs):
        return f"every checked input is empty ({', '.join(empty_in)})"
    if leaves and all(leaf.tensor.numel() == 0 for leaf in leaves):
        shapes = ", ".join(_describe(leaf.path, leaf.tensor) for leaf in leaves)
        return f"every output fn returns is empty ({shapes})"
    if empty_in:
        notes.append(f"{', '.join(empty_in)} empty: nothing to compare there")
    return None


def _finite_sums(leaves: Sequence[OutputLeaf]) -> list[torch.Tensor]:
    """Per non-empty output, whether its sum is finite (a device bool).

    A finite sum means every entry is finite: one reduction, no mask.
    """
    return [torch.isfinite(o.tensor.detach().sum()) for o in leaves if o.tensor.numel()]


def _check_outputs_usable(
    leaves: Sequence[OutputLeaf], finite: Sequence[float] | None = None
) -> None:
    """Raise :class:`NonFiniteOutputError` for the first output with NaN or Inf.

    ``finite`` are the values of :func:`_finite_sums`, read already; without
    them they are read here, in one copy.
    """
    nonempty = [o for o in leaves if o.tensor.numel()]
    if finite is None:
        finite = [v[0] for v in read_host(_finite_sums(nonempty))]
    for out, sum_finite in zip(nonempty, finite, strict=True):
        if sum_finite:
            continue
        # an overflowing sum of finite entries passes here; the rest is named
        bad = ~torch.isfinite(out.tensor.detach())
        if bool(bad.any()):
            first = int(bad.reshape(-1).nonzero()[0])
            idx = unravel(first, tuple(out.tensor.shape))
            value = float(out.tensor.detach().reshape(-1)[first])
            raise NonFiniteOutputError(
                f"{out.path} is {value} at index {idx} at the point being checked; "
                f"gradients are undefined there. Check the inputs' domain (log/sqrt of "
                f"non-positive values, division by zero, overflow)."
            )


@dataclasses.dataclass(frozen=True)
class Repeat:
    """The repeat call: its outputs (flat float64), its measured peak and its seconds.

    ``peak`` is None unless the call was measured; ``seconds`` is the time of the
    evaluation alone, without graph: what one more evaluation costs.
    """

    values: torch.Tensor
    peak: int | None
    seconds: float


def call_again(
    ev: Evaluator,
    xs: Sequence[torch.Tensor],
    ref: torch.Tensor,
    unit_roundoff: float,
    opts: CheckOptions,
    prepare_rng: Callable[[], None],
    notes: list[str],
    *,
    measure: bool = False,
) -> Repeat:
    """``fn`` evaluated once more at the same point, to tell a random fn from a smooth one.

    The caller compares the result with ``ref`` (:func:`close_repeat`). With
    ``measure``, the call runs under :class:`~.memory.AllocationCounter` and its
    peak is kept too.
    """
    detached = [x.detach() for x in xs]
    peak: int | None = None
    with torch.no_grad():
        prepare_rng()
        before = rng_fingerprint()
        start = time.perf_counter()
        if measure:
            with AllocationCounter() as counter:
                again = flat_cat(ev.raw(detached))
            peak = counter.peak
        else:
            again = flat_cat(ev.raw(detached))
        seconds = time.perf_counter() - start
        ev.calls += 1
        draws = rng_fingerprint() != before
        # Two calls can agree by chance (a random depth drawn from 0..3 repeats one time
        # in four), so a function seen drawing random numbers gets a few more tries.
        tries = _EXTRA_TRIES_WHEN_RANDOM if draws else 0
        while tries and close_repeat(ref, again, unit_roundoff, opts.nondet_tol):
            again = flat_cat(ev(detached))
            tries -= 1
    if draws and opts.rng == "replay":
        notes.append(
            f"fn draws random numbers; every evaluation replayed the RNG state of seed={opts.seed}"
        )
    return Repeat(again, peak, seconds)


def repeat_at_point(
    call: FirstCall,
    opts: CheckOptions,
    prepare_rng: Callable[[], None],
    notes: list[str],
    rows: int,
) -> tuple[Repeat, Point]:
    """The repeat call, and ``fn`` at the point with its budget and measured footprint.

    ``rows`` is the largest batch the mode will start with: on CUDA the repeat call
    is counted when that many evaluations need a count. The caller compares
    ``repeat.values`` with ``point.reference`` (:func:`close_repeat`).

    Raises:
        OutputChanged: the repeat call returned outputs of another shape.
    """
    xs, outs = call.xs, call.outs
    reference = flat_cat(outs)
    u_out = max(machine_eps(o.dtype) for o in outs)
    budget = MemoryBudget(opts.max_memory)
    footprint = Footprint(call.seconds, on_cuda=any(x.is_cuda for x in xs))
    measure = footprint.needs_forward_count(rows, budget)
    repeat = call_again(call.ev, xs, reference, u_out, opts, prepare_rng, notes, measure=measure)
    footprint.forward_seconds = repeat.seconds
    footprint.forward_counted = repeat.peak
    point = Point(
        ev=call.ev,
        xs=xs,
        outs=outs,
        in_paths=[leaf.path for leaf in call.checked],
        reference=reference,
        u_out=u_out,
        budget=budget,
        footprint=footprint,
        call_seconds=repeat.seconds,
    )
    return repeat, point


def close_repeat(
    a: torch.Tensor, b: torch.Tensor, unit_roundoff: float, nondet_tol: float = 0.0
) -> bool:
    """Whether two evaluations at the same point agree up to roundoff (NaN equals NaN).

    ``nondet_tol`` (torch.autograd.gradcheck's option, passed on by the drop-in)
    is an absolute difference allowed on top: a ``fn`` known to be
    nondeterministic by that much is not reported as random.

    Roundoff relative to the outputs' scale, not only to each entry: LAPACK and
    MKL may sum in another order from one call to the next (their buffers'
    alignment), and an entry that cancels then differs far beyond its own
    roundoff (3e-16 on an entry of lstsq whose own roundoff was 1e-19). A random
    function differs by the size of its outputs.
    """
    if a.shape != b.shape:
        return False
    if torch.equal(a, b):
        return True  # deterministic kernels repeat bit for bit
    return close_within_roundoff(a, b, unit_roundoff, nondet_tol)


def close_within_roundoff(
    a: torch.Tensor, b: torch.Tensor, unit_roundoff: float, nondet_tol: float = 0.0
) -> bool:
    """:func:`close_repeat` for two evaluations of the same shape that are not bit for bit equal."""
    both_nan = torch.isnan(a) & torch.isnan(b)
    larger = torch.maximum(a.abs(), b.abs())
    # the scale stays a tensor: one read of the verdict instead of two
    scale = torch.nan_to_num(larger, posinf=0.0).max()
    ok = (a - b).abs() <= 16 * unit_roundoff * (larger + scale) + nondet_tol
    return bool((ok | both_nan | (a == b)).all())


def call_on_copies(
    fn: Callable[..., Any],
    tree: InputTree,
    base: Sequence[Any],
    xs: Sequence[torch.Tensor],
    opts: CheckOptions,
) -> Any:
    """``fn`` on the working copies; an exception it raises gets a note on the dtype policy."""
    try:
        return tree.call(fn, base, xs)
    except InvalidArgument:
        raise
    except Exception as exc:
        annotate(exc, opts)
        raise


def annotate(exc: BaseException, opts: CheckOptions) -> None:
    """Add a note to an exception ``fn`` raised on the check's working copies."""
    note = "gradcheck_kit: raised by fn while evaluating it on copies of the inputs"
    if opts.dtype == "float64":
        note += (
            " cast to float64 (dtype='float64'); if fn uses float32 tensors it captured (weights, "
            "constants), pass dtype='native' or check a module with check_module_gradients"
        )
    if hasattr(exc, "add_note"):
        exc.add_note(note)


def finish(result: R, start: float, subject: Subject | None = None) -> R:
    """``result`` with its duration since ``start``, published to the listeners.

    A failed result of a ``subject`` also gets its reproduce line, and its inputs
    saved when a run keeps them (:mod:`..failure_inputs`), before anyone sees it.
    """
    final = dataclasses.replace(result, duration_s=time.perf_counter() - start)  # type: ignore[type-var]
    if subject is not None:
        final = with_reproduction(final, subject)
    recording.publish(final)
    return final


class CheckRun(Generic[R]):
    """What every check of ``fn`` keeps while it runs: its call, options, notes and hints.

    Subclasses implement :meth:`_run` inside the check's scope; :meth:`run` times
    it and publishes the result.

    Args:
        fn: the function under test, called through ``tree``.
        tree: its inputs, with the checked leaves marked.
        opts: validated options.
        name: label for messages and reports.
        check: the public function that runs it (``check_gradients``, ...).
        preserve: objects restored bit for bit after the check.
        subject: what the caller passed (function or module, inputs), for the
            reproduce line of a failure; ``None`` keeps the plain one.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        tree: InputTree,
        opts: CheckOptions,
        *,
        name: str,
        check: str,
        preserve: Sequence[Any],
        subject: Subject | None = None,
    ) -> None:
        self.fn = fn
        self.subject = subject
        self.tree = tree
        self.opts = opts
        self.name = name
        self.check = check
        self.preserve = preserve
        self.notes: list[str] = []
        self.hints: list[Hint] = []
        # what the result reports: set again once the first call shows the dtypes
        self.mode: str = opts.mode
        self.dtype_name: str = opts.dtype
        self.tol = resolve_tolerances(torch.float64, eps=opts.eps, atol=opts.atol, rtol=opts.rtol)

    def settings(self) -> dict[str, Any]:
        """The fields every result of a check shares: name, mode, dtype, numbers, hints, notes."""
        return {
            "name": self.name,
            "mode": self.mode,
            "mode_requested": self.opts.mode,
            "dtype": self.dtype_name,
            "dtype_policy": self.opts.dtype,
            "eps": self.tol.eps,
            "atol": self.tol.atol,
            "rtol": self.tol.rtol,
            "seed": self.opts.seed,
            "rng": self.opts.rng,
            "hints": tuple(self.hints),
            "notes": tuple(self.notes),
        }

    def prepare_rng(self) -> None:
        """Before each evaluation: the same RNG state every time under ``rng="replay"``."""
        if self.opts.rng == "replay":
            seed_everything(self.opts.seed)

    def run(self) -> R:
        """Run the check in its scope; never raises on a wrong gradient."""
        start = time.perf_counter()
        kept = len(self.notes), len(self.hints)
        try:
            result = self._scoped()
        except RuntimeError as exc:
            # a float32 target fn closes over, under dtype="float64": some backward
            # formulas do not promote (torch version dependent); again, with it cast
            found = captures_to_cast(exc, self.opts.dtype, [self.fn], self.name)
            del self.notes[kept[0] :], self.hints[kept[1] :]
            with cast_to_float64(found, self.notes):
                result = raising_named_dtype_errors(self._scoped, self.opts.dtype)
        return finish(result, start, self.subject)

    def _scoped(self) -> R:
        with check_scope(self.preserve, self.opts.seed) as switched:
            return self._run(switched)

    def _run(self, tf32_switched: list[str]) -> R:
        raise NotImplementedError
