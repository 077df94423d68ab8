"""The Alertmanager and Grafana webhook endpoints: stored then 200, auth, refusals."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from notifier.config import load_settings, masked
from notifier.ingest.webhooks import WebhookAuth
from notifier.records import Kind
from notifier.spool import MemorySpool
from tests.ingest.http_fixtures import run_curl, running_receiver
from tests.parse.test_webhook import alertmanager_payload

PAYLOADS = Path(__file__).resolve().parent / "payloads"
TOKEN = "s3cret-webhook-token"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_alertmanager_webhook_is_stored_then_answered_with_the_ids() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/api/v1/alertmanager", json=alertmanager_payload())
        assert response.status_code == 200
        [record] = rx.spool.history(10)
        assert response.json() == {"accepted": 1, "ids": [record.id]}
        assert record.kind is Kind.ALARM and record.receiver == "alertmanager"
        assert record.labels["job"] == "node"
        assert rx.counter("accepted", receiver="alertmanager", kind="alarm") == 1


async def test_grafana_firing_and_resolved_payloads_by_post_and_put() -> None:
    async with running_receiver() as rx:
        status, body, _ = await run_curl(
            "-H", "content-type: application/json",
            "--data-binary", f"@{PAYLOADS / 'grafana-firing.json'}",
            f"{rx.url}/api/v1/grafana",
        )  # fmt: skip
        assert status == 200 and json.loads(body)["accepted"] == 2
        status, body, _ = await run_curl(
            "-X", "PUT", "-H", "content-type: application/json",
            "--data-binary", f"@{PAYLOADS / 'grafana-resolved.json'}",
            f"{rx.url}/api/v1/grafana",
        )  # fmt: skip
        assert status == 200 and json.loads(body)["accepted"] == 1
        newest_first = rx.spool.history(10)
        assert [r.kind for r in newest_first] == [Kind.CLEAR, Kind.ALARM, Kind.ALARM]
        assert {r.receiver for r in newest_first} == {"grafana"}
        assert rx.counter("accepted", receiver="grafana", kind="clear") == 1


async def test_bad_payload_is_refused_with_the_reason_and_nothing_is_stored() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(
            f"{rx.url}/api/v1/alertmanager", json={"alerts": [{"labels": {}}]}
        )
        assert response.status_code == 400
        assert response.json()["error"] == "bad_field"
        assert "status" in response.json()["detail"]
        assert rx.spool.history(10) == []
        assert rx.counter("rejected", receiver="alertmanager", reason="bad_field") == 1


async def test_a_get_is_405_not_an_innovaphone_record() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.get(f"{rx.url}/api/v1/alertmanager?msg=hello")
        assert response.status_code == 405
        assert rx.spool.history(10) == []


async def test_oversized_webhook_is_refused_413() -> None:
    payload = alertmanager_payload(annotations={"summary": "x" * 5000})
    async with (
        running_receiver(max_body_bytes=4096) as rx,
        httpx.AsyncClient() as client,
    ):
        response = await client.post(f"{rx.url}/api/v1/alertmanager", json=payload)
        assert response.status_code == 413
        assert rx.spool.history(10) == []


async def test_with_a_token_and_users_only_those_are_let_in() -> None:
    auth = WebhookAuth(TOKEN, {"grafana": "pa55word"})
    payload = alertmanager_payload()
    url_path = "/api/v1/alertmanager"
    async with running_receiver(webhook_auth=auth) as rx, httpx.AsyncClient() as client:
        url = rx.url + url_path
        anonymous = await client.post(url, json=payload)
        assert anonymous.status_code == 401
        assert anonymous.headers.get_list("www-authenticate") == [
            'Bearer realm="notifier webhooks"',
            'Basic realm="notifier webhooks", charset="UTF-8"',
        ]
        for header in (f"Bearer {TOKEN}x", basic("grafana", "wrong"), "Digest x=1"):
            refused = await client.post(url, json=payload, headers={"authorization": header})
            assert refused.status_code == 401, header
            assert TOKEN not in refused.text and "pa55word" not in refused.text
        assert rx.counter("rejected", receiver="alertmanager", reason="auth") == 3
        assert rx.spool.history(10) == []
        for header in (f"Bearer {TOKEN}", basic("grafana", "pa55word")):
            taken = await client.post(url, json=payload, headers={"authorization": header})
            assert taken.status_code == 200, header
        assert len(rx.spool.history(10)) == 2


def test_without_token_or_users_only_loopback_senders_pass() -> None:
    auth = WebhookAuth()
    assert auth.check(None, "127.0.0.1").ok and auth.check(None, "::1").ok
    verdict = auth.check(f"Bearer {TOKEN}", "192.0.2.7")
    assert (verdict.ok, verdict.status, verdict.reason) == (False, 403, "not_loopback")
    assert "[webhooks] bearer_token or users" in verdict.detail


@pytest.mark.parametrize("peer", ["127.0.0.1", "192.0.2.7"])
def test_with_a_token_loopback_needs_it_too(peer: str) -> None:
    auth = WebhookAuth(TOKEN)
    assert auth.check(f"Bearer {TOKEN}", peer).ok
    assert auth.check(None, peer).status == 401
    assert auth.check(basic("a", TOKEN), peer).status == 401


def test_token_and_users_are_read_from_files_and_never_shown(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "users").write_text("grafana:pa55word\n")
    settings = load_settings(
        environ={
            "NOTIFIER_WEBHOOKS__BEARER_TOKEN_FILE": str(tmp_path / "token"),
            "NOTIFIER_WEBHOOKS__USERS_FILE": str(tmp_path / "users"),
        }
    )
    assert settings.webhooks.bearer_token.get_secret_value() == TOKEN
    assert settings.webhooks.users["grafana"].get_secret_value() == "pa55word"
    shown = json.dumps(masked(settings))
    assert TOKEN not in shown and "pa55word" not in shown


async def test_a_full_queue_answers_503_with_retry_after_and_keeps_none_of_the_payload() -> None:
    payload = alertmanager_payload()
    payload["alerts"].append({**payload["alerts"][0], "fingerprint": "ffff000011112222"})
    spool = MemorySpool(consumers=["test"], max_entries=1)
    async with running_receiver(spool=spool) as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/api/v1/alertmanager", json=payload)
        assert response.status_code == 503
        assert response.json()["error"] == "spool_full"
        assert int(response.headers["retry-after"]) >= 1
        assert rx.spool.history(10) == []
        assert rx.counter("rejected", receiver="alertmanager", reason="spool_full") == 1
