"""Checks of distributed data-parallel training, on ``torch.distributed``.

* :mod:`.launch` -- run a function on N local ranks (one process each) and
  collect every rank's return value, or name the rank that raised, hung or died.

Import from the submodule that holds a name; this package re-exports nothing.
"""
