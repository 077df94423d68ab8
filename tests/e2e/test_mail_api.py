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
from tests.conftest import free_port
from tests.httpreceiver import HttpReceiver
from tests.mailapi import ApiMail, MailApiServer
from tests.oauth2.harness import (
    PASSWORD,
    RECIPIENT,
    USER,
    callback_uri,
    microsoft365_app_certificate,
    notifier_cli,
    oauth2_page,
    row_of,
    row_text,
    service_account_json,
    sign_in_on_page,
)
from tests.service import NotifierProcess, wait_for

CLIENT_ID = "4a1c7e0e-notifier"


@pytest.fixture
def authserver() -> Iterator[AuthServer]:
    with AuthServer() as server:
        server.add_user(USER, PASSWORD)  # the mailbox a service account may act for
        yield server


def api_config(transport: str, url: str, oauth2: dict[str, Any]) -> dict[str, Any]:
    account = {"name": "ops", "transport": transport, "sender_address": USER, "oauth2": oauth2}
    if transport != "smtp":  # smtp without a server: the file outbox
        account["graph_url" if transport == "graph" else "gmail_url"] = url
    return {
        "accounts": [account],
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


def test_changing_an_interactive_account_to_graph_asks_for_a_new_sign_in(
    tmp_path: Path, authserver: AuthServer
) -> None:
    with MailApiServer(authserver) as api:
        proc = NotifierProcess(tmp_path)
        authserver.add_client(CLIENT_ID, secret="s3cret", redirect_uris=[callback_uri(proc)])
        oauth2 = {
            "mode": "exchange",
            "tenant": "contoso.onmicrosoft.com",
            "client_id": CLIENT_ID,
            "client_secret": "s3cret",
            "token_endpoint": authserver.token_url,
            "authorization_url": authserver.authorize_url,
        }
        # Signed in while the account sent through SMTP (SMTP.Send scope).
        proc.overrides = api_config("smtp", "", oauth2)
        proc.start()
        try:
            assert "ops is authorized" in sign_in_on_page(proc, authserver)
        finally:
            proc.stop()
        # The same account now sends through Graph: that sign-in cannot serve it.
        proc.overrides = api_config("graph", api.url, oauth2)
        proc.start()
        try:
            row = row_of(oauth2_page(proc), "ops")
            assert "needs authorization" in row, row
            assert "https://outlook.office.com/SMTP.Send" in row and "sign in again" in row, row
            post = httpx.post(f"{proc.url}/api/v1/records", json=alarms("0x00010002"), timeout=10)
            assert post.status_code == 200
            assert "ops is authorized" in sign_in_on_page(proc, authserver)
            mail = wait_for(lambda: api.received, what="the alarm through Graph")[0]
            assert mail.claims["scope"] == "https://graph.microsoft.com/Mail.Send offline_access"
            assert mail.claims["sub"] == USER
            assert "needs authorization" not in row_of(oauth2_page(proc), "ops")
        finally:
            proc.stop()


def test_status_page_and_metrics_show_each_transport_and_forward(
    tmp_path: Path, authserver: AuthServer
) -> None:
    graph_oauth2 = microsoft365_app_certificate(tmp_path, authserver, CLIENT_ID)
    with (
        MailApiServer(authserver, apps=(CLIENT_ID,)) as graph_api,
        MailApiServer(authserver) as gmail_api,
        HttpReceiver() as siem,
    ):
        # Gmail throttles: one 429 asking for ten minutes of quiet.
        gmail_api.answers.append((429, {"Retry-After": "600"}))
        config = api_config("graph", graph_api.url, graph_oauth2)
        backup = api_config(
            "gmail_api", gmail_api.url, google_service_account(tmp_path, authserver)
        )
        config["accounts"].append({**backup["accounts"][0], "name": "backup"})
        config["routes"][0]["continue"] = True
        config["routes"].append({**config["routes"][0], "name": "backup", "account": "backup"})
        config["forwards"] = [
            {"name": "siem", "kind": "http", "url": siem.url("/log")},
            # Nothing listens there: the forward fails and keeps its records.
            {
                "name": "archive",
                "kind": "syslog",
                "target": f"127.0.0.1:{free_port()}",
                "protocol": "tcp",
            },
        ]
        proc = NotifierProcess(tmp_path, config)
        proc.start()
        try:
            post = httpx.post(f"{proc.url}/api/v1/records", json=alarms("0x00010002"), timeout=10)
            assert post.status_code == 200, post.text
            wait_for(lambda: graph_api.received and siem.requests, what="the mail and the forward")

            def settled() -> str | None:
                page = httpx.get(f"{proc.url}/", timeout=5).text
                backup_row, archive_row = (
                    row_text(page, "account-backup"),
                    row_text(page, "forward-archive"),
                )
                return page if "failing" in backup_row and "failing" in archive_row else None

            page = wait_for(settled, what="the failing transport and forward on the page")
            ops = row_text(page, "account-ops")
            assert f"Microsoft Graph {graph_api.url}" in ops and " ok " in f" {ops} "
            assert re.search(r"\d+s ago", ops), ops
            backup_row = row_text(page, "account-backup")
            assert f"Gmail API {gmail_api.url}" in backup_row
            assert "Retry-After" in backup_row or "throttling" in backup_row, backup_row
            assert re.search(r"in (59\d|600)s", backup_row), backup_row
            siem_row = row_text(page, "forward-siem")
            assert re.search(r"http post \S+/log ok last sent: \d+s ago 1 0 ", siem_row), siem_row
            archive_row = row_text(page, "forward-archive")
            assert "failing" in archive_row and "connection refused" in archive_row, archive_row

            metrics = httpx.get(f"{proc.url}/metrics", timeout=5).text
            assert 'notifier_mail_transport_up{account="ops",transport="graph"} 1.0' in metrics
            assert (
                'notifier_mail_transport_up{account="backup",transport="gmail_api"} 0.0' in metrics
            )
            assert re.search(
                r'notifier_mail_transport_next_retry_timestamp_seconds\{account="backup",'
                r'transport="gmail_api"\} \d',
                metrics,
            )
            assert re.search(
                r'notifier_mail_transport_last_success_timestamp_seconds\{account="ops",', metrics
            )
            assert 'notifier_forward_up{forward="siem",kind="http"} 1.0' in metrics
            assert 'notifier_forward_up{forward="archive",kind="syslog"} 0.0' in metrics
            assert 'notifier_forward_sent_total{forward="siem"} 1.0' in metrics
            assert gmail_api.requests == 1, "asked Gmail again within its Retry-After"
        finally:
            proc.stop()
