"""Result dataclasses to JSON-ready data and back, read off their fields' type hints.

Every result class writes each field under its own name: floats through
:func:`num` (JSON has no inf/nan, so they become the strings ``"inf"``,
``"-inf"``, ``"nan"``), tuples as lists, nested results through their own
``to_dict``. Reading converts each value to the field's annotated type, and a
field missing from older data takes its default (``None`` where the type allows
it). One mechanism instead of a hand-written pair of methods per class keeps the
JSON and the classes from drifting apart.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union

__all__ = ["PlainData", "num"]

T = TypeVar("T", bound="PlainData")


def num(value: float | None) -> float | str | None:
    """A float as JSON allows it: finite as is, inf/nan as their repr.

    Examples:
        >>> num(1.5), num(float("inf")), num(None)
        (1.5, 'inf', None)
    """
    if value is None:
        return None
    if math.isfinite(value):
        return float(value)
    return repr(float(value))


def _plain(value: Any) -> Any:
    if isinstance(value, PlainData):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return num(value)
    return value


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def _parse(value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(value, inner)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(v, args[0]) for v in value)
        return tuple(_parse(v, a) for v, a in zip(value, args, strict=True))
    if origin is Literal or tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, PlainData):
        return _by_kind(tp, value).from_dict(value)
    if tp in (float, int, bool, str):
        return tp(value)
    raise TypeError(f"no JSON reading for type {tp!r}")  # pragma: no cover - a new field type


def _by_kind(tp: type[PlainData], value: Mapping[str, Any]) -> type[PlainData]:
    """The subclass of ``tp`` whose ``kind`` default is ``value["kind"]``, else ``tp``.

    A field typed GradcheckResult may hold a SecondOrderResult.
    """
    kind = value.get("kind")
    if kind is None:
        return tp
    for sub in tp.__subclasses__():
        if not dataclasses.is_dataclass(sub):
            continue
        kinds = [f.default for f in dataclasses.fields(sub) if f.name == "kind"]
        if kinds == [kind]:
            return sub
    return tp


class PlainData:
    """Mixin for frozen result dataclasses: ``to_dict`` / ``from_dict`` from the fields.

    A class adds computed keys (a property such as ``hint``, the schema version)
    by overriding :meth:`_extra`.

    Examples:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Point(PlainData):
        ...     x: float
        ...     label: str | None = None
        >>> Point(float("inf")).to_dict()
        {'x': 'inf', 'label': None}
        >>> Point.from_dict({"x": "inf"})
        Point(x=inf, label=None)
    """

    _hints_cache: ClassVar[dict[type, dict[str, Any]]] = {}

    def _extra(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """This object as plain JSON-ready data."""
        assert dataclasses.is_dataclass(self)
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out.update(self._extra())
        return out

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        """Rebuild an object from :meth:`to_dict` output (older data: defaults fill gaps)."""
        assert dataclasses.is_dataclass(cls)
        hints = PlainData._hints_cache.get(cls)
        if hints is None:
            hints = PlainData._hints_cache[cls] = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name in data:
                kwargs[f.name] = _parse(data[f.name], hints[f.name])
            elif (
                f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
                and _optional(hints[f.name])
            ):
                kwargs[f.name] = None
        return cls(**kwargs)
