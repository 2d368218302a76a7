"""Render a results document as one self-contained HTML page (Jinja2, autoescape on).

The page is built from :func:`gradcheck_kit.report.page.build_page` and the
template ``templates/report.html.jinja2`` (package data), which inlines its CSS,
its JavaScript and every picture (SVG): the file opens from disk or from a CI
artefact store and fetches nothing. Autoescaping is on for the whole template,
so every text that comes from user code is shown as text; the only JSON in the
page is written with ``tojson``, which escapes ``<``, ``>``, ``&`` and ``'``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jinja2

from gradcheck_kit.report.files import write_text_atomic
from gradcheck_kit.report.page import build_page

__all__ = ["TEMPLATE", "render_html", "generate_html", "write_html"]

TEMPLATE = "report.html.jinja2"


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    # Compiling the templates costs about 0.4 s in every pytest run that writes a report.
    # Jinja2's default folder is private to the user (it checks owner and mode) and its
    # entries are keyed by the template's checksum, so an edited template recompiles.
    try:
        return jinja2.FileSystemBytecodeCache()
    except (OSError, RuntimeError):
        return None  # no usable temp folder: compile every time


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gradcheck_kit.report", "templates"),
        bytecode_cache=_bytecode_cache(),
        autoescape=True,
        # A typo in the template is an error, not an empty cell.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def generate_html(document: Mapping[str, Any], *, title: str = "gradcheck report") -> Iterator[str]:
    """The page for ``document``, in pieces as Jinja2 renders them.

    Args:
        document: A results document (``gradcheck_kit.report.document``).
        title: The page's heading and title.

    Returns:
        An iterator of text pieces; joined, they are :func:`render_html`'s result.

    Examples:
        >>> "".join(generate_html({"results": []})).startswith("<!DOCTYPE html>")
        True
    """
    template = _environment().get_template(TEMPLATE)
    return template.generate(page=build_page(document, title=title))


def render_html(document: Mapping[str, Any], *, title: str = "gradcheck report") -> str:
    """The page for ``document`` as one string.

    Args:
        document: A results document (``gradcheck_kit.report.document``).
        title: The page's heading and title.

    Returns:
        The HTML text.

    Examples:
        >>> html = render_html({"results": [
        ...     {"kind": "gradient", "name": "<b>sin</b>", "passed": False, "pairs": []}]})
        >>> "&lt;b&gt;sin&lt;/b&gt;" in html and "<b>sin</b>" not in html
        True
    """
    return "".join(generate_html(document, title=title))


def write_html(document: Mapping[str, Any], path: Path, *, title: str = "gradcheck report") -> Path:
    """Render ``document`` into ``path`` atomically: a failed render keeps the old page.

    Args:
        document: A results document (``gradcheck_kit.report.document``).
        path: Where the page goes; the folder is created.
        title: The page's heading and title.

    Returns:
        ``path``.

    Examples:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "report.html"
        >>> write_html({"results": []}, out).read_text(encoding="utf-8")[:15]
        '<!DOCTYPE html>'
    """
    return write_text_atomic(path, generate_html(document, title=title))
