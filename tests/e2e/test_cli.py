"""The commands an operator types: test-mail (the device's "Test" button) and send-alarm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.certs import TestPKI
from tests.e2e.test_alarm_mail import account, route
from tests.service import NotifierProcess, render_toml, wait_for
from tests.smtpserver import SmtpTestServer


def notifier(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def write_config(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "notifier.toml"
    path.write_text(render_toml({"data_dir": str(tmp_path / "var"), **config}))
    return path


def test_test_mail_over_starttls_with_password_says_what_happened(
    tmp_path: Path, pki: TestPKI
) -> None:
    with SmtpTestServer(tls="starttls", pki=pki, users={"alarms": "s3cret"}) as smtp:
        secret = tmp_path / "smtp-password"
        secret.write_text("s3cret\n")
        cfg = write_config(
            tmp_path,
            {
                "accounts": [
                    {
                        **account(smtp),
                        "tls": "starttls",
                        "ca_file": str(pki.ca_file),
                        "username": "alarms",
                        "password_file": str(secret),
                    }
                ]
            },
        )
        out = notifier("test-mail", "--config", str(cfg), "--to", "me@example.test")
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"transport: smtp (127.0.0.1:{smtp.port})" in out.stdout
        assert "tls: starttls TLSv1.3" in out.stdout
        assert "auth used: PLAIN" in out.stdout
        assert "result: accepted for me@example.test" in out.stdout
        assert "s3cret" not in out.stdout + out.stderr
        (mail,) = smtp.received
        assert mail.tls and mail.auth_mechanism == "PLAIN" and mail.auth_identity == "alarms"
        assert str(mail.message["Subject"]).startswith("[TEST]")


def test_test_mail_with_a_wrong_password_fails_with_the_reason_and_status_1(
    tmp_path: Path, pki: TestPKI
) -> None:
    with SmtpTestServer(tls="starttls", pki=pki, users={"alarms": "s3cret"}) as smtp:
        cfg = write_config(
            tmp_path,
            {
                "accounts": [
                    {
                        **account(smtp),
                        "tls": "starttls",
                        "ca_file": str(pki.ca_file),
                        "username": "alarms",
                        "password": "wrong-password",
                    }
                ]
            },
        )
        out = notifier("test-mail", "--config", str(cfg), "--to", "me@example.test")
        assert out.returncode == 1
        assert "error:" in out.stdout and "535" in out.stdout
        assert "wrong-password" not in out.stdout + out.stderr
        assert smtp.received == []


def test_test_mail_without_smtp_server_writes_the_outbox(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {})
    out = notifier("test-mail", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "transport: outbox" in out.stdout
    (mail,) = (tmp_path / "var" / "outbox").glob("*.eml")
    text = mail.read_text()
    assert "Subject: [TEST] notifier test mail from notifier" in text
    assert "through account 'ops'" in text


def test_test_mail_for_an_unknown_account_is_a_usage_error(tmp_path: Path) -> None:
    out = notifier("test-mail", "--config", str(write_config(tmp_path, {})), "--account", "nope")
    assert out.returncode == 2
    assert out.stderr.strip() == "notifier: no account named 'nope' (have ops)"


def test_send_alarm_reaches_a_running_notifier_and_is_mailed(tmp_path: Path) -> None:
    with SmtpTestServer() as smtp:
        proc = NotifierProcess(tmp_path, {"accounts": [account(smtp)], "routes": [route()]})
        proc.start()
        try:
            out = notifier(
                "send-alarm",
                "--config",
                str(proc.config_path),
                "--host",
                "gw07",
                "--text",
                "Trunk down",
            )
            assert out.returncode == 0, out.stderr
            assert "sent alarm 0x00010002 from gw07" in out.stdout
            mail = wait_for(lambda: smtp.received, what="the mail")[0]
            assert (
                mail.message["Subject"] == "[ALARM Major] gw07 RELAY/RECH: Trunk down (0x00010002)"
            )
        finally:
            proc.stop()


def test_send_alarm_to_nothing_listening_is_one_line_and_status_1(tmp_path: Path) -> None:
    out = notifier("send-alarm", "--url", "http://127.0.0.1:9/api/v1/records")
    assert out.returncode == 1
    assert out.stderr.startswith("notifier: cannot reach notifier at http://127.0.0.1:9/")
    assert len(out.stderr.strip().splitlines()) == 1
