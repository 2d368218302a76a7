"""Route torch.autograd.gradcheck and gradgradcheck to the drop-ins, for as long as asked.

:class:`TorchRouting` replaces torch's two functions by thin wrappers wherever
they are bound: as attributes of ``torch.autograd`` and of the module
``torch.autograd.gradcheck``, and in the globals of every module already
imported (``from torch.autograd import gradcheck`` in a conftest or a helper).
Code imported later finds the wrappers through those attributes. A project's
own wrapper that calls ``torch.autograd.gradcheck(...)`` is caught without
anything done for it. :meth:`TorchRouting.restore` puts torch's functions back
everywhere, also where a module bound a wrapper while routing was on.

Two modes:

* ``"route"``: the drop-in decides (returns True, or raises
  :class:`~gradcheck_kit.errors.TorchGradcheckError`). A call the drop-in cannot take
  (sparse inputs: :class:`~gradcheck_kit.errors.UnsupportedInputError`) is handed to
  torch's own function and counted as a fallback.
* ``"compare"``: torch's own function runs first, then the drop-in; torch's
  outcome is the call's outcome (the suite runs as it did), the record carries
  both verdicts and times.

Each routed result is published with its :class:`~gradcheck_kit.results.RoutedCall`.
Knows nothing of pytest.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import os
import sys
import time
import types
from collections.abc import Callable
from typing import Any, Literal

from . import recording
from .errors import UnsupportedInputError
from .results import GradcheckResult, RoutedCall, TorchVerdict

__all__ = ["MODES", "Mode", "TorchRouting"]

Mode = Literal["route", "compare"]
MODES: tuple[Mode, ...] = ("route", "compare")
_NAMES = ("gradcheck", "gradgradcheck")
_Verdict = Literal["passed", "failed", "error"]

# Set while torch's own function runs: its gradgradcheck calls gradcheck through the
# module's globals, which hold a wrapper; that inner call must stay torch's.
_in_torch: contextvars.ContextVar[bool] = contextvars.ContextVar("in_torch", default=False)


class TorchRouting:
    """Replace torch's gradcheck and gradgradcheck by routed wrappers until :meth:`restore`.

    Args:
        mode: ``"route"`` (the drop-in decides) or ``"compare"`` (both run,
            torch decides).

    Attributes:
        calls: One plain dict per routed call: ``function``, ``agree`` (compare
            mode), ``torch_s``, ``ours_s``, ``fallback`` (why torch's own ran).

    Examples:
        >>> import torch
        >>> routing = TorchRouting("route").install()
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> torch.autograd.gradcheck(torch.sin, (x,))
        True
        >>> routing.restore()
        >>> len(routing.calls), torch.autograd.gradcheck is routing.originals["gradcheck"]
        (1, True)
    """

    def __init__(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} must be one of {', '.join(MODES)}.")
        self.mode: Mode = mode
        self.calls: list[dict[str, Any]] = []
        self.originals: dict[str, Callable[..., Any]] = {}
        self._wrappers: dict[str, Callable[..., Any]] = {}
        self.active = False

    def install(self) -> TorchRouting:
        """Put the wrappers in place (idempotent); returns ``self``."""
        if self.active:
            return self
        import torch.autograd  # noqa: F401  (makes sys.modules["torch.autograd.gradcheck"])

        from . import dropin

        module = sys.modules["torch.autograd.gradcheck"]
        for name in _NAMES:
            original = getattr(module, name)
            # A routing left behind by an earlier run in this process: start from torch's.
            original = getattr(original, "__gradcheck_kit_original__", original)
            self.originals[name] = original
            self._wrappers[name] = self._wrapper(name, original, getattr(dropin, name))
        self.active = True
        self._swap(self.originals, self._wrappers)
        return self

    def restore(self) -> None:
        """Put torch's functions back wherever a wrapper is bound; safe to call twice."""
        if not self.active:
            return
        self.active = False
        self._swap(self._wrappers, self.originals)

    def _swap(self, old: dict[str, Callable[..., Any]], new: dict[str, Callable[..., Any]]) -> None:
        # Identity, not name: `from torch.autograd import gradcheck as gc` is caught too.
        replace = {id(old[name]): (old[name], new[name]) for name in _NAMES}
        for module in list(sys.modules.values()):
            if not isinstance(module, types.ModuleType):
                continue
            try:
                namespace = vars(module)
            except TypeError:
                continue
            for key, value in list(namespace.items()):
                pair = replace.get(id(value))
                if pair is not None and value is pair[0]:
                    setattr(module, key, pair[1])

    def _wrapper(
        self, name: str, original: Callable[..., Any], ours: Callable[..., bool]
    ) -> Callable[..., Any]:
        function = f"torch.autograd.{name}"

        @functools.wraps(original)
        def routed(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            if not self.active or _in_torch.get():
                return original(*args, **kwargs)
            call = _Call(function, _caller(sys._getframe(1)), self.mode)
            outcome = self._route(call, original, ours, args, kwargs)
            if outcome.error is not None:
                raise outcome.error
            return outcome.value

        routed.__gradcheck_kit_original__ = original  # type: ignore[attr-defined]
        return routed

    def _route(
        self,
        call: _Call,
        original: Callable[..., Any],
        ours: Callable[..., bool],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _Outcome:
        theirs: _Outcome | None = None
        if self.mode == "compare":
            theirs = _run_torch_explained(original, args, kwargs)
        mine, results = _run_dropin(ours, args, kwargs)
        tally: dict[str, Any] = {
            "function": call.function,
            "ours_s": mine.seconds,
            "torch_s": None if theirs is None else theirs.seconds,
            "agree": None,
            "fallback": None,
        }
        if isinstance(mine.error, UnsupportedInputError) and theirs is None:
            # Route mode: a call the drop-in cannot take stays torch's, so the suite runs on.
            tally["fallback"] = _first_line(mine.error)
            self.calls.append(tally)
            return _run_torch(original, args, kwargs)
        routed = RoutedCall(
            function=call.function,
            caller=call.caller,
            mode=call.mode,
            seconds=round(mine.seconds, 6),
        )
        if theirs is not None:
            ours_verdict = mine.verdict(results)
            agree = ours_verdict == theirs.verdict(())
            tally["agree"] = agree
            routed = dataclasses.replace(
                routed,
                torch=TorchVerdict(
                    verdict=theirs.verdict(()),
                    seconds=round(theirs.seconds, 6),
                    error=None if theirs.reason is None else _first_line(theirs.reason),
                ),
                agree=agree,
                disagreement=None if agree else _disagreement(theirs, mine, ours_verdict, results),
            )
        self.calls.append(tally)
        for result in results:
            published = dataclasses.replace(result, routed=routed)
            recording.publish(published)
            # As the drop-in itself does: its verdict was read (raised, or returned).
            _ = published.passed
        return mine if theirs is None else theirs


@dataclasses.dataclass(frozen=True)
class _Call:
    function: str
    caller: str | None
    mode: Mode


@dataclasses.dataclass
class _Outcome:
    """What one checker did: its return value or exception, and its wall time."""

    value: Any
    error: Exception | None
    seconds: float
    # torch's GradcheckError behind a False it returned (raise_exception=False)
    explained: Exception | None = None

    @property
    def reason(self) -> Exception | None:
        """What the checker raised, or would have raised had it been asked to."""
        return self.error if self.error is not None else self.explained

    def verdict(self, results: tuple[GradcheckResult, ...]) -> _Verdict:
        from torch.autograd.gradcheck import GradcheckError

        if results:
            return "passed" if all(r.passed for r in results) else "failed"
        if self.error is None:
            return "passed" if self.value is True else "failed"
        return "failed" if isinstance(self.error, GradcheckError) else "error"


def _run_torch(original: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]) -> _Outcome:
    token = _in_torch.set(True)
    start = time.perf_counter()
    try:
        return _Outcome(original(*args, **kw), None, time.perf_counter() - start)
    except Exception as exc:
        return _Outcome(None, exc, time.perf_counter() - start)
    finally:
        _in_torch.reset(token)


def _run_torch_explained(
    original: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]
) -> _Outcome:
    """Run torch's function; with ``raise_exception=False`` it runs raising, to keep its reason."""
    from torch.autograd.gradcheck import GradcheckError

    try:
        bound = inspect.signature(original).bind(*args, **kw)
    except TypeError:  # torch's own call raises the same TypeError, as it should
        return _run_torch(original, args, kw)
    if bound.arguments.get("raise_exception", True) is not False:
        return _run_torch(original, args, kw)
    bound.arguments["raise_exception"] = True
    outcome = _run_torch(original, bound.args, bound.kwargs)
    if isinstance(outcome.error, GradcheckError):
        # the call asked for False, not an exception
        outcome = _Outcome(False, None, outcome.seconds, explained=outcome.error)
    return outcome


def _run_dropin(
    ours: Callable[..., bool], args: tuple[Any, ...], kw: dict[str, Any]
) -> tuple[_Outcome, tuple[GradcheckResult, ...]]:
    """Run the drop-in, keeping what it publishes: it is published again, with the call."""
    seen: list[Any] = []
    start = time.perf_counter()
    with recording.muted():
        stop = recording.subscribe(seen.append)
        try:
            outcome = _Outcome(ours(*args, **kw), None, 0.0)
        except Exception as exc:
            outcome = _Outcome(None, exc, 0.0)
        finally:
            stop()
    outcome.seconds = time.perf_counter() - start
    return outcome, tuple(r for r in seen if isinstance(r, GradcheckResult))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


def _disagreement(
    theirs: _Outcome, mine: _Outcome, ours_verdict: _Verdict, results: tuple[GradcheckResult, ...]
) -> str:
    """Each checker's verdict with its reason: torch's error line, the drop-in's hint or summary."""
    torch_text = f"torch {theirs.verdict(())}"
    if theirs.reason is not None:
        torch_text += f" ({_first_line(theirs.reason)})"
    ours_text = f"gradcheck_kit {ours_verdict}"
    reason: str | None = None
    for result in results:
        if not result.passed:
            reason = result.hint or _summary_line(result)
            break
    if reason is None and mine.error is not None:
        reason = _first_line(mine.error)
    if reason:
        ours_text += f" ({reason})"
    return f"{torch_text}; {ours_text}"


def _summary_line(result: GradcheckResult) -> str:
    """The first informative line of the summary (after the header): the mismatch count."""
    lines = [line for line in result.summary().splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else (lines[0] if lines else "")


def _torch_folder() -> str:
    import torch

    return os.path.dirname(torch.__file__) + os.sep


def _caller(frame: types.FrameType | None) -> str | None:
    """``file:line`` of the first frame outside torch (its testing helpers call gradcheck too)."""
    torch_folder = _torch_folder()
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(torch_folder):
            return f"{_shown(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _shown(filename: str) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith(os.pardir) else relative
