"""Hypothesis strategies for property tests of gradients.

Nouns for what they generate, as in ``hypothesis.extra.numpy``: :func:`shapes`,
:func:`floating_dtypes`, :func:`tensors`, :func:`differentiable_tensors` and
:func:`sequential_modules`. After the essential arguments everything is
keyword-only; an argument may be a value or a strategy.

Values come from NumPy arrays drawn by ``hypothesis.extra.numpy.arrays`` and are
*well-conditioned* by default: away from zero (the kink of ``abs``/``relu``, the
pole of ``1/x``, the edge of ``log``/``sqrt``) and distinct (no ties for
``max``/``sort``), so that a failing check means a wrong gradient rather than a
point where none exists. ``elements=`` replaces that with any float strategy.

Examples:
    >>> import torch
    >>> from hypothesis import given
    >>> import gradcheck_kit as gk
    >>> from gradcheck_kit import strategies as gks
    >>> @given(x=gks.differentiable_tensors(shape=gks.shapes(max_dims=2, max_side=4)))
    ... def test_tanh(x):
    ...     gk.assert_gradients_close(torch.tanh, x)
    >>> test_tanh()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import strategies as st
from torch import nn

from gradcheck_kit._src.errors import InvalidArgument

__all__ = [
    "shapes",
    "floating_dtypes",
    "tensors",
    "differentiable_tensors",
    "sequential_modules",
]

T = TypeVar("T")

_NUMPY_DTYPES: dict[torch.dtype, type[np.floating[Any]]] = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
}
_SIZES: dict[int, torch.dtype] = {16: torch.float16, 32: torch.float32, 64: torch.float64}
# Smooth activations only: a kink inside the finite-difference step is not a wrong gradient.
SMOOTH_ACTIVATIONS: tuple[Callable[[], nn.Module], ...] = (
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.GELU,
)


def _as_strategy(value: T | st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


def _check_int(value: object, name: str, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be an int.")
    if value < minimum:
        raise InvalidArgument(f"{name}={value!r} must be >= {minimum}.")


def _check_order(low: float, high: float, low_name: str, high_name: str) -> None:
    if low > high:
        raise InvalidArgument(f"{low_name}={low!r} is larger than {high_name}={high!r}.")


def shapes(
    *,
    min_dims: int = 1,
    max_dims: int | None = None,
    min_side: int = 1,
    max_side: int | None = None,
) -> st.SearchStrategy[tuple[int, ...]]:
    """Tensor shapes, kept small: a full Jacobian grows with the square of the size.

    Args:
        min_dims: fewest dimensions (0 gives scalars).
        max_dims: most dimensions; default ``min_dims + 2``.
        min_side: smallest size of a dimension (at least 1: an empty tensor has no
            gradient to check).
        max_side: largest size of a dimension; default ``min_side + 4``.

    Returns:
        A strategy of shape tuples.

    Examples:
        >>> s = shapes(min_dims=2, max_dims=2, max_side=3)
        >>> len(s.example())
        2
    """
    _check_int(min_dims, "min_dims", minimum=0)
    _check_int(min_side, "min_side", minimum=1)
    max_dims = min_dims + 2 if max_dims is None else max_dims
    max_side = min_side + 4 if max_side is None else max_side
    _check_int(max_dims, "max_dims", minimum=0)
    _check_int(max_side, "max_side", minimum=1)
    _check_order(min_dims, max_dims, "min_dims", "max_dims")
    _check_order(min_side, max_side, "min_side", "max_side")
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )


def floating_dtypes(*, sizes: int | Sequence[int] = (32, 64)) -> st.SearchStrategy[torch.dtype]:
    """Floating torch dtypes by bit size (16, 32, 64).

    Args:
        sizes: one size or several; float16 is left out by default because few CPU
            kernels have half-precision gradients.

    Returns:
        A strategy of ``torch.float16`` / ``torch.float32`` / ``torch.float64``.

    Examples:
        >>> floating_dtypes(sizes=64).example()
        torch.float64
    """
    chosen = (sizes,) if isinstance(sizes, int) else tuple(sizes)
    if not chosen:
        raise InvalidArgument("sizes=() is empty; pick some of 16, 32, 64.")
    unknown = [s for s in chosen if s not in _SIZES]
    if unknown:
        raise InvalidArgument(f"sizes={sizes!r} holds {unknown}; floating sizes are 16, 32, 64.")
    return st.sampled_from([_SIZES[s] for s in chosen])


def _well_conditioned(
    dtype: torch.dtype, min_value: float, max_value: float, min_magnitude: float
) -> st.SearchStrategy[float]:
    width: Literal[16, 32, 64] = (
        16 if dtype == torch.float16 else 32 if dtype == torch.float32 else 64
    )

    def floats(low: float, high: float) -> st.SearchStrategy[float]:
        # finite, normal numbers of the dtype's width between the bounds
        return st.floats(
            low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width
        )

    parts = []
    if max_value >= min_magnitude and max_value > 0:
        parts.append(floats(max(min_value, min_magnitude), max_value))
    if min_value <= -min_magnitude and min_value < 0:
        parts.append(floats(min_value, min(max_value, -min_magnitude)))
    if not parts:
        raise InvalidArgument(
            f"no value in [{min_value!r}, {max_value!r}] is at least min_magnitude="
            f"{min_magnitude!r} away from zero; widen the range or lower min_magnitude."
        )
    return st.one_of(*parts)


def tensors(
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] = torch.float64,
    shape: int | tuple[int, ...] | st.SearchStrategy[tuple[int, ...]] | None = None,
    *,
    elements: st.SearchStrategy[float] | None = None,
    min_value: float = -2.0,
    max_value: float = 2.0,
    min_magnitude: float = 0.1,
    distinct: bool = True,
    requires_grad: bool = False,
) -> st.SearchStrategy[torch.Tensor]:
    """Well-conditioned floating tensors (CPU), drawn through NumPy arrays.

    Args:
        dtype: a floating torch dtype, or a strategy of them (see :func:`floating_dtypes`).
        shape: an int, a tuple, or a strategy (default :func:`shapes`).
        elements: a float strategy for the values; replaces the next four arguments.
        min_value: smallest value.
        max_value: largest value.
        min_magnitude: every value has ``|x| >= min_magnitude`` (0 allows zero).
        distinct: no two values equal (ties make ``max``, ``sort``, ``median``
            non-differentiable).
        requires_grad: return leaf tensors that require grad.

    Returns:
        A strategy of tensors; each draw is a fresh tensor that shares no memory.

    Examples:
        >>> x = tensors(torch.float32, (2, 3), min_magnitude=0.5).example()
        >>> x.shape, x.dtype, bool((x.abs() >= 0.5).all())
        (torch.Size([2, 3]), torch.float32, True)
    """
    if elements is None:
        if not (math.isfinite(min_value) and math.isfinite(max_value)):
            raise InvalidArgument(
                f"min_value={min_value!r} and max_value={max_value!r} must be finite."
            )
        _check_order(min_value, max_value, "min_value", "max_value")
        if min_magnitude < 0:
            raise InvalidArgument(f"min_magnitude={min_magnitude!r} must be >= 0.")
        _well_conditioned(torch.float64, min_value, max_value, min_magnitude)  # validates now
    shape_strategy: st.SearchStrategy[tuple[int, ...]]
    if shape is None:
        shape_strategy = shapes()
    elif isinstance(shape, st.SearchStrategy):
        shape_strategy = shape
    else:
        shape_strategy = st.just((shape,) if isinstance(shape, int) else tuple(shape))

    def build(dt: torch.dtype) -> st.SearchStrategy[torch.Tensor]:
        if dt not in _NUMPY_DTYPES:
            raise InvalidArgument(
                f"dtype={dt!r} is not a floating dtype NumPy can hold; use "
                f"torch.float16, torch.float32 or torch.float64."
            )
        values = (
            elements
            if elements is not None
            else _well_conditioned(dt, min_value, max_value, min_magnitude)
        )
        arrays = hnp.arrays(_NUMPY_DTYPES[dt], shape_strategy, elements=values, unique=distinct)
        return arrays.map(
            lambda a: torch.from_numpy(np.array(a, copy=True)).requires_grad_(requires_grad)
        )

    return _as_strategy(dtype).flatmap(build)


def differentiable_tensors(
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] = torch.float64,
    shape: int | tuple[int, ...] | st.SearchStrategy[tuple[int, ...]] | None = None,
    **kwargs: Any,
) -> st.SearchStrategy[torch.Tensor]:
    """:func:`tensors` that require grad: ready to pass to a gradient check.

    Examples:
        >>> differentiable_tensors(shape=3).example().requires_grad
        True
    """
    return tensors(dtype, shape, requires_grad=True, **kwargs)


def sequential_modules(
    in_features: int,
    *,
    out_features: int | None = None,
    min_layers: int = 1,
    max_layers: int = 3,
    min_width: int = 1,
    max_width: int = 8,
    activations: Sequence[Callable[[], nn.Module]] = SMOOTH_ACTIVATIONS,
    dtype: torch.dtype = torch.float64,
) -> st.SearchStrategy[nn.Sequential]:
    """Small ``nn.Sequential`` MLPs: Linear layers with smooth activations between.

    Weights come from a seed hypothesis draws, so a failing example replays exactly.

    Args:
        in_features: size of the input's last dimension.
        out_features: size of the output's last dimension; drawn like a width if None.
        min_layers: fewest Linear layers.
        max_layers: most Linear layers.
        min_width: smallest hidden width.
        max_width: largest hidden width.
        activations: zero-argument factories of activation modules to choose from.
        dtype: the parameters' dtype.

    Returns:
        A strategy of freshly built modules (in training mode).

    Examples:
        >>> model = sequential_modules(3, out_features=2).example()
        >>> model(torch.ones(4, 3, dtype=torch.float64)).shape
        torch.Size([4, 2])
    """
    _check_int(in_features, "in_features", minimum=1)
    if out_features is not None:
        _check_int(out_features, "out_features", minimum=1)
    _check_int(min_layers, "min_layers", minimum=1)
    _check_int(max_layers, "max_layers", minimum=1)
    _check_int(min_width, "min_width", minimum=1)
    _check_int(max_width, "max_width", minimum=1)
    _check_order(min_layers, max_layers, "min_layers", "max_layers")
    _check_order(min_width, max_width, "min_width", "max_width")
    if not activations:
        raise InvalidArgument("activations=() is empty; pass at least one factory, e.g. nn.Tanh.")
    widths = st.integers(min_width, max_width)

    @st.composite
    def build(draw: st.DrawFn) -> nn.Sequential:
        n_layers = draw(st.integers(min_layers, max_layers))
        sizes = [in_features]
        sizes += [draw(widths) for _ in range(n_layers - 1)]
        sizes.append(out_features if out_features is not None else draw(widths))
        seed = draw(st.integers(0, 2**31 - 1))
        layers: list[nn.Module] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for k in range(n_layers):
                layers.append(nn.Linear(sizes[k], sizes[k + 1], dtype=dtype))
                if k < n_layers - 1:
                    layers.append(draw(st.sampled_from(list(activations)))())
        return nn.Sequential(*layers)

    return build()
