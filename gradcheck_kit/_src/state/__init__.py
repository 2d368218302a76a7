"""State a check must leave as it found it, one job a module.

* :mod:`.rng` -- capture, restore, seed and replay the random number generators.
* :mod:`.modes` -- the process-wide torch modes (:class:`~.modes.GlobalModes`).
* :mod:`.snapshot` -- record and put back what is reachable from some objects
  (:func:`~.snapshot.snapshot`, :func:`~.snapshot.preserved`).

Import from the submodule that holds a name; this package re-exports nothing.
"""
