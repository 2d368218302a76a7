"""Reports of a ``pytest --gradcheck`` run: the JSON document and its HTML page.

An adapter over the results' JSON form: it imports no torch and no pytest, so a
report renders from a JSON file on any machine. One module per job:

* :mod:`.document`: the versioned JSON document: build, load, check, merge
  (no third-party imports; the pytest plugin and ``check-json`` use it too).
* :mod:`.validation`: a document held to ``document_schema.json``, each error
  naming its field (standard library only; ``jsonschema`` is not needed).
* :mod:`.files`: atomic writes (temporary file, then rename).
* :mod:`.page`: a document turned into what the page shows (summary, rows);
  each kind's detail in :mod:`.gradient_detail`, :mod:`.training_detail`,
  :mod:`.benchmark_detail` and :mod:`.audit_detail`, values as text in :mod:`.values`.
* :mod:`.heatmap` and :mod:`.charts`: the geometry of the inline SVG pictures.
* :mod:`.html`: the page itself, rendered by Jinja2 (autoescape on) from the
  template kept as package data (``templates/``).

Nothing is imported here, so that ``gradcheck_kit.report.document`` stays
cheap for the pytest plugin (Jinja2 is imported only when a page is rendered).

Examples:
    >>> from gradcheck_kit.report.document import DOCUMENT_SCHEMA_VERSION
    >>> DOCUMENT_SCHEMA_VERSION
    2
"""

from __future__ import annotations

__all__: list[str] = []
