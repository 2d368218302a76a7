"""The options every gradient check takes, validated once, and their defaults."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Final, Literal

from ..errors import InvalidArgument
from ..validation import check_choice, check_int, check_nonnegative, check_positive

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
    "CheckOptions",
]

Mode = Literal["auto", "full", "fast"]
DtypePolicy = Literal["float64", "native"]
RngPolicy = Literal["fixed", "replay"]
EmptyPolicy = Literal["pass", "error"]

MODES: Final = ("auto", "full", "fast")
DTYPES: Final = ("float64", "native")
RNGS: Final = ("fixed", "replay")
EMPTIES: Final = ("pass", "error")

# What a check may hold beyond one plain forward and backward pass of fn: batches of
# evaluations, Jacobian blocks. 1 GiB fits the smallest hosted CI runners with room
# for the test process itself.
DEFAULT_MAX_MEMORY: Final = 1 << 30


@dataclass(frozen=True)
class CheckOptions:
    """Validated options shared by every gradient check.

    Examples:
        >>> CheckOptions.create(mode="fast").max_memory == DEFAULT_MAX_MEMORY
        True
    """

    mode: str = "auto"
    dtype: str = "float64"
    eps: float | None = None
    atol: float | None = None
    rtol: float | None = None
    seed: int = 0
    rng: str = "fixed"
    n_probes: int | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    empty: str = "pass"
    # Set only by the drop-in for torch.autograd.gradcheck: torch's absolute step, and
    # how far two evaluations at the same point may differ (torch's nondet_tol).
    eps_absolute: bool = False
    nondet_tol: float = 0.0

    @classmethod
    def create(
        cls,
        *,
        mode: str = "auto",
        dtype: str = "float64",
        eps: float | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        seed: int = 0,
        rng: str = "fixed",
        n_probes: int | None = None,
        max_memory: int = DEFAULT_MAX_MEMORY,
        max_jacobian_bytes: int | None = None,
        empty: str = "pass",
        eps_absolute: bool = False,
        nondet_tol: float = 0.0,
    ) -> CheckOptions:
        """Validate and build; ``max_jacobian_bytes`` is the old name of ``max_memory``.

        ``eps_absolute`` and ``nondet_tol`` serve the drop-in for
        ``torch.autograd.gradcheck`` (an absolute step; outputs of two calls at the
        same point may differ by ``nondet_tol``).

        Raises:
            InvalidArgument: a value out of range, naming the argument.
        """
        check_choice(mode, MODES, "mode")
        check_choice(dtype, DTYPES, "dtype")
        check_choice(rng, RNGS, "rng")
        check_choice(empty, EMPTIES, "empty")
        check_positive(eps, "eps")
        check_nonnegative(atol, "atol")
        check_nonnegative(rtol, "rtol")
        check_nonnegative(nondet_tol, "nondet_tol")
        check_int(seed, "seed", min_value=0)
        if n_probes is not None:
            check_int(n_probes, "n_probes", min_value=1)
        check_int(max_memory, "max_memory", min_value=1)
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
        return cls(
            mode,
            dtype,
            eps,
            atol,
            rtol,
            seed,
            rng,
            n_probes,
            max_memory,
            empty,
            bool(eps_absolute),
            float(nondet_tol),
        )
