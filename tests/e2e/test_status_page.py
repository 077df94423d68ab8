"""The status page: what an operator sees at /, and who may see it."""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from notifier.web.guard import AdminGuard
from tests.service import NotifierProcess


def test_status_page_shows_routes_accounts_and_recent_records_escaped(tmp_path: Path) -> None:
    proc = NotifierProcess(tmp_path)
    proc.start()
    try:
        r = httpx.post(
            f"{proc.url}/api/v1/records",
            json={
                "type": "alarm",
                "severity": "Major",
                "code": "0x00010002",
                "host": "gw01",
                "source": "RELAY/RECH",
                "text": "<script>alert(1)</script> Registration down",
            },
            timeout=5,
        )
        assert r.status_code == 200
        page = httpx.get(f"{proc.url}/", timeout=5)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "notifier 0.1.0" in html
        assert "file outbox" in html  # the default account
        assert "gw01" in html and "0x00010002" in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; Registration down" in html
        assert "<script>alert(1)" not in html
    finally:
        proc.stop()


def test_status_page_wants_the_admin_password_when_one_is_set(tmp_path: Path) -> None:
    proc = NotifierProcess(tmp_path, {"web": {"admin_password": "correct horse"}})
    proc.start()
    try:
        refused = httpx.get(f"{proc.url}/", timeout=5)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert "correct horse" not in refused.text
        wrong = httpx.get(f"{proc.url}/", auth=("admin", "battery"), timeout=5)
        assert wrong.status_code == 401
        ok = httpx.get(f"{proc.url}/", auth=("admin", "correct horse"), timeout=5)
        assert ok.status_code == 200
        # What devices sent is the admin's to read too (no sender auth is configured here).
        history = f"{proc.url}/api/v1/records?limit=5"
        assert httpx.get(history, timeout=5).status_code == 401
        assert httpx.get(history, auth=("admin", "correct horse"), timeout=5).status_code == 200
        # Devices and monitoring never need the admin password.
        assert httpx.get(f"{proc.url}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{proc.url}/metrics", timeout=5).status_code == 200
    finally:
        proc.stop()


async def test_without_admin_password_pages_answer_loopback_only() -> None:
    async def page(request: Request) -> Response:
        return PlainTextResponse("secret page")

    app = Starlette(routes=[Route("/", AdminGuard("")(page))])

    async def get_from(address: str) -> httpx.Response:
        # In process: the ASGI transport hands the app `address` as the client's; no traffic.
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as client:
            return await client.get("/")

    refused = await get_from("192.0.2.7")
    assert refused.status_code == 403
    assert "web.admin_password" in refused.text
    assert "secret page" not in refused.text
    for loopback in ("127.0.0.1", "::1"):
        allowed = await get_from(loopback)
        assert allowed.status_code == 200 and allowed.text == "secret page", loopback
