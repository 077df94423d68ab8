"""Acceptance of issue #11 part 2: `notifier run` delivers an alarm and a digest through
Microsoft Graph sendMail and through the Gmail API (a loopback API server checking tokens the
Authlib test server issued), `notifier test-mail` works with both, and the status page and
/metrics show how each transport is doing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.authserver import AuthServer
from tests.mailapi import ApiMail, MailApiServer
from tests.oauth2.harness import (
    PASSWORD,
    RECIPIENT,
    USER,
    microsoft365_app_certificate,
    notifier_cli,
    service_account_json,
)
from tests.service import NotifierProcess, wait_for

CLIENT_ID = "4a1c7e0e-notifier"


@pytest.fixture
def authserver() -> Iterator[AuthServer]:
    with AuthServer() as server:
        server.add_user(USER, PASSWORD)  # the mailbox a service account may act for
        yield server


def api_config(transport: str, url: str, oauth2: dict[str, Any]) -> dict[str, Any]:
    key = "graph_url" if transport == "graph" else "gmail_url"
    return {
        "accounts": [
            {
                "name": "ops",
                "transport": transport,
                key: url,
                "sender_address": USER,
                "oauth2": oauth2,
            }
        ],
        "routes": [
            {
                "name": "ops",
                "account": "ops",
                "to": [RECIPIENT],
                "group_wait_s": 0.5,
                "group_interval_s": 0.0,
                "repeat_interval_s": 3600.0,
                "max_mails_per_minute": 600,
            }
        ],
        "spool": {"retry_base_s": 0.2, "retry_max_s": 1.0},
    }


def google_service_account(tmp_path: Path, authserver: AuthServer) -> dict[str, Any]:
    return {
        "mode": "google_service_account",
        "service_account_file": service_account_json(tmp_path, authserver),
    }


def alarms(*codes: str) -> list[dict[str, str]]:
    return [
        {
            "type": "alarm",
            "severity": "Major",
            "code": code,
            "host": "gw01",
            "source": "RELAY/RECH",
            "text": f"Registration down {code}",
        }
        for code in codes
    ]


def body_of(mail: ApiMail) -> str:
    body = mail.message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def deliver_alarm_digest_and_test_mail(proc: NotifierProcess, api: MailApiServer) -> None:
    post = httpx.post(f"{proc.url}/api/v1/records", json=alarms("0x00010002"), timeout=10)
    assert post.status_code == 200, post.text
    first = wait_for(lambda: api.received, what="the alarm mail")[0]
    assert "0x00010002" in str(first.message["Subject"])
    assert first.message["To"] == RECIPIENT
    assert first.message["Message-ID"]
    # Three alarms in one group window: one digest listing each.
    post = httpx.post(
        f"{proc.url}/api/v1/records",
        json=alarms("0x00020001", "0x00020002", "0x00020003"),
        timeout=10,
    )
    assert post.status_code == 200, post.text
    digest = wait_for(lambda: api.received[1:], what="the digest")[0]
    codes = set(re.findall(r"0x0002000[123]", body_of(digest)))
    assert codes == {"0x00020001", "0x00020002", "0x00020003"}
    assert len(api.received) == 2
    # The operator's check, in its own process, through the same transport.
    out = notifier_cli(proc, "test-mail", "--to", RECIPIENT)
    assert out.returncode == 0, out.stdout + out.stderr
    test_mail = wait_for(lambda: api.received[2:], what="the test mail")[0]
    assert str(test_mail.message["Subject"]).startswith("[TEST]")
    assert f"message-id: {test_mail.message['Message-ID']}" in out.stdout
    assert api.refused == [], api.refused


def test_graph_delivers_an_alarm_a_digest_and_the_test_mail(
    tmp_path: Path, authserver: AuthServer
) -> None:
    # Graph's application permission Mail.Send: an app-only token.
    oauth2 = microsoft365_app_certificate(tmp_path, authserver, CLIENT_ID)
    with MailApiServer(authserver, apps=(CLIENT_ID,)) as api:
        proc = NotifierProcess(tmp_path, api_config("graph", api.url, oauth2))
        proc.start()
        try:
            deliver_alarm_digest_and_test_mail(proc, api)
            assert {m.mailbox for m in api.received} == {USER}
            # The app-only token carries the Graph preset scope, not the SMTP one.
            assert api.received[0].claims["scope"] == "https://graph.microsoft.com/.default"
            out = notifier_cli(proc, "test-mail", "--to", RECIPIENT)
            assert f"transport: graph ({api.url})" in out.stdout
            assert "auth used: OAuth2 bearer token" in out.stdout
            assert re.search(r"result: accepted for \S+ 202", out.stdout), out.stdout
        finally:
            proc.stop()


def test_gmail_api_delivers_an_alarm_a_digest_and_the_test_mail(
    tmp_path: Path, authserver: AuthServer
) -> None:
    oauth2 = google_service_account(tmp_path, authserver)
    with MailApiServer(authserver) as api:
        proc = NotifierProcess(tmp_path, api_config("gmail_api", api.url, oauth2))
        proc.start()
        try:
            deliver_alarm_digest_and_test_mail(proc, api)
            # "me" is the delegated mailbox the service account's token was issued for.
            assert {m.mailbox for m in api.received} == {USER}
            scope = api.received[0].claims["scope"]
            assert scope == "https://www.googleapis.com/auth/gmail.send"
        finally:
            proc.stop()
