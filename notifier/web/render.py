"""The pages' templates (``web/templates/*.j2``), rendered into never-cached HTML answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(("html", "j2")),
)

NO_STORE = {"Cache-Control": "no-store"}


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The template rendered with `context`; no cache may keep it (it shows live state)."""
    html = templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=NO_STORE)
