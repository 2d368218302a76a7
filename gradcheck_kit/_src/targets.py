"""Gradient-check targets: factories named ``package.module:factory`` that say what to check.

A *factory* is a zero-argument callable returning a :class:`CheckTarget`, a
``(fn_or_module, inputs)`` pair, or a list of those. The pytest plugin turns each
one into a test item (``--gradcheck-targets``, ``@gradcheck_kit.target`` in test
files) and ``gradcheck-kit check`` runs them from a shell. Names are resolved
with :mod:`importlib` and attribute lookup only, never ``eval``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

import torch
from torch import nn

from .errors import InvalidArgument
from .gradcheck import check_gradients, check_module_gradients
from .results import GradcheckResult
from .target_mark import TARGET_ATTRIBUTE, target_spec

__all__ = [
    "CheckTarget",
    "TargetError",
    "target",
    "is_target",
    "target_options",
    "resolve_target",
    "load_targets",
    "run_target",
]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = TARGET_ATTRIBUTE
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# Options a target (or its decorator) may fix; the session's options fill the rest.
_OPTION_NAMES = frozenset(
    {
        "mode",
        "dtype",
        "eps",
        "atol",
        "rtol",
        "seed",
        "rng",
        "n_probes",
        "max_memory",
        "max_jacobian_bytes",
    }
)
_MODULE_OPTION_NAMES = _OPTION_NAMES | {"loss_fn", "wrt"}


class TargetError(InvalidArgument):
    """A target could not be resolved or built: bad name, missing module, factory error.

    Examples:
        >>> import gradcheck_kit as gk
        >>> from gradcheck_kit.errors import TargetError
        >>> try:
        ...     gk.resolve_target("no_such_module_xyz:factory")
        ... except TargetError as exc:
        ...     print(str(exc).split(":")[0])
        cannot import module 'no_such_module_xyz' of target 'no_such_module_xyz
    """

    # Named where users import it from, in tracebacks too (like the classes of errors.py).
    __module__ = "gradcheck_kit.errors"


@dataclasses.dataclass(frozen=True)
class CheckTarget:
    """One thing to check: a function or a module, its inputs, and options for the check.

    Args:
        subject: a callable taking the inputs (checked with ``check_gradients``) or an
            ``nn.Module`` (checked with ``check_module_gradients``).
        inputs: what to call it with: a tensor, a tuple of arguments or a dict.
        name: shown in test ids and summaries; the subject's name by default.
        options: keyword options of the check (``mode``, ``atol``, ``wrt`` ...).

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> t = gk.CheckTarget(torch.tanh, torch.ones(3, dtype=torch.float64, requires_grad=True))
        >>> t.label
        'tanh'
    """

    subject: Any
    inputs: Any
    name: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        """The name used in test ids: ``name``, else the subject's name or class."""
        if self.name:
            return self.name
        if isinstance(self.subject, nn.Module):
            return type(self.subject).__name__
        return str(getattr(self.subject, "__name__", type(self.subject).__name__))


@overload
def target(factory: F, /) -> F: ...


@overload
def target(*, name: str | None = None, **options: Any) -> Callable[[F], F]: ...


