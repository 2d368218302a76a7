"""Graph and grad-mode checks: which tensors get gradients, which build graphs, which share memory.

The assertions about ``requires_grad``, ``backward``, ``detach``, ``no_grad``
and the NumPy bridge, and the graph connectivity check of a training loop,
each raising a :class:`GraphCheckError` whose message names the tensor, what
was expected, what was found, the likely cause and the fix. One job a module:

* :mod:`.presence` — :func:`assert_no_graph`, :func:`assert_detached`,
  :func:`assert_requires_grad`, :func:`assert_grad_is_none`.
* :mod:`.reach` — :func:`assert_graph_reaches` (and where a path was cut),
  :func:`graph_nodes`.
* :mod:`.memory` — :func:`assert_shares_memory`, :func:`assert_no_shared_memory`.
* :mod:`.common` — naming tensors, composing messages, publishing verdicts.
* :mod:`.sites` — the user's line and variable names, from the call stack.

Tensors are named by the caller's own variable names where it has one for them
(``'x'``, ``'b'``), by their qualified names for a module's parameters, or by the
keys of a dict passed in. This package knows nothing of training loops;
:mod:`gradcheck_kit._src.training` uses its :func:`user_site` and ``msg`` helpers.
"""

from __future__ import annotations

from .common import Msg, apply_msg, check_msg
from .memory import assert_no_shared_memory, assert_shares_memory
from .presence import assert_detached, assert_grad_is_none, assert_no_graph, assert_requires_grad
from .reach import assert_graph_reaches, graph_nodes
from .sites import SourceSite, user_site

__all__ = [
    "Msg",
    "SourceSite",
    "apply_msg",
    "check_msg",
    "user_site",
    "graph_nodes",
    "assert_no_graph",
    "assert_detached",
    "assert_requires_grad",
    "assert_grad_is_none",
    "assert_graph_reaches",
    "assert_shares_memory",
    "assert_no_shared_memory",
]
