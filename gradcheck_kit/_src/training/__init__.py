"""Training-loop checks: accumulation, aliasing, a disconnected graph.

* :mod:`.findings` — :class:`TrainingFinding` and :class:`TrainingReport`, their text and
  JSON, and the judging of what the watcher observed.
* :mod:`.common` — argument checks and parameter naming shared by the others.
* :mod:`.tracking` — which side (model or optimizer) lost which parameter.
* :mod:`.watcher` — :func:`watch_training`, the hooks that observe a running loop.
* :mod:`.across_ranks` — the watcher's comparison of the ranks of a distributed loop,
  and :mod:`.rank_findings`, its findings' text.
* :mod:`.assertions` — one-line unit-test assertions built on the above.

Nothing is imported here, so that loading one public name loads only what it needs.
"""
