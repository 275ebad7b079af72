"""A pytest plugin for nbval: figures are never compared (``pytest -p nbval_figures --nbval``).

nbval compares every output of a cell with the stored one, except the kinds it lists in its
``skip_compare``, which hold ``image/png`` and ``image/jpeg``. A figure reaches a notebook in
other forms too: myst-nb's ``glue`` stores it under ``application/papermill.record/image/png``,
and a figure could be SVG or PDF. A figure's bytes differ from one CPU (and one version of
matplotlib or its fonts) to the next, so this plugin adds every image kind, glued or not, to
what nbval skips. Text, HTML and streams are still compared exactly.
"""

from __future__ import annotations

from nbval.plugin import IPyNbFile

GLUE_PREFIX = "application/papermill.record/"  # myst-nb's glue: this prefix, then the MIME type
FIGURE_TYPES = ("image/", "application/pdf")  # PNG, JPEG, SVG, ...; PDF


def is_figure(mime_type: str) -> bool:
    """True for an image's MIME type, also when ``glue`` stored it (``...record/image/png``)."""
    return mime_type.removeprefix(GLUE_PREFIX).startswith(FIGURE_TYPES)


class SkipFigures(tuple):
    """nbval's tuple of skipped keys, which also contains every figure's MIME type."""

    def __contains__(self, key: object) -> bool:
        return tuple.__contains__(self, key) or (isinstance(key, str) and is_figure(key))


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        notebook = item.parent
        if isinstance(notebook, IPyNbFile) and not isinstance(notebook.skip_compare,
                                                              SkipFigures):
            notebook.skip_compare = SkipFigures(notebook.skip_compare)
