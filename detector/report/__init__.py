"""The tracking report: :mod:`.model` says what it holds, :mod:`.build` computes it from the
store, and :func:`render` writes it as JSON, plain text (80 columns) or one HTML file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from detector.report.model import Report

FORMATS: Final = ("text", "html", "json")


def render(report: Report, fmt: str) -> str:
    """``report`` as ``json``, ``text`` or ``html``."""
    if fmt == "json":
        from detector.report.json import dumps

        return dumps(report)
    if fmt == "text":
        from detector.report.text import render_text

        return render_text(report)
    if fmt == "html":
        # written beside this module by another change; until it lands, html is unknown here
        from detector.report.html import render_html  # type: ignore[import-not-found, unused-ignore]

        page: str = render_html(report)
        return page
    raise ValueError(f"unknown report format {fmt!r} (use one of {', '.join(FORMATS)})")
