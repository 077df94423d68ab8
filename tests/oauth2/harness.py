"""What the OAuth2 end-to-end tests share: an SMTP server that checks bearer tokens against the
test authorization server, a notifier process with an OAuth2 account, and the ways a person
signs an account in (the /oauth2/ page, `notifier oauth2 authorize`, the device grant)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.authserver import AuthServer
from tests.certs import TestPKI
from tests.oauth2.conftest import KeyPair, _keypair
from tests.service import NotifierProcess
from tests.smtpserver import SmtpTestServer

USER = "alice@example.com"
PASSWORD = "correct horse"
RECIPIENT = "ops@example.test"


def bearer_check(server: AuthServer, apps: Iterable[str] = ()) -> Callable[[str, str], bool]:
    """What the SMTP server accepts: a token the authorization server signed, not expired, for
    this mailbox (or from an app allowed to send as any mailbox: SMTP.SendAsApp)."""
    allowed_apps = set(apps)

    def check(user: str, token: str) -> bool:
        try:
            claims = server.verify(token)
        except jwt.InvalidTokenError:
            return False
        return bool(claims["sub"] == user or claims.get("client_id") in allowed_apps)

    return check


def smtp_server(pki: TestPKI, server: AuthServer, apps: Iterable[str] = ()) -> SmtpTestServer:
    """Like smtp.office365.com:587: STARTTLS, then AUTH XOAUTH2 / OAUTHBEARER only."""
    return SmtpTestServer(
        tls="starttls",
        pki=pki,
        mechanisms=("XOAUTH2", "OAUTHBEARER"),
        token_validator=bearer_check(server, apps),
    )


def oauth2_config(
    smtp: SmtpTestServer, pki: TestPKI, oauth2: dict[str, Any], **spool: float
) -> dict[str, Any]:
    """A notifier config with one OAuth2 account `ops` (mailbox USER) and one route."""
    return {
        "accounts": [
            {
                "name": "ops",
                "server": f"127.0.0.1:{smtp.port}",
                "tls": "starttls",
                "ca_file": str(pki.ca_file),
                "sender_address": USER,
                "sender_name": "notifier",
                "oauth2": oauth2,
            }
        ],
        "routes": [
            {
                "name": "ops",
                "account": "ops",
                "to": [RECIPIENT],
                "group_wait_s": 0.2,
                "group_interval_s": 0.0,
                "repeat_interval_s": 3600.0,
                "max_mails_per_minute": 600,
            }
        ],
        "spool": {"retry_base_s": 0.2, "retry_max_s": 1.0, **spool},
    }


def microsoft365_password_grant(
    server: AuthServer, client_id: str, password_file: Path
) -> dict[str, Any]:
    """The `[accounts.oauth2]` table of the microsoft365 mode with the password grant: a public
    client, the mailbox password in a file, no person needed."""
    password_file.write_text(PASSWORD + "\n")
    return {
        "mode": "microsoft365",
        "tenant": "contoso.onmicrosoft.com",
        "client_id": client_id,
        "resource_owner": USER,
        "resource_owner_password_file": str(password_file),
        "token_endpoint": server.token_url,
    }


def callback_uri(proc: NotifierProcess) -> str:
    """The redirect URI the /oauth2/ page shows for a service listening on 127.0.0.1."""
    return f"http://localhost:{proc.http_port}/oauth2/callback"


def post_alarm(proc: NotifierProcess, code: str = "0x00010002", text: str = "Registration down"):  # type: ignore[no-untyped-def]
    response = httpx.post(
        f"{proc.url}/api/v1/records",
        json={
            "type": "alarm",
            "severity": "Major",
            "code": code,
            "host": "gw01",
            "source": "RELAY/RECH",
            "text": text,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response


def codes_received(smtp: SmtpTestServer) -> set[str]:
    codes: set[str] = set()
    for mail in list(smtp.received):
        body = mail.message.get_body(("plain",))
        assert body is not None
        codes |= set(re.findall(r"0x[0-9a-f]{8}", body.get_content()))
    return codes


def oauth2_page(proc: NotifierProcess, auth: tuple[str, str] | None = None) -> str:
    page = httpx.get(f"{proc.url}/oauth2/", auth=auth, timeout=10)
    assert page.status_code == 200, page.text
    return page.text


def form_token(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "no form token on the page"
    return match.group(1)


def row_of(html: str, account: str) -> str:
    """The text of the account's row on /oauth2/, tags stripped."""
    return row_text(html, f"account-{account}")


