"""Acceptance 1: each of the seven OAuth2 modes, configured as the README tells a user to,
gets its token from the test authorization server (signing in on /oauth2/, with
`notifier oauth2 authorize`, with the device grant, or with no person at all) and delivers an
alarm through an SMTP server that checks the bearer token's signature, expiry and mailbox.

The presets' Microsoft / Google endpoints are overridden with the test server's, as a user
would for a sovereign cloud or a custom IdP (for gmail and the service account, the endpoints
come from the downloaded JSON files themselves)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.authserver import AuthServer
from tests.certs import TestPKI
from tests.conftest import free_port
from tests.oauth2.harness import (
    PASSWORD,
    RECIPIENT,
    USER,
    cli_authorize,
    make_keys,
    microsoft365_app_certificate,
    microsoft365_password_grant,
    notifier_cli,
    oauth2_config,
    post_alarm,
    read_until,
    service_account_json,
    sign_in_on_page,
    smtp_server,
    write_json,
)
from tests.service import NotifierProcess, render_toml, wait_for
from tests.smtpserver import SmtpTestServer

CLIENT_ID = "4a1c7e0e-notifier"
CLIENT_SECRET = "client secret value"


@pytest.fixture
def authserver() -> Iterator[AuthServer]:
    with AuthServer() as server:
        server.add_user(USER, PASSWORD)
        yield server


def _deliver_alarm_and_check(
    proc: NotifierProcess, smtp: SmtpTestServer, mechanism: str = "XOAUTH2"
) -> None:
    post_alarm(proc, code="0x00010002")
    mail = wait_for(lambda: smtp.received, what="the alarm mail")[0]
    assert mail.rcpt_tos == (RECIPIENT,)
    assert mail.tls
    assert mail.auth_mechanism == mechanism
    assert mail.auth_identity == USER
    # The operator's check works for every mode too: `notifier test-mail` in its own process,
    # with the tokens the service keeps in the store.
    out = notifier_cli(proc, "test-mail", "--to", RECIPIENT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"auth used: {mechanism}" in out.stdout
    test_mail = wait_for(lambda: smtp.received[1:], what="the test mail")[0]
    assert str(test_mail.message["Subject"]).startswith("[TEST]")
    assert test_mail.auth_mechanism == mechanism and test_mail.auth_identity == USER
    assert "0x00010002" in str(mail.message["Subject"])
    assert all(a.success for a in smtp.auth_attempts), "the SMTP server refused a token"


def _run(
    tmp_path: Path, smtp: SmtpTestServer, pki: TestPKI, oauth2: dict[str, Any]
) -> NotifierProcess:
    proc = NotifierProcess(tmp_path, oauth2_config(smtp, pki, oauth2))
    proc.start()
    return proc


def test_exchange_signed_in_on_the_page_sends_with_xoauth2(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer
) -> None:
    with smtp_server(pki, authserver) as smtp:
        proc = NotifierProcess(tmp_path)
        proc.overrides = oauth2_config(
            smtp,
            pki,
            {
                "mode": "exchange",
                "tenant": "contoso.onmicrosoft.com",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "token_endpoint": authserver.token_url,
                "authorization_url": authserver.authorize_url,
            },
        )
        authserver.add_client(
            CLIENT_ID,
            secret=CLIENT_SECRET,
            redirect_uris=[f"http://localhost:{proc.http_port}/oauth2/callback"],
        )
        proc.start()
        try:
            assert "ops is authorized" in sign_in_on_page(proc, authserver)
            _deliver_alarm_and_check(proc, smtp)
            assert authserver.token_requests["authorization_code"] == 1
        finally:
            proc.stop()


def test_microsoft365_password_grant_needs_no_person(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer
) -> None:
    # A public client ("Allow public client flows"), the mailbox password in a file.
    authserver.add_client(CLIENT_ID)
    oauth2 = microsoft365_password_grant(authserver, CLIENT_ID, tmp_path / "mailbox-password")
    with smtp_server(pki, authserver) as smtp:
        proc = _run(tmp_path, smtp, pki, oauth2)
        try:
            _deliver_alarm_and_check(proc, smtp)
            assert authserver.token_requests["password"] == 1
        finally:
            proc.stop()


def test_microsoft365_app_client_credentials_with_a_certificate(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer
) -> None:
    oauth2 = microsoft365_app_certificate(tmp_path, authserver, CLIENT_ID)
    # The Exchange service principal may send as the mailbox (SMTP.SendAsApp).
    with smtp_server(pki, authserver, apps=[CLIENT_ID]) as smtp:
        proc = _run(tmp_path, smtp, pki, oauth2)
        try:
            _deliver_alarm_and_check(proc, smtp)
            assert authserver.token_requests["client_credentials"] == 1
        finally:
            proc.stop()


def test_gmail_with_the_downloaded_client_json_signed_in_from_the_cli(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer
) -> None:
    # A "Desktop app" OAuth client: Google redirects to a loopback port the CLI listens on.
    redirect = f"http://127.0.0.1:{free_port()}/"
    client_json = write_json(
        tmp_path / "client_secret.json",
        {
            "installed": {
                "client_id": "1234-notifier.apps.googleusercontent.com",
                "client_secret": "GOCSPX-test",
                "auth_uri": authserver.authorize_url,
                "token_uri": authserver.token_url,
                "redirect_uris": ["http://localhost"],
            }
        },
    )
    authserver.add_client(
        "1234-notifier.apps.googleusercontent.com", secret="GOCSPX-test", redirect_uris=[redirect]
    )
    with smtp_server(pki, authserver) as smtp:
        proc = _run(
            tmp_path,
            smtp,
            pki,
            {"mode": "gmail", "client_json_file": client_json, "redirect_uri": redirect},
        )
        try:
            with cli_authorize(proc) as cli:
                url = read_until(cli, r"^\s+(http://\S+/authorize\?\S+)$").group(1)
                assert "access_type=offline" in url and "prompt=consent" in url
                assert f"login_hint={USER.replace('@', '%40')}" in url
                back = authserver.authorize(url, USER, PASSWORD)
                page = httpx.get(back, timeout=10)
                assert page.status_code == 200 and "close this window" in page.text
                read_until(cli, r"account ops is authorized")
                assert cli.wait(10) == 0
            _deliver_alarm_and_check(proc, smtp)
        finally:
            proc.stop()


def test_google_service_account_with_domain_wide_delegation(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer
) -> None:
    key_json = service_account_json(tmp_path, authserver)
    with smtp_server(pki, authserver) as smtp:
        proc = _run(
            tmp_path,
            smtp,
            pki,
            {"mode": "google_service_account", "service_account_file": key_json},
        )
        try:
            _deliver_alarm_and_check(proc, smtp)
            assert authserver.token_requests["jwt_bearer"] == 1
        finally:
            proc.stop()


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_client_secret_post_generic_signed_in_on_the_page(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer, mechanism: str
) -> None:
    with smtp_server(pki, authserver) as smtp:
        proc = NotifierProcess(tmp_path)
        proc.overrides = oauth2_config(
            smtp,
            pki,
            {
                "mode": "client_secret_post",
                "mechanism": mechanism,
                "client_id": "notifier",
                "client_secret": CLIENT_SECRET,
                "token_endpoint": authserver.token_url,
                "authorization_url": authserver.authorize_url,
                "scope": "smtp offline_access",
            },
        )
        authserver.add_client(
            "notifier",
            secret=CLIENT_SECRET,
            redirect_uris=[f"http://localhost:{proc.http_port}/oauth2/callback"],
        )
        proc.start()
        try:
            assert "ops is authorized" in sign_in_on_page(proc, authserver)
            _deliver_alarm_and_check(proc, smtp, mechanism.upper())
        finally:
            proc.stop()


def test_client_secret_post_mode_with_client_auth_basic_uses_http_basic(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer
) -> None:
    # A provider that accepts the secret only by HTTP Basic (client_secret_basic): configured
    # as examples/oauth2/client_secret_post.toml says, with `client_auth = "basic"`.
    authserver.add_client(
        "notifier",
        secret=CLIENT_SECRET,
        auth_method="client_secret_basic",
        grant_types=["password", "refresh_token"],
    )
    with smtp_server(pki, authserver) as smtp:
        proc = _run(
            tmp_path,
            smtp,
            pki,
            {
                "mode": "client_secret_post",
                "client_auth": "basic",
                "grant": "password",
                "client_id": "notifier",
                "client_secret": CLIENT_SECRET,
                "resource_owner": USER,
                "resource_owner_password": PASSWORD,
                "token_endpoint": authserver.token_url,
                "scope": "smtp offline_access",
            },
        )
        try:
            _deliver_alarm_and_check(proc, smtp)
            assert authserver.token_requests["password"] == 1
        finally:
            proc.stop()


def test_private_key_jwt_generic_signed_in_with_the_device_grant(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer
) -> None:
    keys = make_keys(tmp_path / "app", "ec")
    authserver.add_client("notifier", public_key_pem=keys.public_pem, key_id="key-2024")
    with smtp_server(pki, authserver) as smtp:
        proc = _run(
            tmp_path,
            smtp,
            pki,
            {
                "mode": "private_key_jwt",
                "client_id": "notifier",
                "private_key_file": str(keys.private_file),
                "private_key_id": "key-2024",
                "token_endpoint": authserver.token_url,
                "authorization_url": authserver.authorize_url,
                "device_authorization_url": authserver.device_authorization_url,
                "scope": "smtp offline_access",
            },
        )
        try:
            with cli_authorize(proc, "--device") as cli:
                uri = read_until(cli, r"^On any device, open (\S+)$").group(1)
                code = read_until(cli, r"enter the code (\S+) ").group(1)
                approve = httpx.post(
                    uri,
                    data={
                        "user_code": code,
                        "username": USER,
                        "password": PASSWORD,
                        "action": "allow",
                    },
                    timeout=10,
                )
                assert approve.status_code == 200
                read_until(cli, r"account ops is authorized")
                assert cli.wait(10) == 0
            _deliver_alarm_and_check(proc, smtp)
            assert authserver.token_requests["device_code"] >= 1
        finally:
            proc.stop()


def test_status_cli_lists_every_account_without_secrets(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer
) -> None:
    authserver.add_client(CLIENT_ID)
    with smtp_server(pki, authserver) as smtp:
        proc = NotifierProcess(
            tmp_path,
            oauth2_config(
                smtp,
                pki,
                {
                    "mode": "exchange",
                    "tenant": "contoso.onmicrosoft.com",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "token_endpoint": authserver.token_url,
                    "authorization_url": authserver.authorize_url,
                },
            ),
        )
        proc.config_path.write_text(render_toml(proc.config()))
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "notifier",
                "oauth2",
                "status",
                "--config",
                str(proc.config_path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 1  # someone must sign in
        assert "ops" in out.stdout and "exchange" in out.stdout
        assert "needs authorization" in out.stdout and "not authorized yet" in out.stdout
        assert CLIENT_SECRET not in out.stdout + out.stderr
