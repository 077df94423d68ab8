"""The status page at `/`: what the service runs and what it holds. Pages read state; they
decide nothing. (The OAuth2 pages are in web/oauth2.py; the app assembles both.)"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from notifier import __version__
from notifier.mail.accounts import transport_label
from notifier.mail.transport import TransportHealth
from notifier.web.forms import FormToken
from notifier.web.guard import AdminGuard
from notifier.web.operator import silence_json
from notifier.web.render import page
from notifier.web.view import ServiceView


def _ago(then: float | None, now: float) -> str:
    if not then:
        return "-"
    seconds = max(now - then, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _in(then: float, now: float) -> str:
    return f"in {int(max(then - now, 0))}s"


def _state_words(
    failing_since: float | None, last_success: float | None, next_retry: float | None, now: float
) -> dict[str, str]:
    """A delivery state in words, as every "mail" / "delivery" cell shows it: the last success,
    and while failing since when and (where known) the next retry."""
    out = {"last_success": _ago(last_success, now) if last_success else "none yet"}
    if failing_since:
        out["failing_since"] = _ago(failing_since, now)
        if next_retry:
            out["next_retry"] = _in(next_retry, now)
    return out


def _delivery(route: dict[str, Any], now: float) -> dict[str, str]:
    """A route's mail state in words: failing since when, the next retry, the last success."""
    if "last_success" not in route:
        return {}  # a row that does not track it (the SMTP relay)
    since, last, retry = (route.get(k) for k in ("failing_since", "last_success", "next_retry_at"))
    return _state_words(since, last, retry, now)


def _health(h: TransportHealth, now: float) -> dict[str, str]:
    """An account transport's state in words; its next retry is the time the server asked to
    be left alone until (Retry-After)."""
    words = _state_words(h.failing_since, h.last_success, h.next_retry, now)
    return {**words, "kind": h.kind, "state": h.state, "last_error": h.last_error}


def status_context(service: ServiceView) -> dict[str, Any]:
    """Everything the status page shows, as plain values (also handy for tests)."""
    now = time.time()
    s = service.settings
    spool = service.spool.stats() if service.spool else None
    depth: dict[str, dict[str, int]] = {}
    if spool:
        for (consumer, state), n in spool.depth.items():
            depth.setdefault(consumer, {})[state] = n
    cluster = service.cluster.view() if service.cluster else None
    routes = service.dispatcher.status() if service.dispatcher else []
    for r in routes:
        consumer = r.get("consumer") or f"route:{r['route']}"
        r["depth"] = depth.get(consumer, {})
        r["owner"] = cluster.owners.get(consumer, "") if cluster else ""
        r["delivery"] = _delivery(r, now)
    oauth = {}
    if service.oauth2:
        oauth = {name: p.status() for name, p in service.oauth2.providers.items()}
    transports = service.dispatcher.transports if service.dispatcher else {}
    accounts = [
        {
            "name": a.name,
            "transport": transport_label(a),
            "auth": f"OAuth2 {a.oauth2.mode}"
            if a.oauth2 and a.oauth2.mode
            else ("password" if a.username else "none"),
            "oauth2": oauth.get(a.name),
            "delivery": _health(transports[a.name].health, now) if a.name in transports else None,
        }
        for a in s.accounts
    ]
    forwards = service.forwards.status() if service.forwards else []
    for f in forwards:
        f["depth"] = depth.get(f["consumer"], {})
        f["delivery"] = _state_words(f["failing_since"], f["last_success"], None, now)
    records = service.spool.history(25) if service.spool else []
    return {
        "version": __version__,
        "uptime": _ago(service.started_at, now).removesuffix(" ago"),
        "listening": service.listening,
        "routes": routes,
        "accounts": accounts,
        "forwards": forwards,
        "spool": spool,
        "shared": s.spool.backend == "postgresql",  # several instances may run
        "instances": [
            {
                "name": i.name,
                "up": i.up,
                "heartbeat": f"{i.heartbeat_age_s:.0f}s ago",
                "version": i.version,
                "me": service.cluster is not None and i.name == service.cluster.instance,
            }
            for i in (cluster.instances if cluster else ())
        ],
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


def status_routes(service: ServiceView, guard: AdminGuard, forms: FormToken) -> list[BaseRoute]:
    async def status_page(request: Request) -> Response:
        if service.oauth2:
            await service.oauth2.observe()  # a sign-in on another instance shows here too
        now = time.time()
        silences = await service.state.silences(ended_after=now - 86400) if service.state else []
        return page(
            "status.html.j2",
            **status_context(service),
            silences=[silence_json(s, now) for s in reversed(silences)],
            csrf=forms.value,
        )

    return [Route("/", guard(status_page), methods=["GET"])]
