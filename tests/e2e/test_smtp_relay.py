"""Acceptance (issue 13, part 2): a device that only knows SMTP passwords sends through
notifier's relay, and the mail reaches an XOAUTH2-only server (tokens from the Authlib test
server) from the account's mailbox. Clients: Python's smtplib and swaks, on loopback without
AUTH, and with STARTTLS + AUTH. A SIGKILL after the relay's 250 loses nothing."""

from __future__ import annotations

import email
import email.policy
import shutil
import smtplib
import subprocess
import tomllib
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.authserver import AuthServer
from tests.certs import TestPKI
from tests.conftest import free_port
from tests.e2e.test_readme import README, code_blocks
from tests.oauth2.harness import (
    PASSWORD,
    USER,
    microsoft365_password_grant,
    oauth2_config,
    smtp_server,
)
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import SmtpTestServer

CLIENT_ID = "4a1c7e0e-notifier"
DEVICE, DEVICE_PASSWORD = "pbx01", "device password"
DEVICE_FROM = "pbx01@pbx.example.test"


@pytest.fixture
def authserver() -> Iterator[AuthServer]:
    with AuthServer() as server:
        server.add_user(USER, PASSWORD)
        server.add_client(CLIENT_ID)  # a public client: the password grant, no person needed
        yield server


def device_mail(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"PBX 01 <{DEVICE_FROM}>"
    message["To"] = "ops@example.test"
    message["Subject"] = subject
    message.set_content("Trunk 1 is down.\n")
    return message.as_bytes(policy=email.policy.SMTP)


def smtplib_send(
    port: int, subject: str, *, pki: TestPKI | None = None, rcpt: str = "ops@example.test"
) -> tuple[int, bytes]:
    """One mail through the relay; with `pki`, STARTTLS and AUTH as the device. The DATA reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        if pki is not None:
            client.starttls(context=pki.client_context())
            client.login(DEVICE, DEVICE_PASSWORD)
        client.mail(DEVICE_FROM)
        code, reply = client.rcpt(rcpt)
        assert code == 250, reply
        return client.data(device_mail(subject))


def relay_config(port: int, pki: TestPKI) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "tls_cert_file": str(pki.server_cert),
        "tls_key_file": str(pki.server_key),
        "users": {DEVICE: DEVICE_PASSWORD},
        "allowed_recipients": ["*@example.test"],
    }


def test_smtplib_and_swaks_relay_through_notifier_to_an_xoauth2_server_as_the_mailbox(
    tmp_path: Path, pki: TestPKI, authserver: AuthServer
) -> None:
    swaks = shutil.which("swaks")
    assert swaks, "swaks is missing: run scripts/install-test-deps.sh"
    oauth2 = microsoft365_password_grant(authserver, CLIENT_ID, tmp_path / "mailbox-password")
    relay_port = free_port()
    with smtp_server(pki, authserver) as smtp:
        config = oauth2_config(smtp, pki, oauth2)
        config["smtp_relay"] = relay_config(relay_port, pki)
        with NotifierProcess(tmp_path, config) as proc:
            assert smtplib_send(relay_port, "plain from loopback")[0] == 250
            assert smtplib_send(relay_port, "starttls and auth", pki=pki)[0] == 250
            done = subprocess.run(
                [
                    swaks,
                    "--server", "127.0.0.1", "--port", str(relay_port),
                    "--from", DEVICE_FROM, "--to", "noc@example.test",
                    "--tls", "--auth", "LOGIN",
                    "--auth-user", DEVICE, "--auth-password", DEVICE_PASSWORD,
                    "--header", "Subject: swaks with auth", "--body", "Trunk 2 is down.",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr

            mails = wait_for(lambda: smtp.received[2:] and smtp.received, what="three mails")
            by_subject = {str(m.message["Subject"]): m for m in mails}
            assert set(by_subject) == {
                "plain from loopback",
                "starttls and auth",
                "swaks with auth",
            }
            for mail in mails:
                assert mail.tls and mail.auth_mechanism == "XOAUTH2"
                assert mail.auth_identity == USER
                assert mail.mail_from == USER
                assert parseaddr(str(mail.message["From"]))[1] == USER
                assert parseaddr(str(mail.message["X-Original-From"]))[1] == DEVICE_FROM
                assert parseaddr(str(mail.message["Reply-To"]))[1] == DEVICE_FROM
            assert by_subject["swaks with auth"].rcpt_tos == ("noc@example.test",)
            assert by_subject["plain from loopback"].rcpt_tos == ("ops@example.test",)
            # The route did not mail the relayed mails as events.
            assert len(smtp.received) == 3

            page = httpx.get(f"{proc.url}/", timeout=10).text
            assert "SMTP relay" in page
            metrics = httpx.get(f"{proc.url}/metrics", timeout=10).text
            assert 'notifier_ingest_accepted_total{kind="event",receiver="smtp-relay"} 3.0' in (
                metrics
            )


def test_sigkill_after_the_relays_250_loses_no_mail(tmp_path: Path) -> None:
    # The account's server is down while the device sends: the mails can only be in the spool.
    smtp_port, relay_port = free_port(), free_port()
    config = {
        "accounts": [{"name": "ops", "server": f"127.0.0.1:{smtp_port}", "tls": "none"}],
        "smtp_relay": {"listen": f"127.0.0.1:{relay_port}"},
        "spool": {"retry_base_s": 0.2, "retry_max_s": 1.0},
    }
    proc = NotifierProcess(tmp_path, config)
    subjects = [f"alarm {n}" for n in range(5)]
    proc.start()
    try:
        for subject in subjects:
            assert smtplib_send(relay_port, subject)[0] == 250
        proc.kill()
        with SmtpTestServer(port=smtp_port) as smtp:
            proc.start()
            mails = wait_for(lambda: smtp.received[4:] and smtp.received, what="five mails")
            assert sorted(str(m.message["Subject"]) for m in mails) == subjects
            assert len({str(m.message["Message-ID"]) for m in mails}) == 5
    finally:
        proc.stop()


def test_the_readmes_relay_config_and_swaks_check_work_as_written(
    tmp_path: Path, pki: TestPKI
) -> None:
    start = README.index("\n### SMTP relay\n")
    text = README[start : README.index("\n## ", start)]
    (toml_block,) = code_blocks(text, "toml")
    (swaks_block,) = code_blocks(text, "sh")
    relay = tomllib.loads(toml_block)["smtp_relay"]
    # Only the host's paths and the address are the test's own.
    users_file = tmp_path / "relay-users"
    users_file.write_text("pbx01:secret\n")
    port = free_port()
    relay |= {
        "listen": f"127.0.0.1:{port}",
        "tls_cert_file": str(pki.server_cert),
        "tls_key_file": str(pki.server_key),
        "users_file": str(users_file),
    }
    with NotifierProcess(tmp_path, {"smtp_relay": relay}) as proc:
        command = swaks_block.replace(
            "--server 192.0.2.10 --port 2525", f"--server 127.0.0.1 --port {port}"
        )
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        (mail,) = wait_for(lambda: list(proc.outbox.glob("*.eml")), what="the relayed mail")
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert str(message["Subject"]) == "relay test"
    assert parseaddr(str(message["From"]))[1] == "notifier@example.com"  # the account's
    assert parseaddr(str(message["X-Original-From"]))[1] == "pbx01@pbx.example.com"
