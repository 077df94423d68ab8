"""The commands an operator types: test-mail (the device's "Test" button) and send-alarm."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.cli import build_parser
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
    assert f"Subject: [TEST] notifier test mail from {socket.gethostname()}:" in text
    assert "through account 'ops'" in text


def test_test_mail_for_an_unknown_account_is_a_usage_error(tmp_path: Path) -> None:
    out = notifier("test-mail", "--config", str(write_config(tmp_path, {})), "--account", "nope")
    assert out.returncode == 2
    assert out.stderr.strip() == "notifier: no account named 'nope' (have ops)"


def test_send_alarm_sends_only_what_was_given_and_the_mail_invents_no_severity(
    tmp_path: Path,
) -> None:
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
                "--code",
                "0x00010002",
                "--text",
                "Trunk down",
            )
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith(
                'sent {"type": "alarm", "code": "0x00010002", "host": "gw07", "text": "Trunk down"}'
            )
            mail = wait_for(lambda: smtp.received, what="the mail")[0]
            # No severity and no source were given: the mail claims neither.
            assert mail.message["Subject"] == "[ALARM] gw07: Trunk down (0x00010002)"
            body = mail.message.get_body(("plain",))
            assert body is not None
            text = body.get_content()
            assert "Severity:     not sent" in text
            assert "Source:" not in text and "RELAY/RECH" not in text
        finally:
            proc.stop()


def test_send_alarm_without_text_or_code_is_a_usage_error() -> None:
    out = notifier("send-alarm", "--url", "http://127.0.0.1:9/api/v1/records", "--host", "gw1")
    assert out.returncode == 2
    assert out.stderr == "notifier: send-alarm: give --text or --code (or both)\n"


def test_send_alarm_to_nothing_listening_is_one_line_and_status_1(tmp_path: Path) -> None:
    out = notifier("send-alarm", "--url", "http://127.0.0.1:9/api/v1/records", "--code", "0x1")
    assert out.returncode == 1
    assert out.stderr.startswith("notifier: cannot reach notifier at http://127.0.0.1:9/")
    assert len(out.stderr.strip().splitlines()) == 1


BAD_REGEX_ROUTE = {"name": "ops", "to": ["ops@example.test"], "match": {"text": "trunk ("}}
BAD_REGEX_LINE = (
    "notifier: config: routes.0.match.text: 'trunk (' is not a valid regular expression: "
    "missing ), unterminated subpattern at position 6\n"
)


def test_check_config_refuses_a_bad_route_regex_with_the_line_run_gives(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path, {"routes": [BAD_REGEX_ROUTE]})
    checked = notifier("check-config", "--config", str(cfg))
    assert checked.returncode == 2
    assert checked.stdout == ""
    assert checked.stderr == BAD_REGEX_LINE
    ran = notifier("run", "--config", str(cfg))
    assert ran.returncode == 2
    assert ran.stderr == BAD_REGEX_LINE


@pytest.mark.parametrize(
    ("match", "line"),
    [
        (
            {"codes": ["0x20-0x10"]},
            "routes.0.match.codes: '0x20-0x10' is not a range like 0x00010000-0x0001ffff",
        ),
        ({"severities": ["loud"]}, "routes.0.match.severities: unknown severity 'loud'"),
    ],
)
def test_check_config_refuses_bad_code_ranges_and_severities(
    tmp_path: Path, match: dict[str, list[str]], line: str
) -> None:
    cfg = write_config(tmp_path, {"routes": [{"name": "ops", "match": match}]})
    out = notifier("check-config", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.startswith(f"notifier: config: {line}")
    assert len(out.stderr.splitlines()) == 1


def test_check_config_refuses_a_tls_certificate_that_does_not_load(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate\n")
    cfg = write_config(
        tmp_path,
        {
            "http": {
                "listen": "127.0.0.1:8443",
                "tls_cert_file": str(cert),
                "tls_key_file": str(cert),
            }
        },
    )
    out = notifier("check-config", "--quiet", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.startswith(
        f"notifier: config: http.tls_cert_file: cannot load certificate {str(cert)!r}"
    )
    assert len(out.stderr.splitlines()) == 1


def test_check_config_quiet_prints_nothing_for_a_valid_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"web": {"admin_password": "hunter2"}})
    loud = notifier("check-config", "--config", str(cfg))
    assert loud.returncode == 0
    assert "configuration is valid" in loud.stdout and "hunter2" not in loud.stdout
    quiet = notifier("check-config", "--quiet", "--config", str(cfg))
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


@pytest.mark.parametrize(
    "where",
    [
        ["--config", "{cfg}", "spool", "stats"],
        ["spool", "--config", "{cfg}", "stats"],
        ["spool", "stats", "--config", "{cfg}"],
        ["spool", "stats", "-c", "{cfg}"],
        ["spool", "list", "--state", "dead", "--config", "{cfg}"],
        ["env", "spool", "stats"],
    ],
)
def test_config_is_read_wherever_it_is_given(tmp_path: Path, where: list[str]) -> None:
    cfg = write_config(tmp_path, {})
    env = None
    if where[0] == "env":
        env = {**os.environ, "NOTIFIER_CONFIG": str(cfg)}
        where = where[1:]
    args = [str(cfg) if a == "{cfg}" else a for a in where]
    out = subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path.parent,
        env=env,
    )
    # The config's data_dir is the one looked at: the file was read.
    assert out.returncode == 1, out.stderr
    assert out.stderr == (
        f"notifier: no spool at {tmp_path / 'var' / 'spool.sqlite3'}: "
        f"the service has not run with data_dir={tmp_path / 'var'} yet\n"
    )


def test_oauth2_status_reads_the_config_before_or_after_the_action(tmp_path: Path) -> None:
    # A config with a mistake in it: the one line about it shows the file was read.
    cfg = write_config(tmp_path, {"web": {"admin_pasword": "x"}})
    for args in (["oauth2", "status", "--config", str(cfg)], ["-c", str(cfg), "oauth2", "status"]):
        out = notifier(*args)
        assert out.returncode == 2
        assert out.stderr == (
            "notifier: config: web.admin_pasword: unknown key (did you mean 'admin_password'?)\n"
        )


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, Any]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_in_help_has_a_description_and_names_its_default() -> None:
    undocumented = []
    for name, parser in _parsers(build_parser(), "notifier"):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                undocumented.append(f"{where}: no description")
            elif action.option_strings and not action.required and "default" not in action.help:
                # (A required option has no default; its help says it is required.)
                undocumented.append(f"{where}: no default in {action.help!r}")
    assert undocumented == []


def test_every_command_and_action_takes_config() -> None:
    lacking = [
        name
        for name, parser in _parsers(build_parser(), "notifier")
        if not any("--config" in a.option_strings for a in parser._actions)
    ]
    assert lacking == []


def test_a_second_run_on_the_same_data_dir_is_one_line_with_a_hint_and_status_1(
    tmp_path: Path,
) -> None:
    first = NotifierProcess(tmp_path)
    first.start()
    try:
        second = notifier("run", "--config", str(first.config_path), cwd=tmp_path)
        assert second.returncode == 1
        assert "Traceback" not in second.stderr
        (line,) = second.stderr.splitlines()
        event = json.loads(line)
        assert event["event"] == "cannot start"
        assert event["error"] == (
            f"another notifier process is using the spool {first.data_dir / 'spool.sqlite3'}: "
            "stop it, or give this one another data_dir"
        )
        # The first one keeps serving.
        assert httpx.get(f"{first.url}/healthz", timeout=5).status_code == 200
    finally:
        first.stop()


def test_a_spool_that_is_not_a_database_is_one_line_with_a_hint(tmp_path: Path) -> None:
    proc = NotifierProcess(tmp_path)
    proc.data_dir.mkdir(mode=0o700)
    (proc.data_dir / "spool.sqlite3").write_bytes(b"this is not a database, it is a text file" * 99)
    proc.config_path.write_text(proc.config_text())
    out = notifier("run", "--config", str(proc.config_path), cwd=tmp_path)
    assert out.returncode == 1
    (line,) = out.stderr.splitlines()
    event = json.loads(line)
    assert event["event"] == "cannot start"
    assert "file is not a database" in event["error"]
    assert "restore it from a backup" in event["hint"]
