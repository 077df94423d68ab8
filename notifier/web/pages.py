"""The web pages the service serves beside ingest: the status page and (web/oauth2.py) the
OAuth2 pages. Pages read state; they decide nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from notifier import __version__
from notifier.web.guard import AdminGuard

if TYPE_CHECKING:
    from notifier.app import Service

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(("html", "j2")),
)


def _ago(then: float | None, now: float) -> str:
    if not then:
        return "-"
    seconds = max(now - then, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def status_context(service: Service) -> dict[str, Any]:
    """Everything the status page shows, as plain values (also handy for tests)."""
    now = time.time()
    s = service.settings
    spool = service.spool.stats() if service.spool else None
    depth: dict[str, dict[str, int]] = {}
    if spool:
        for (consumer, state), n in spool.depth.items():
            depth.setdefault(consumer, {})[state] = n
    routes = service.dispatcher.status() if service.dispatcher else []
    for r in routes:
        r["depth"] = depth.get(f"route:{r['route']}", {})
    oauth = {}
    if service.oauth2:
        oauth = {name: p.status() for name, p in service.oauth2.providers.items()}
    accounts = [
        {
            "name": a.name,
            "transport": "file outbox" if a.uses_outbox else f"SMTP {a.server} ({a.tls})",
            "auth": f"OAuth2 {a.oauth2.mode}"
            if a.oauth2 and a.oauth2.mode
            else ("password" if a.username else "none"),
            "oauth2": oauth.get(a.name),
        }
        for a in s.accounts
    ]
    records = service.spool.history(25) if service.spool else []
    return {
        "version": __version__,
        "uptime": _ago(service.started_at, now).removesuffix(" ago"),
        "listening": service.listening,
        "routes": routes,
        "accounts": accounts,
        "spool": spool,
        "records": [
            {
                "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.received_at)),
                "kind": r.kind.value,
                "severity": r.severity.value,
                "device": r.device,
                "code": r.code,
                "source": r.source,
                "text": r.text[:160],
                "receiver": r.receiver,
            }
            for r in records
        ],
    }


def page_routes(service: Service) -> list[BaseRoute]:
    guard = AdminGuard(service.settings.web.admin_password.get_secret_value())

    async def status_page(request: Request) -> Response:
        html = templates.get_template("status.html.j2").render(**status_context(service))
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    routes: list[BaseRoute] = [Route("/", guard(status_page), methods=["GET"])]
    try:
        from notifier.web.oauth2 import oauth2_routes
    except ImportError:  # the OAuth2 pages land separately
        return routes
    routes.extend(oauth2_routes(service, guard))
    return routes
