"""The options every check takes: declared once, typed for mypy, validated once.

The keyword options are ``TypedDict`` s, one nested in the next as the checks
take more of them; every ``check_*`` and ``assert_*`` takes its set as
``**options: Unpack[...]``, so mypy catches ``mode="fulll"`` or ``atoll=`` at
every entry point, and :func:`~..validation.check_keywords` catches them in
untyped code. :class:`CheckOptions` is the validated value the engine reads,
with the defaults.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, get_args

from ..errors import InvalidArgument
from ..validation import check_choice, check_int, check_nonnegative, check_positive, check_type

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Mode",
    "DtypePolicy",
    "RngPolicy",
    "EmptyPolicy",
    "MODES",
    "DTYPES",
    "RNGS",
    "EMPTIES",
    "DEFAULT_MAX_MEMORY",
    "ToleranceOptions",
    "AuditOptions",
    "ManualOptions",
    "GradientOptions",
    "EngineOptions",
    "CheckOptions",
]

Mode = Literal["auto", "full", "fast"]
DtypePolicy = Literal["float64", "native"]
RngPolicy = Literal["fixed", "replay"]
EmptyPolicy = Literal["pass", "error"]

MODES: Final = get_args(Mode)
DTYPES: Final = get_args(DtypePolicy)
RNGS: Final = get_args(RngPolicy)
EMPTIES: Final = get_args(EmptyPolicy)

# What a check may hold beyond one plain forward and backward pass of fn: batches of
# evaluations, Jacobian blocks. 1 GiB fits the smallest hosted CI runners with room
# for the test process itself.
DEFAULT_MAX_MEMORY: Final = 1 << 30


class ToleranceOptions(TypedDict, total=False):
    """Tolerances, seed and label: what ``check_same_training`` takes, and every check.

    Examples:
        >>> options: ToleranceOptions = {"atol": 1e-6, "seed": 3}
        >>> sorted(ToleranceOptions.__optional_keys__)
        ['atol', 'name', 'rtol', 'seed']
    """

    atol: float | None
    rtol: float | None
    seed: int
    name: str | None


class AuditOptions(ToleranceOptions, total=False):
    """Plus mode, dtype policy and step: what ``check_autograd_function`` takes.

    Examples:
        >>> options: AuditOptions = {"mode": "full", "dtype": "native"}
        >>> CheckOptions.create(**options).mode
        'full'
    """

    mode: Mode
    dtype: DtypePolicy
    eps: float | None


class ManualOptions(AuditOptions, total=False):
    """Plus RNG policy, probes and empty policy: what ``check_matches_manual`` takes.

    Examples:
        >>> sorted(ManualOptions.__optional_keys__ - AuditOptions.__optional_keys__)
        ['empty', 'n_probes', 'rng']
    """

    rng: RngPolicy
    n_probes: int | None
    empty: EmptyPolicy


class GradientOptions(ManualOptions, total=False):
    """Plus the memory budget: what ``check_gradients`` and ``check_second_order`` take.

    Examples:
        >>> len(GradientOptions.__optional_keys__)
        12
    """

    max_memory: int
    # the old name of max_memory, deprecated
    max_jacobian_bytes: int | None


class EngineOptions(GradientOptions, total=False):
    """Plus what only the drop-in for ``torch.autograd.gradcheck`` sets.

    ``eps_absolute``: torch's absolute step; ``nondet_tol``: how far two
    evaluations at the same point may differ (torch's ``nondet_tol``).

    Examples:
        >>> {"eps_absolute", "nondet_tol"} <= EngineOptions.__optional_keys__
        True
    """

    eps_absolute: bool
    nondet_tol: float


@dataclass(frozen=True)
class CheckOptions:
    """Validated options shared by every gradient check, with their defaults.

    Examples:
        >>> CheckOptions.create(mode="fast").max_memory == DEFAULT_MAX_MEMORY
        True
    """

    mode: Mode = "auto"
    dtype: DtypePolicy = "float64"
    eps: float | None = None
    atol: float | None = None
    rtol: float | None = None
    seed: int = 0
    rng: RngPolicy = "fixed"
    n_probes: int | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    empty: EmptyPolicy = "pass"
    eps_absolute: bool = False
    nondet_tol: float = 0.0
    name: str | None = None

    @classmethod
    def create(cls, **options: Unpack[EngineOptions]) -> CheckOptions:
        """Validate and build; ``max_jacobian_bytes`` is the old name of ``max_memory``.

        Raises:
            InvalidArgument: a value out of range, naming the argument.

        Examples:
            >>> CheckOptions.create(atol=float("nan"))
            Traceback (most recent call last):
            ...
            gradcheck_kit.errors.InvalidArgument: atol=nan must be >= 0.
        """
        given: dict[str, Any] = dict(options)
        max_jacobian_bytes = given.pop("max_jacobian_bytes", None)
        opts = cls(**given)
        check_choice(opts.mode, MODES, "mode")
        check_choice(opts.dtype, DTYPES, "dtype")
        check_choice(opts.rng, RNGS, "rng")
        check_choice(opts.empty, EMPTIES, "empty")
        check_positive(opts.eps, "eps")
        check_nonnegative(opts.atol, "atol")
        check_nonnegative(opts.rtol, "rtol")
        check_nonnegative(opts.nondet_tol, "nondet_tol", allow_none=False)
        check_int(opts.seed, "seed", min_value=0)
        if opts.n_probes is not None:
            check_int(opts.n_probes, "n_probes", min_value=1)
        check_int(opts.max_memory, "max_memory", min_value=1)
        check_type((str, type(None)), opts.name, "name")
        max_memory = opts.max_memory
        if max_jacobian_bytes is not None:
            check_int(max_jacobian_bytes, "max_jacobian_bytes", min_value=1)
            if max_memory not in (DEFAULT_MAX_MEMORY, max_jacobian_bytes):
                raise InvalidArgument(
                    f"max_jacobian_bytes={max_jacobian_bytes:,} and max_memory={max_memory:,} "
                    f"disagree; max_jacobian_bytes is the old name of max_memory: pass only "
                    f"max_memory."
                )
            warnings.warn(
                "max_jacobian_bytes is now max_memory, the budget of the whole check "
                "(batches of evaluations included, not only the Jacobian); pass max_memory.",
                DeprecationWarning,
                stacklevel=4,
            )
            max_memory = max_jacobian_bytes
        return dataclasses.replace(
            opts,
            max_memory=max_memory,
            eps_absolute=bool(opts.eps_absolute),
            nondet_tol=float(opts.nondet_tol),
        )
