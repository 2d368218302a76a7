"""The geometry of a heatmap of |analytic − numeric| over one Jacobian block.

Pure numbers, no markup: :func:`heatmap` turns one pair of a gradient record
(``PairResult.to_dict()``) into cells, colours and captions; the template draws
them as an inline SVG. The picture comes from the pair's ``error_map`` (the
whole block, max-pooled) when the checker stored one, else from its ``worst``
entries (fast mode narrows a failure down to single entries), the rest of the
grid then drawn as "not measured".

Rows are output entries, columns input entries (flat, row-major), as in
``ErrorMap``. A transposed gradient shows as errors mirrored across the
diagonal, a partly wrong one as a patch; colour says how large |diff| is (log
scale), red over the allowance, blue within it.

Examples:
    >>> pair = {"output": "y", "input": "x", "output_shape": [3], "input_shape": [3],
    ...         "worst": [{"output_index": [2], "input_index": [0], "abs_error": 1.0,
    ...                    "allowed": 0.01}]}
    >>> hm = heatmap(pair)
    >>> (hm.grid_rows, hm.grid_cols, hm.source), [layer.d for layer in hm.layers]
    ((3, 3, 'worst'), ['M0 2h1v1h-1z'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gradcheck_kit._src.results import ErrorMap

__all__ = ["LEVELS", "Heatmap", "Layer", "entry_error", "heatmap"]

LEVELS = 7
# Light to dark; red for cells over their allowance, blue for cells within it.
_OVER = ("#fcd5c8", "#f9ae94", "#f4825f", "#e4533a", "#c52a1f", "#9b1014", "#67000d")
_WITHIN = ("#eef3f9", "#dbe6f2", "#c3d5ea", "#a5c0de", "#86a8cf", "#6690bf", "#4a76aa")
_NON_FINITE = "#1b1b1b"
_NOT_MEASURED = "#f2f2f2"
# Drawn size: the longer side gets at most this many pixels, a cell 6 to 24 pixels.
_MAX_PIXELS = 288
_MIN_CELL, _MAX_CELL = 6, 24
_STRIP_PIXELS = 18


@dataclass(frozen=True)
class Layer:
    """All the cells of one colour, as one SVG path in cell units (``d``)."""

    fill: str
    d: str


@dataclass(frozen=True)
class Heatmap:
    """What the template needs to draw one heatmap.

    Coordinates are in cells (the SVG's viewBox is ``grid_cols`` x ``grid_rows``);
    ``width``/``height`` are the drawn size in pixels.
    """

    grid_rows: int
    grid_cols: int
    width: int
    height: int
    layers: tuple[Layer, ...]
    unmeasured: str  # path of the whole grid, drawn first, in worst-entries mode
    source: str  # "error_map" (the whole block) or "worst" (its worst entries only)
    rows: int
    cols: int
    row_step: int
    col_step: int
    vmin: float
    vmax: float
    legend: tuple[tuple[str, str], ...]
    title: str
    layout: str = "jacobian"  # or "input": one output entry, cells laid out as the input


def _float(value: Any) -> float:
    """A JSON number, or one of the strings 'inf', '-inf', 'nan' the results write."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _numel(shape: Sequence[Any]) -> int:
    return math.prod(int(n) for n in shape)


def _flat(index: Sequence[Any], shape: Sequence[Any]) -> int:
    flat = 0
    for i, n in zip(index, shape, strict=False):
        flat = flat * int(n) + int(i)
    return flat


# The values an entry may hold, one per way of computing it (gradient: analytic and
# numeric; a hand-written derivative: manual, autograd and numeric).
_SIDES = ("analytic", "manual", "autograd", "numeric")


def entry_error(entry: Mapping[str, Any]) -> float:
    """|diff| of one worst entry: its ``abs_error``, else the spread of its values.

    Examples:
        >>> entry_error({"abs_error": 0.5})
        0.5
        >>> entry_error({"manual": 1.0, "autograd": 2.0, "numeric": 2.0})
        1.0
    """
    if "abs_error" in entry:
        return _float(entry["abs_error"])
    values = [_float(entry[side]) for side in _SIDES if side in entry]
    if not values:
        return math.nan
    if any(math.isnan(v) for v in values):
        return math.inf
    return max(values) - min(values)


Cell = tuple[float, bool]  # (largest |diff| in the cell, any entry over its allowance)


def _cells_from_map(error_map: Mapping[str, Any]) -> dict[tuple[int, int], Cell]:
    cells: dict[tuple[int, int], Cell] = {}
    mismatched = error_map.get("mismatched") or []
    for i, row in enumerate(error_map.get("abs_error") or []):
        for j, value in enumerate(row):
            try:
                over = int(mismatched[i][j]) > 0
            except (IndexError, TypeError, ValueError):
                over = False
            cells[(i, j)] = (_float(value), over)
    return cells


def _cells_from_worst(
    pair: Mapping[str, Any], row_step: int, col_step: int, as_input: bool
) -> dict[tuple[int, int], Cell]:
    cells: dict[tuple[int, int], Cell] = {}
    out_shape, in_shape = pair.get("output_shape") or [], pair.get("input_shape") or []
    for worst in pair.get("worst") or []:
        column = _flat(worst.get("input_index") or [], in_shape)
        if as_input:  # the input's own layout: leading dimensions down, the last across
            r, c = divmod(column, int(in_shape[-1]))
        else:
            r, c = _flat(worst.get("output_index") or [], out_shape), column
        r, c = r // row_step, c // col_step
        value, allowed = entry_error(worst), _float(worst.get("allowed"))
        over = not value <= allowed  # NaN and inf count as over
        old_value, old_over = cells.get((r, c), (-math.inf, False))
        largest = value if math.isnan(value) else max(value, old_value)
        cells[(r, c)] = (largest, over or old_over)
    return cells


def _runs(cells: list[tuple[int, int]]) -> str:
    """One path for many cells: horizontal runs of neighbours become one rectangle."""
    parts: list[str] = []
    cells.sort()
    k = 0
    while k < len(cells):
        r, c = cells[k]
        n = 1
        while k + n < len(cells) and cells[k + n] == (r, c + n):
            n += 1
        parts.append(f"M{c} {r}h{n}v1h-{n}z")
        k += n
    return "".join(parts)


def _level(value: float, lo: float, hi: float) -> int:
    if value <= 0:
        return 0
    if hi <= lo:
        return LEVELS - 1
    position = (math.log10(value) - lo) / (hi - lo)
    return min(LEVELS - 1, max(0, round(position * (LEVELS - 1))))


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def heatmap(pair: Mapping[str, Any]) -> Heatmap:
    """Lay out the heatmap of one (output, input) pair of a gradient record.

    Args:
        pair: One entry of a gradient record's ``pairs`` (``PairResult.to_dict()``).

    Returns:
        A :class:`Heatmap`; cells with no measurement (worst-entries mode) are
        in ``unmeasured``.

    Examples:
        >>> pair = {"output_shape": [64], "input_shape": [64], "worst": [],
        ...         "error_map": {"rows": 64, "cols": 64, "row_step": 32, "col_step": 32,
        ...                       "abs_error": [[0.5, 0.0], [0.0, 1e-9]],
        ...                       "mismatched": [[3, 0], [0, 0]]}}
        >>> hm = heatmap(pair)
        >>> hm.source, (hm.grid_rows, hm.grid_cols), hm.unmeasured
        ('error_map', (2, 2), '')
        >>> [(layer.fill, layer.d) for layer in hm.layers]
        [('#67000d', 'M0 0h1v1h-1z'), ('#eef3f9', 'M1 0h1v1h-1zM0 1h2v1h-2z')]
    """
    in_shape = [int(n) for n in pair.get("input_shape") or []]
    rows = max(1, _numel(pair.get("output_shape") or []))
    cols = max(1, _numel(in_shape))
    # One output entry (a loss) against a matrix: draw the gradient in the matrix's own
    # shape, where a wrong row or a wrong block of weights shows as one.
    as_input = rows == 1 and len(in_shape) >= 2 and all(n > 0 for n in in_shape)
    error_map = pair.get("error_map")
    if isinstance(error_map, Mapping) and error_map.get("abs_error"):
        source = "error_map"
        row_step = max(1, int(error_map.get("row_step", 1)))
        col_step = max(1, int(error_map.get("col_step", 1)))
        rows = int(error_map.get("rows", rows)) or rows
        cols = int(error_map.get("cols", cols)) or cols
        cells = _cells_from_map(error_map)
        # A pooled strip cannot be folded back into the input's shape.
        as_input = as_input and rows == 1 and row_step == col_step == 1
        if as_input:
            last = in_shape[-1]
            cells = {divmod(c, last): cell for (_, c), cell in cells.items()}
            rows, cols = cols // last, last
    else:
        source = "worst"
        if as_input:
            rows, cols = cols // in_shape[-1], in_shape[-1]
        row_step, col_step = ErrorMap.steps(rows, cols)
        cells = _cells_from_worst(pair, row_step, col_step, as_input)
    grid_rows = max(1, -(-rows // row_step), *(r + 1 for r, _ in cells))
    grid_cols = max(1, -(-cols // col_step), *(c + 1 for _, c in cells))

    finite = [v for v, _ in cells.values() if math.isfinite(v) and v > 0]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 0.0)
    lo, hi = (math.log10(vmin), math.log10(vmax)) if finite else (0.0, 0.0)
    by_fill: dict[str, list[tuple[int, int]]] = {}
    for (r, c), (value, over) in cells.items():
        if not math.isfinite(value):
            fill = _NON_FINITE
        else:
            fill = (_OVER if over else _WITHIN)[_level(value, lo, hi)]
        by_fill.setdefault(fill, []).append((r, c))
    # Worst-entries mode: the measured cells are drawn over one "not measured" rectangle
    # (unless they cover the whole grid).
    covered = len(cells) >= grid_rows * grid_cols
    unmeasured = "" if covered else f"M0 0h{grid_cols}v{grid_rows}h-{grid_cols}z"

    cell_px = max(_MIN_CELL, min(_MAX_CELL, _MAX_PIXELS // max(grid_rows, grid_cols)))
    # A strip (a scalar loss against a vector) is drawn thicker than its cells are wide.
    width = max(grid_cols * cell_px, _STRIP_PIXELS)
    height = max(grid_rows * cell_px, _STRIP_PIXELS)
    legend = [
        (_OVER[-1], "over the allowance"),
        (_WITHIN[-1], "within it"),
    ]
    if any(not math.isfinite(v) for v, _ in cells.values()):
        legend.append((_NON_FINITE, "NaN or inf"))
    if unmeasured:
        legend.append((_NOT_MEASURED, "not measured"))
    over_count = sum(1 for _, over in cells.values() if over)
    title = (
        f"|analytic − numeric| over {rows} × {cols} "
        f"{'entries of the input (one output entry)' if as_input else 'Jacobian entries'} "
        f"({grid_rows} × {grid_cols} cells of {row_step} × {col_step}); "
        f"{over_count} cell(s) over the allowance; "
        f"darker = larger, log scale from {_fmt(vmin)} to {_fmt(vmax)}"
    )
    return Heatmap(
        grid_rows=grid_rows,
        grid_cols=grid_cols,
        width=width,
        height=height,
        layers=tuple(Layer(fill, _runs(cells_of)) for fill, cells_of in sorted(by_fill.items())),
        unmeasured=unmeasured,
        source=source,
        rows=rows,
        cols=cols,
        row_step=row_step,
        col_step=col_step,
        vmin=vmin,
        vmax=vmax,
        legend=tuple(legend),
        title=title,
        layout="input" if as_input else "jacobian",
    )
