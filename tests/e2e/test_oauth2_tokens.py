"""Acceptance 2-5 of the OAuth2 issue against a real `notifier run`: short-lived tokens are
refreshed ahead of expiry, one refresh serves many senders, a revoked grant parks the mails
until a person signs in again, a token-endpoint outage loses nothing, and a store under the
wrong key stops the start with one clear line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from notifier.config import load_settings
from notifier.mail.accounts import build_transport
from notifier.mail.testmail import compose_test_mail
from notifier.mail.transport import SendResult
from notifier.oauth2.filestore import STORE_FILE, FileTokenStore
from notifier.oauth2.runtime import OAuth2Runtime
from notifier.oauth2.store import StoredTokens
from tests.authserver import AuthServer
from tests.certs import TestPKI
from tests.oauth2.harness import (
    PASSWORD,
    USER,
    codes_received,
    notifier_cli,
    oauth2_config,
    oauth2_page,
    post_alarm,
    row_of,
    sign_in_on_page,
    smtp_server,
)
from tests.service import NotifierProcess, render_toml, wait_for

SECRET = "client secret value"


def _generic(server: AuthServer, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "client_secret_post",
        "client_id": "notifier",
        "client_secret": SECRET,
        "token_endpoint": server.token_url,
        "authorization_url": server.authorize_url,
        "scope": "smtp offline_access",
        **extra,
    }


def _signed_in_service(
    tmp_path: Path, pki: TestPKI, server: AuthServer, smtp: Any, **oauth2: Any
) -> NotifierProcess:
    proc = NotifierProcess(tmp_path)
    proc.overrides = oauth2_config(smtp, pki, _generic(server, **oauth2))
    server.add_client(
        "notifier",
        secret=SECRET,
        redirect_uris=[f"http://localhost:{proc.http_port}/oauth2/callback"],
    )
    proc.start()
    assert "ops is authorized" in sign_in_on_page(proc, server)
    return proc


@pytest.fixture
def short_lived() -> Iterator[AuthServer]:
    """Access tokens that live 5 seconds."""
    with AuthServer(access_token_lifetime_s=5) as server:
        server.add_user(USER, PASSWORD)
        yield server


def test_five_second_tokens_over_thirty_seconds_are_refreshed_ahead_and_never_refused(
    tmp_path: Path, pki: TestPKI, short_lived: AuthServer
) -> None:
    """Acceptance 2, the issue's numbers: 5 s tokens, alarms for 30 s. refresh_margin_s = 2
    plays the part of Microsoft's 10 minutes."""
    with smtp_server(pki, short_lived) as smtp:
        proc = _signed_in_service(tmp_path, pki, short_lived, smtp, refresh_margin_s=2.0)
        try:
            sent: set[str] = set()
            start = time.monotonic()
            i = 0
            while time.monotonic() - start < 30:
                code = f"0x0001{i:04x}"
                post_alarm(proc, code=code)
                sent.add(code)
                i += 1
                time.sleep(1.5)
            wait_for(lambda: sent <= codes_received(smtp), 20, "every alarm mailed")
            refused = [a for a in smtp.auth_attempts if not a.success]
            assert refused == [], "the SMTP server saw an expired token (535)"
            # 30 s of 5 s tokens with a 2 s margin: a refresh every ~3 s.
            assert short_lived.token_requests["refresh_token"] >= 5
            assert proc.proc is not None and proc.proc.poll() is None
            # Rotation: the refresh token stored is the one the server still honours.
            stored = asyncio.run(FileTokenStore.open(proc.data_dir).get("ops"))
            assert stored is not None
            assert short_lived.live_refresh_tokens("notifier") == [stored.refresh_token]
            assert "smtp_token_refused" not in proc.logs()
        finally:
            proc.stop()


async def test_twenty_concurrent_sends_need_one_refresh(tmp_path: Path, pki: TestPKI) -> None:
    """Acceptance 2: after a restart with an expired cached token, 20 senders at once."""
    with AuthServer() as server, smtp_server(pki, server) as smtp:
        server.add_user(USER, PASSWORD)
        server.add_client("notifier", secret=SECRET, redirect_uris=["http://localhost:9/cb"])
        config = tmp_path / "notifier.toml"
        body = oauth2_config(smtp, pki, _generic(server, redirect_uri="http://localhost:9/cb"))
        config.write_text(render_toml({"data_dir": str(tmp_path / "var"), **body}))
        settings = load_settings(str(config))
        runtime = await OAuth2Runtime.open(settings)
        assert runtime is not None
        provider = runtime.providers["ops"]
        url, state = runtime.flows.start_authorization("ops", provider.spec)
        back = await asyncio.to_thread(server.authorize, url, USER, PASSWORD)
        await runtime.flows.complete_authorization(state, parse_qs(urlsplit(back).query)["code"][0])
        # The cached access token is gone (expired while the service was down).
        stored = await runtime.store.get("ops")
        assert stored is not None
        await runtime.store.put("ops", replace(stored, access_token=None, expires_at=None))
        await runtime.close()

        runtime = await OAuth2Runtime.open(settings)
        assert runtime is not None
        account = settings.account("ops")
        senders = [
            build_transport(settings.data_dir, account, runtime.providers["ops"]) for _ in range(20)
        ]
        message = compose_test_mail(settings, "ops").message
        try:
            results = await asyncio.gather(*(s.send([message]) for s in senders))
        finally:
            for s in senders:
                await s.close()
            await runtime.close()
        assert all(isinstance(r[0], SendResult) for r in results), results
        assert len(smtp.received) == 20
        assert server.token_requests["refresh_token"] == 1
        latest = await FileTokenStore.open(tmp_path / "var").get("ops")
        assert latest is not None and server.live_refresh_tokens("notifier") == [
            latest.refresh_token
        ]