def row_text(html: str, row_id: str) -> str:
    """The text of the table row with id `row_id`, tags stripped (the status page names its
    rows account-NAME and forward-NAME, /oauth2/ account-NAME)."""
    match = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', html, re.S)
    assert match, f"no row {row_id}"
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def notice_of(html: str) -> str:
    match = re.search(r'<div class="notice[^"]*" id="notice">(.*?)</div>', html, re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split()) if match else ""


def sign_in_on_page(proc: NotifierProcess, server: AuthServer, account: str = "ops") -> str:
    """Authorize on /oauth2/, log in and consent at the provider, follow the redirect back;
    returns the notice the callback page shows."""
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        token = form_token(http.get("/oauth2/").text)
        start = http.post("/oauth2/authorize", data={"account": account, "csrf": token})
        assert start.status_code == 303, start.text
        back = server.authorize(start.headers["location"], USER, PASSWORD)
        assert back.startswith(callback_uri(proc)), back
        page = http.get(back.replace("localhost", "127.0.0.1", 1))
    assert page.status_code == 200, page.text
    return notice_of(page.text)


def notifier_cli(
    proc: NotifierProcess, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", args[0], "--config", str(proc.config_path), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=proc.workdir,
    )


@contextlib.contextmanager
def cli_authorize(proc: NotifierProcess, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`notifier oauth2 authorize ops ...` running, its output readable line by line; killed
    if still running when the block ends, and its output pipe closed."""
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "notifier",
            "oauth2",
            "authorize",
            "ops",
            *args,
            "--config",
            str(proc.config_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=proc.workdir,
    ) as cli:
        try:
            yield cli
        finally:
            if cli.poll() is None:
                cli.kill()


def read_until(cli: subprocess.Popen[str], pattern: str, timeout: float = 20) -> re.Match[str]:
    """Lines from the CLI until one matches `pattern` (the lines read are kept for errors)."""
    assert cli.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = cli.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def write_json(path: Path, data: dict[str, Any]) -> str:
    path.write_text(json.dumps(data, indent=2))
    return str(path)


def make_keys(directory: Path, kind: str = "rsa") -> KeyPair:
    """A private key (PEM file) with a self-signed certificate, as uploaded to an app."""
    if kind == "ec":
        return _keypair(ec.generate_private_key(ec.SECP256R1()), directory)
    return _keypair(rsa.generate_private_key(public_exponent=65537, key_size=2048), directory)


SERVICE_ACCOUNT = "notifier@project.iam.gserviceaccount.com"


def service_account_json(directory: Path, server: AuthServer) -> str:
    """A Google service account allowed to act for USER (domain-wide delegation), registered
    at `server`; returns the path of its downloaded JSON key, as Google hands it out."""
    keys = make_keys(directory / "sa")
    server.add_service_account(SERVICE_ACCOUNT, keys.public_pem, "k1d", subjects=[USER])
    return write_json(
        directory / "service-account.json",
        {
            "type": "service_account",
            "client_email": SERVICE_ACCOUNT,
            "private_key_id": "k1d",
            "private_key": keys.private_pem.decode(),
            "token_uri": server.token_url,
        },
    )


def microsoft365_app_certificate(
    directory: Path, server: AuthServer, client_id: str
) -> dict[str, Any]:
    """The `[accounts.oauth2]` table of mode microsoft365_app with a certificate credential,
    its app registered at `server`: the client-credentials grant, no person needed."""
    keys = make_keys(directory / "app")
    server.add_client(client_id, public_key_pem=keys.public_pem, certificate=keys.certificate)
    return {
        "mode": "microsoft365_app",
        "tenant": "contoso.onmicrosoft.com",
        "client_id": client_id,
        "private_key_file": str(keys.private_file),
        "certificate_file": str(keys.certificate_file),
        "token_endpoint": server.token_url,
    }
