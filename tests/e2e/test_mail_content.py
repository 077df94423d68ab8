"""End to end: what the mails say, through `notifier run` and aiosmtpd — the clear's severity
and set time, the mail time zone, the footer, the subject line, and the routes' own templates."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_alarm_mail import account, post_alarm, route
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import ReceivedMail, SmtpTestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def started(tmp_path: Path, smtp: SmtpTestServer, **config: Any) -> NotifierProcess:
    overrides: dict[str, Any] = {"accounts": [account(smtp)], "routes": [route()], **config}
    proc = NotifierProcess(tmp_path, overrides)
    proc.start()
    return proc


def plain(mail: ReceivedMail) -> str:
    body = mail.message.get_body(("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def html(mail: ReceivedMail) -> str:
    body = mail.message.get_body(("html",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def mails(smtp: SmtpTestServer, n: int) -> list[ReceivedMail]:
    received: list[ReceivedMail] = wait_for(
        lambda: smtp.received if len(smtp.received) >= n else None, what=f"{n} mail(s)"
    )
    return received


def test_clear_mail_shows_the_alarms_severity_and_set_time_in_the_mail_time_zone(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    proc = started(tmp_path, smtp, mail={"timezone": "Europe/Berlin"})
    try:
        set_at, cleared_at = "2026-11-30T08:00:00Z", "2026-11-30T09:05:00Z"
        assert post_alarm(proc, severity="Critical", date=set_at).status_code == 200
        mails(smtp, 1)
        # innovaphone devices send the clear with a severity of its own.
        clear = post_alarm(proc, type="clear", severity="Major", date=cleared_at)
        assert clear.status_code == 200
        text = plain(mails(smtp, 2)[1])
    finally:
        proc.stop()
    assert "Severity:     Critical\n" in text
    assert "Alarm set:    2026-11-30 09:00:00 CET\n" in text
    assert "Device time:  2026-11-30 10:05:00 CET\n" in text
    assert "Active for:   1h 5m\n" in text


def test_new_alarm_mail_has_no_active_for_and_no_raw_severity_that_says_the_same(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    proc = started(tmp_path, smtp)
    try:
        assert post_alarm(proc, severity="major").status_code == 200
        named = plain(mails(smtp, 1)[0])
        assert post_alarm(proc, severity="2", code="0x2").status_code == 200
        numbered = plain(mails(smtp, 2)[1])
    finally:
        proc.stop()
    assert "Severity:     Major\n" in named
    assert "Active for" not in named
    assert "Alarm set" not in named
    # A number says something the name does not: shown.
    assert "Severity:     Major (sent as 2)\n" in numbered


def test_footer_names_the_host_and_the_instance_that_sent_the_mail(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    proc = started(tmp_path, smtp)
    try:
        assert post_alarm(proc).status_code == 200
        mail = mails(smtp, 1)[0]
    finally:
        proc.stop()
    host = socket.gethostname()
    footer = f"Sent by notifier on {host} (instance {host}:{proc.http_port}), "
    assert footer in plain(mail)
    assert footer in html(mail)


def test_76_character_subject_is_not_folded_after_the_header_name(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    proc = started(tmp_path, smtp)
    try:
        assert post_alarm(proc, text="Registration down on trunk 12345").status_code == 200
        mail = mails(smtp, 1)[0]
    finally:
        proc.stop()
    expected = "[ALARM Major] gw01 RELAY/RECH: Registration down on trunk 12345 (0x00010002)"
    assert len(expected) == 76
    assert mail.message["Subject"] == expected  # no leading space
    raw_subject = re.search(rb"^Subject:(.*)$", mail.content, re.M)
    assert raw_subject is not None
    assert raw_subject.group(1).strip() == expected.encode()


ROUTE_TEMPLATES = {
    "subject_template": "{{ row.device }} meldet {{ row.text_line }}"
    '{% if row.device == "boom" %}{{ 1 // 0 }}{% endif %}',
    "body_template": "Gerät {{ row.device }}: {{ row.text }}\nAlarm um {{ row.time }}\n",
    "body_html_template": "<p>{{ row.text }}</p>",
}


def test_route_templates_shape_the_mail_and_html_escapes_device_text(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    proc = started(
        tmp_path, smtp, routes=[route(**ROUTE_TEMPLATES)], mail={"timezone": "Europe/Berlin"}
    )
    try:
        sent = post_alarm(proc, text="<b>Registration</b> down", date="2026-07-01T12:00:00Z")
        assert sent.status_code == 200
        mail = mails(smtp, 1)[0]
    finally:
        proc.stop()
    assert mail.message["Subject"] == "gw01 meldet <b>Registration</b> down"
    assert (
        plain(mail) == "Gerät gw01: <b>Registration</b> down\nAlarm um 2026-07-01 14:00:00 CEST\n"
    )
    assert html(mail).strip() == "<p>&lt;b&gt;Registration&lt;/b&gt; down</p>"


def test_a_route_template_failing_on_one_record_falls_back_to_the_built_in_and_says_so(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    proc = started(tmp_path, smtp, routes=[route(**ROUTE_TEMPLATES)])
    try:
        assert post_alarm(proc, host="boom").status_code == 200
        mail = mails(smtp, 1)[0]
    finally:
        proc.stop()
    assert (
        mail.message["Subject"] == "[ALARM Major] boom RELAY/RECH: Registration down (0x00010002)"
    )
    assert plain(mail).startswith("Gerät boom: Registration down")  # the other parts still render
    (warning,) = [e for e in proc.log_events() if e.get("event", "").startswith("route template")]
    assert warning["key"] == "subject_template"
    assert "ZeroDivisionError" in warning["error"]


def notifier(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        cwd=cwd,
    )


def test_template_errors_stop_check_config_and_run_with_the_key_and_the_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "n.toml"
    config.write_text(
        "[[routes]]\n"
        'name = "ops"\n'
        'subject_template = "{{ row.devcie }}"\n'
        "body_template = '''\nline one\n{% if row.code %}no end\n'''\n"
        'body_html_template = "{{ row.__class__.__mro__ }}"\n'
        "[mail]\n"
        'timezone = "Europe/Berlni"\n'
    )
    for command in ("check-config", "run"):
        out = notifier(command, "--config", str(config))
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("notifier: config: mail.timezone: unknown time zone")
    config.write_text(config.read_text().replace("Europe/Berlni", "Europe/Berlin"))
    for command in ("check-config", "run"):
        out = notifier(command, "--config", str(config))
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 3, lines
        assert lines[0].startswith("notifier: config: routes.0.subject_template: UndefinedError")
        assert "devcie" in lines[0]
        assert lines[1].startswith("notifier: config: routes.0.body_template: line 2:")
        # The sandbox refuses what a template could use to reach outside.
        assert lines[2].startswith("notifier: config: routes.0.body_html_template: SecurityError")
        assert "unsafe" in lines[2]


def test_render_previews_the_german_example_without_sending(tmp_path: Path) -> None:
    example = str(EXAMPLES / "notifier.de.toml")
    assert notifier("check-config", "--quiet", "--config", example).stdout == ""
    clear = notifier("render", "--config", example, "--sample", "clear", cwd=tmp_path)
    assert clear.returncode == 0, clear.stderr
    assert clear.stdout.startswith("Subject: [BEHOBEN] gw01 RELAY/RECH: Registration down")
    assert "Schweregrad:   Kritisch\n" in clear.stdout
    assert re.search(r"Alarm seit:    \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T\n", clear.stdout)
    digest = notifier("render", "--config", example, "--sample", "digest", "--html")
    assert digest.returncode == 0, digest.stderr
    assert '<html lang="de">' in digest.stdout
    assert digest.stdout.count("<td>Kritisch</td>") == 4  # three alarms and the cleared one
    unknown = notifier("render", "--config", example, "--route", "nope")
    assert unknown.returncode == 2
    assert "no route named 'nope' (have alarme)" in unknown.stderr
    assert list(tmp_path.iterdir()) == []  # nothing sent: no outbox, no spool


def test_the_readmes_template_example_passes_check_config_and_renders(tmp_path: Path) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    start = readme.index("\n## Mail templates and time zone\n")
    section = readme[start : readme.index("\n## ", start + 1)]
    (example,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    config = tmp_path / "n.toml"
    config.write_text(example)
    assert notifier("check-config", "--quiet", "--config", str(config)).stdout == ""
    out = notifier("render", "--config", str(config), "--route", "pbx", "--sample", "clear")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Subject: [CLEARED] gw01: Registration down\n")
    assert re.search(r"Gerät gw01, Code 0x00010002, Critical, seit \d{4}-\d\d-\d\d ", out.stdout)