def test_revoked_grant_parks_mail_until_signed_in_again(tmp_path: Path, pki: TestPKI) -> None:
    """Acceptance 3. refresh_margin_s at the token lifetime: every mail refreshes, so the
    revocation is noticed by the next mail."""
    with AuthServer(access_token_lifetime_s=3) as server, smtp_server(pki, server) as smtp:
        server.add_user(USER, PASSWORD)
        proc = _signed_in_service(tmp_path, pki, server, smtp, refresh_margin_s=3.0)
        try:
            post_alarm(proc, code="0x00010001")
            wait_for(lambda: "0x00010001" in codes_received(smtp), what="the first alarm")
            server.revoke_refresh_tokens(USER)  # e.g. the user changed the password
            post_alarm(proc, code="0x00010002")

            row = wait_for(
                lambda: "needs authorization" in (r := row_of(oauth2_page(proc), "ops")) and r,
                what="the account to need authorization",
            )
            assert "revoked: authorize again" in row
            status = notifier_cli(proc, "oauth2", "status")
            assert status.returncode == 1
            assert "needs authorization" in status.stdout
            assert "revoked: authorize again" in status.stdout
            spooled = notifier_cli(proc, "spool", "list")
            assert spooled.returncode == 0
            states = [line.split()[-3] for line in spooled.stdout.splitlines()]
            # The first alarm was mailed; the second waits (retry, ready or leased: not dead).
            assert sorted(states)[0] == "route:ops:done" and len(states) == 2
            assert states[0] in ("route:ops:retry", "route:ops:ready", "route:ops:leased")
            assert "0x00010002" not in codes_received(smtp)

            assert "ops is authorized" in sign_in_on_page(proc, server)
            wait_for(lambda: "0x00010002" in codes_received(smtp), what="the parked alarm")
            assert "ok" in row_of(oauth2_page(proc), "ops").split()
            dead = notifier_cli(proc, "spool", "list", "--state", "dead")
            assert "0x0001" not in dead.stdout
        finally:
            proc.stop()


def test_token_endpoint_outage_is_retried_and_loses_nothing(tmp_path: Path, pki: TestPKI) -> None:
    """Acceptance 4: the token endpoint is down for a minute, both ways an endpoint is down:
    30 s of HTTP 503, then 30 s of refused connections. With refresh_margin_s at the token
    lifetime every mail needs the endpoint, and the spool retries every second
    (retry_max_s = 1), so the outage is hit many times."""
    with AuthServer(access_token_lifetime_s=3) as server, smtp_server(pki, server) as smtp:
        server.add_user(USER, PASSWORD)
        proc = _signed_in_service(tmp_path, pki, server, smtp, refresh_margin_s=3.0)
        try:
            post_alarm(proc, code="0x00020000")
            wait_for(lambda: "0x00020000" in codes_received(smtp), what="the first alarm")
            before = server.token_requests["refresh_token"]
            server.outage(30, "503")
            sent = {"0x00020000"}
            for i in range(1, 4):
                post_alarm(proc, code=f"0x0002000{i}")
                sent.add(f"0x0002000{i}")
                time.sleep(2)
            time.sleep(24.5)  # until the 503s end
            server.outage(30, "refuse")
            for i in range(4, 7):
                post_alarm(proc, code=f"0x0002000{i}")
                sent.add(f"0x0002000{i}")
                time.sleep(2)
            wait_for(lambda: sent <= codes_received(smtp), 80, "every alarm after the outage")
            assert proc.proc is not None and proc.proc.poll() is None, "notifier crashed"
            retries = [
                e.get("error")
                for e in proc.log_events()
                if e.get("event") == "oauth2 token endpoint failed, retrying"
            ]
            # Both kinds of outage were seen and retried, with backoff, more than once each.
            assert retries.count("http_503") >= 2 and retries.count("unreachable") >= 2
            assert server.token_requests["refresh_token"] > before
            dead = notifier_cli(proc, "spool", "list", "--state", "dead")
            assert "0x0002" not in dead.stdout
        finally:
            proc.stop()


def test_store_under_another_key_stops_the_start_with_one_clear_line(
    tmp_path: Path, pki: TestPKI
) -> None:
    """Acceptance 5 through `notifier run` (the file itself: tests/oauth2/test_store.py)."""
    data = tmp_path / "var"
    asyncio.run(
        FileTokenStore.open(data, secret="the old secret").put(
            "ops", StoredTokens(client_id="notifier", refresh_token="rt-value-that-must-not-leak")
        )
    )
    with AuthServer() as server, smtp_server(pki, server) as smtp:
        body = oauth2_config(smtp, pki, _generic(server, redirect_uri="http://localhost:9/cb"))
        config = tmp_path / "notifier.toml"
        config.write_text(
            render_toml({"data_dir": str(data), "oauth2": {"store_secret": "a new secret"}, **body})
        )
        run = subprocess.run(
            [sys.executable, "-m", "notifier", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    output = run.stdout + run.stderr
    assert run.returncode == 1
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, output
    assert "cannot be decrypted with this key" in errors[0]
    assert "rt-value-that-must-not-leak" not in output
    assert b"rt-value" not in (data / STORE_FILE).read_bytes()