def target(factory: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
    """Mark a factory as a gradient-check target (in a test file or any module).

    In a test file collected with ``pytest --gradcheck`` each marked factory becomes
    one test item per thing it returns; without the flag the items are skipped.
    Options given here apply to every check the factory returns.

    Args:
        factory: the zero-argument function (when used as ``@target``).
        name: a name for the item instead of the factory's.
        **options: check options (``mode``, ``dtype``, ``atol``, ``rtol``, ``wrt`` ...).

    Returns:
        The factory itself, marked.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> @gk.target(mode="full")
        ... def tanh_target():
        ...     return torch.tanh, torch.randn(4, dtype=torch.float64, requires_grad=True)
        >>> fn, x = tanh_target()  # still a plain factory when called
        >>> fn is torch.tanh and x.shape == (4,)
        True
    """
    _check_options(options, _MODULE_OPTION_NAMES, "gradcheck_kit.target")

    def mark(fn: F) -> F:
        if not callable(fn):
            raise InvalidArgument(f"@gradcheck_kit.target decorates a function, not {fn!r}.")
        setattr(fn, _MARK, {"name": name, "options": dict(options)})
        return fn

    return mark(factory) if factory is not None else mark


def is_target(obj: object) -> bool:
    """Whether ``obj`` was marked with :func:`target`.

    Examples:
        >>> is_target(print)
        False
    """
    return target_spec(obj) is not None


def target_options(obj: object) -> dict[str, Any]:
    """The options given to :func:`target` for ``obj`` (empty when it is not marked).

    Examples:
        >>> target_options(print)
        {}
    """
    spec = target_spec(obj)
    return dict(spec["options"]) if spec is not None else {}


def _check_options(
    options: Mapping[str, Any],
    allowed: frozenset[str],
    where: str,
    error: type[InvalidArgument] = InvalidArgument,
) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise error(
            f"{where} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(allowed))}."
        )


def resolve_target(spec: str) -> Callable[[], Any]:
    """Find the factory named ``package.module:attribute`` (the attribute may be dotted).

    Args:
        spec: e.g. ``"myproject.grad_targets:mlp"`` or ``"pkg.mod:Suite.factory"``.

    Returns:
        The callable factory.

    Raises:
        TargetError: malformed name, module that cannot be imported (with the import
            error), missing attribute, or an attribute that is not callable.

    Examples:
        >>> resolve_target("math:sqrt").__name__
        'sqrt'
    """
    if not isinstance(spec, str) or not _SPEC.match(spec.strip()):
        raise TargetError(
            f"target {spec!r} is not of the form 'package.module:factory' (a module path, "
            f"a colon, then the factory's name)."
        )
    module_name, _, attr_path = spec.strip().partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise TargetError(
            f"cannot import module {module_name!r} of target {spec!r}: "
            f"{type(exc).__name__}: {exc}. Is the package installed or on sys.path "
            f"(pytest's rootdir, 'pythonpath' ini option)?"
        ) from exc
    walked = module_name
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise TargetError(
                f"target {spec!r}: {walked!r} has no attribute {part!r}. "
                f"Names there: {', '.join(_public_names(obj)) or '(none)'}."
            )
        obj = getattr(obj, part)
        walked = f"{walked}.{part}" if walked != module_name else f"{module_name}:{part}"
    if not callable(obj):
        raise TargetError(
            f"target {spec!r} is a {type(obj).__name__}, not a factory; point it at a "
            f"function that returns what to check."
        )
    return obj  # type: ignore[no-any-return]


def _public_names(obj: Any, limit: int = 12) -> list[str]:
    names = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
    return names[:limit]


def load_targets(factory: Callable[[], Any], *, label: str | None = None) -> list[CheckTarget]:
    """Call ``factory`` and normalise what it returns into a list of :class:`CheckTarget`.

    Accepted: a ``CheckTarget``; a ``(fn_or_module, inputs)`` or
    ``(fn_or_module, inputs, options_dict)`` tuple; a list or tuple of those.

    Args:
        factory: the zero-argument factory.
        label: names the factory in error messages (default: its qualified name).

    Returns:
        One target per thing to check, with the decorator's options merged under
        each target's own.

    Raises:
        TargetError: the factory raised (chained), or returned something else.

    Examples:
        >>> import torch
        >>> ts = load_targets(lambda: (torch.sin, torch.ones(2, dtype=torch.float64)))
        >>> [t.label for t in ts]
        ['sin']
    """
    where = str(label or getattr(factory, "__qualname__", None) or repr(factory))
    try:
        made = factory()
    except Exception as exc:
        raise TargetError(f"target factory {where} raised {type(exc).__name__}: {exc}") from exc
    defaults = target_options(factory)
    spec = target_spec(factory)
    name = spec["name"] if spec is not None else None
    items = list(_items(made, where))
    if not items:
        raise TargetError(f"target factory {where} returned nothing to check ({made!r}).")
    targets = []
    for i, item in enumerate(items):
        options = {**defaults, **item.options}
        allowed = _MODULE_OPTION_NAMES if isinstance(item.subject, nn.Module) else _OPTION_NAMES
        _check_options(options, allowed, f"target {where}", TargetError)
        item_name = item.name or (name if len(items) == 1 else None)
        if item_name is None and name is not None:
            item_name = f"{name}[{i}]"
        targets.append(dataclasses.replace(item, name=item_name, options=options))
    return targets


def _items(made: Any, where: str) -> Iterator[CheckTarget]:
    if isinstance(made, CheckTarget):
        yield made
    elif isinstance(made, tuple) and len(made) in (2, 3) and _is_subject(made[0]):
        options = made[2] if len(made) == 3 else {}
        if not isinstance(options, Mapping):
            raise TargetError(
                f"target factory {where} returned a 3-tuple whose last item is a "
                f"{type(options).__name__}; it must be a dict of check options."
            )
        yield CheckTarget(made[0], made[1], options=dict(options))
    elif isinstance(made, (list, tuple)):
        for item in made:
            yield from _items(item, where)
    else:
        raise TargetError(
            f"target factory {where} returned a {type(made).__name__}; return a "
            f"gradcheck_kit.CheckTarget, a (fn_or_module, inputs) tuple, or a list of them."
        )


def _is_subject(obj: object) -> bool:
    return isinstance(obj, nn.Module) or (callable(obj) and not isinstance(obj, torch.Tensor))


def run_target(item: CheckTarget, **defaults: Any) -> GradcheckResult:
    """Check one target; ``defaults`` (the session's options) yield to the target's own.

    Returns:
        The check's result (never raises on a mismatch).

    Examples:
        >>> import torch
        >>> t = CheckTarget(torch.sin, torch.ones(3, dtype=torch.float64, requires_grad=True))
        >>> run_target(t, mode="full").passed
        True
    """
    options = {**{k: v for k, v in defaults.items() if v is not None}, **item.options}
    if isinstance(item.subject, nn.Module):
        return check_module_gradients(item.subject, item.inputs, **options)
    options = {k: v for k, v in options.items() if k in _OPTION_NAMES}
    return check_gradients(item.subject, item.inputs, **options)


def describe(items: Sequence[CheckTarget]) -> list[str]:
    """The labels of ``items``, made unique with ``[i]`` suffixes where they repeat."""
    labels = [t.label for t in items]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        if labels.count(label) > 1:
            k = seen.get(label, 0)
            seen[label] = k + 1
            out.append(f"{label}[{k}]")
        else:
            out.append(label)
    return out
