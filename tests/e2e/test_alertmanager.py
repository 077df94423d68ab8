"""Acceptance: a real Alertmanager, configured with the README's receiver, posts its webhooks
to notifier, which mails the firing alerts and later the resolved ones through an OAuth2 account
(XOAUTH2, tokens from the Authlib test server) to an SMTP server that checks them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alertmanager import Alertmanager, readme_alertmanager_yaml, rfc3339
from tests.authserver import AuthServer
from tests.certs import TestPKI
from tests.oauth2.harness import (
    PASSWORD,
    RECIPIENT,
    USER,
    microsoft365_password_grant,
    oauth2_config,
    smtp_server,
)
from tests.service import NotifierProcess, wait_for

CLIENT_ID = "4a1c7e0e-notifier"


@pytest.fixture
def authserver() -> Iterator[AuthServer]:
    with AuthServer() as server:
        server.add_user(USER, PASSWORD)
        server.add_client(CLIENT_ID)  # a public client: the microsoft365 password grant
        yield server


def alertmanager_config(notifier: NotifierProcess, token_file: Path) -> str:
    """The README's alertmanager.yml, pointed at this notifier, with second-long waits."""
    config = readme_alertmanager_yaml()
    for old, new in (
        ("http://notifier.example.net:8080", notifier.url),
        ("/etc/alertmanager/notifier-token", str(token_file)),
        ("group_wait: 30s", "group_wait: 1s"),
        ("group_interval: 5m", "group_interval: 1s"),
    ):
        assert old in config, old
        config = config.replace(old, new)
    return config


def trunk_alerts(starts_at: float, ends_at: float) -> list[dict[str, object]]:
    """Two alerts of one group (alertname, instance): Alertmanager sends them in one webhook.
    As Prometheus does, every post of an alert carries when it started."""
    return [
        {
            "labels": {
                "alertname": "TrunkDown",
                "instance": "pbx01:9100",
                "job": "pbx",
                "severity": "critical",
                "team": "voice",
                "trunk": trunk,
            },
            "annotations": {"summary": f"SIP trunk {trunk} of pbx01 is down"},
            "startsAt": rfc3339(starts_at),
            "endsAt": rfc3339(ends_at),
            "generatorURL": "http://prometheus.example.net:9090/graph?g0.expr=trunk_up",
        }
        for trunk in ("1", "2")
    ]


def test_alertmanager_alerts_are_mailed_firing_then_resolved_via_xoauth2(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer
) -> None:
    token_file = tmp_path / "webhook-token"
    token_file.write_text(secrets.token_urlsafe(24) + "\n")
    with smtp_server(pki, authserver) as smtp:
        oauth2 = microsoft365_password_grant(authserver, CLIENT_ID, tmp_path / "mailbox")
        config = oauth2_config(smtp, pki, oauth2)
        # As the README says: Alertmanager has grouped already, one webhook is one mail.
        config["routes"][0].update(
            group_wait_s=0, group_interval_s=0, match={"receivers": ["alertmanager"]}
        )
        config["webhooks"] = {"bearer_token_file": str(token_file)}
        with (
            NotifierProcess(tmp_path / "notifier", config) as notifier,
            Alertmanager(tmp_path / "am", alertmanager_config(notifier, token_file)) as am,
        ):
            started = time.time()
            am.post_alerts(trunk_alerts(started, ends_at=started + 3600))
            firing = wait_for(lambda: smtp.received, 60, "the firing mail")[0]
            assert str(firing.message["Subject"]).strip() == "[2 ALARMS] pbx01:9100"
            text = firing.message.get_body(("plain",)).get_content()
            assert "SIP trunk 1 of pbx01 is down" in text and "SIP trunk 2" in text
            assert "trunk=1" in text and "trunk=2" in text and "team=voice" in text
            assert "pbx01:9100  pbx  TrunkDown" in text  # device, job, alertname

            am.post_alerts(trunk_alerts(started, ends_at=time.time()))
            resolved = wait_for(lambda: smtp.received[1:], 60, "the resolved mail")[0]
            assert str(resolved.message["Subject"]).strip() == "[2 CLEARED] pbx01:9100"
            text = resolved.message.get_body(("plain",)).get_content()
            assert "CLEARED  pbx01:9100  pbx  TrunkDown" in text and "trunk=2" in text
            assert len(smtp.received) == 2

        for mail in (firing, resolved):
            assert mail.rcpt_tos == (RECIPIENT,)
            assert mail.tls and mail.auth_mechanism == "XOAUTH2" and mail.auth_identity == USER
        assert all(a.success for a in smtp.auth_attempts), "the SMTP server refused a token"
        assert authserver.token_requests["password"] >= 1
