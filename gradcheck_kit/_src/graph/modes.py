"""The torch function mode the graph checks watch a block with.

:func:`~.presence.assert_no_graph` and :func:`~.reach.assert_graph_reaches` each
see every torch call of the user's block, one to note graph building and the
leaves used, the other to follow what each tensor depends on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.overrides import TorchFunctionMode

__all__ = ["OpWatcher"]


class OpWatcher(TorchFunctionMode):
    """A torch function mode that hands every torch call of a block to :meth:`on_call`.

    The mode protocol may pass ``kwargs`` as None and passes the overloaded
    ``types``, which no graph check needs: :meth:`on_call` gets a dict and no types.
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return self.on_call(func, args, kwargs or {})

    def on_call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``func(*args, **kwargs)``, note what the check needs of it, return its result."""
        raise NotImplementedError
