"""What happens to alarms when the mail server says no, says later, or is not there at all."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.test_alarm_mail import account, post_alarm, route
from tests.service import NotifierProcess, metric, wait_for
from tests.smtpserver import ReceivedMail, SmtpTestServer

FAST_RETRY = {"retry_base_s": 0.2, "retry_max_s": 1.0}


def spool_cli(proc: NotifierProcess, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "notifier", "spool", "--config", str(proc.config_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_server_answering_451_then_250_gets_the_alarm_on_retry(tmp_path: Path) -> None:
    with SmtpTestServer() as smtp:
        smtp.script_data("451 4.3.0 try again later")
        proc = NotifierProcess(
            tmp_path,
            {"accounts": [account(smtp)], "routes": [route()], "spool": FAST_RETRY},
        )
        proc.start()
        try:
            assert post_alarm(proc).status_code == 200
            mail = wait_for(lambda: smtp.received, what="the retried mail")[0]
            assert mail.message["Subject"].startswith("[ALARM Major] gw01")
            warnings = [
                e for e in proc.log_events() if e.get("event") == "mail not sent: will retry"
            ]
            assert warnings and "451" in warnings[0]["error"]
        finally:
            proc.stop()
        assert len(smtp.received) == 1


def test_server_answering_550_dead_letters_the_alarm_with_the_reply(tmp_path: Path) -> None:
    with SmtpTestServer() as smtp:
        smtp.refuse_recipient("ops@example.test", "550 5.1.1 mailbox unavailable")
        proc = NotifierProcess(
            tmp_path,
            {"accounts": [account(smtp)], "routes": [route()], "spool": FAST_RETRY},
        )
        proc.start()
        try:
            response = post_alarm(proc)
            assert response.status_code == 200
            record_id = response.json()["ids"][0]
            wait_for(
                lambda: "dead" in spool_cli(proc, "list", "--state", "dead"), what="dead letter"
            )
            shown = spool_cli(proc, "show", record_id)
            assert "550" in shown and "mailbox unavailable" in shown
            errors = [e for e in proc.log_events() if e.get("level") == "error"]
            assert any("550" in e.get("error", "") for e in errors)
        finally:
            proc.stop()
        assert smtp.received == []


def test_server_down_for_a_while_then_up_delivers_everything(tmp_path: Path) -> None:
    port = free_port()
    proc = NotifierProcess(
        tmp_path,
        {
            "accounts": [{**account_on(port)}],
            "routes": [route()],
            "spool": FAST_RETRY,
        },
    )
    proc.start()
    try:
        for code in range(5):
            assert post_alarm(proc, code=f"0x0000000{code}").status_code == 200
        time.sleep(2.0)  # several refused connection attempts
        refused = [e for e in proc.log_events() if e.get("event") == "mail not sent: will retry"]
        assert refused and f"127.0.0.1:{port}" in refused[0]["error"]
        with SmtpTestServer(port=port) as smtp:
            wait_for(
                lambda: _codes(smtp) == {f"0x0000000{c}" for c in range(5)},
                what="all five alarms mailed",
            )
    finally:
        proc.stop()


def account_on(port: int) -> dict[str, object]:
    return {
        "name": "ops",
        "server": f"127.0.0.1:{port}",
        "tls": "none",
        "sender_address": "alarms@notifier.test",
    }


def _codes_in(mail: ReceivedMail) -> set[str]:
    """The alarm codes a mail reports (a digest lists one row per record)."""
    body = mail.message.get_body(("plain",))
    assert body is not None
    return set(re.findall(r"0x[0-9a-f]{8}", body.get_content()))


def _codes(smtp: SmtpTestServer) -> set[str]:
    return {c for m in smtp.received for c in _codes_in(m)}


@pytest.mark.parametrize("kills", [1])
def test_alarms_spooled_while_smtp_down_survive_sigkill_and_are_mailed_once(
    tmp_path: Path, kills: int
) -> None:
    port = free_port()
    proc = NotifierProcess(
        tmp_path,
        {"accounts": [account_on(port)], "routes": [route()], "spool": FAST_RETRY},
    )
    proc.start()
    codes = {f"0x000100{i:02d}" for i in range(10)}
    for code in sorted(codes):
        assert post_alarm(proc, code=code).status_code == 200
    time.sleep(1.0)  # the first attempts fail: nothing listens on the SMTP port
    for _ in range(kills):
        proc.kill()
        proc.start()
    with SmtpTestServer(port=port) as smtp:
        wait_for(lambda: _codes(smtp) >= codes, what="every alarm mailed after the restart")
        time.sleep(1.5)  # would a second copy follow?
        proc.stop()
        mentioned = [c for m in smtp.received for c in _codes_in(m)]
        assert sorted(mentioned) == sorted(codes), "each alarm mailed exactly once"


def route_row(html: str, route: str) -> dict[str, str]:
    """The status page's row of `route` in the routes table, by column header."""
    table = html[html.index('<table id="routes">') :].split("</table>")[0]
    headers = re.findall(r"<th>(.*?)</th>", table)
    for row in table.split("</tr>"):
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        if cells and cells[0] == route:
            return dict(zip(headers, cells, strict=True))
    raise AssertionError(f"no row for route {route} in {table}")


def test_during_an_smtp_outage_retries_are_retries_and_the_status_page_says_so(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc = NotifierProcess(
        tmp_path,
        {
            "accounts": [account_on(port)],
            "routes": [route(group_wait_s=2)],
            "spool": {"retry_base_s": 0.5, "retry_max_s": 1.0},
        },
    )
    proc.start()
    try:
        assert post_alarm(proc).status_code == 200
        wait_for(
            lambda: metric(proc, "notifier_mail_retries_total", route="ops") >= 2,
            what="the mail tried again twice",
        )
        # One decision, however often the mail is tried: the retries have their own metric
        # and their own log line.
        assert metric(proc, "notifier_dispatch_decisions_total", reason="new_alarm") == 1
        events = proc.log_events()
        assert [e["event"] for e in events if e.get("reason") == "new_alarm"].count("decision") == 1
        assert any(e.get("event") == "retry" and e.get("attempt", 0) >= 2 for e in events)
        html = httpx.get(f"{proc.url}/", timeout=5).text
        cells = route_row(html, "ops")
        assert cells["waiting for a mail"] == "1", "the alarm in retry is a mail waiting"
        assert cells["active alarms"] == "1", "the alarm in retry is active"
        assert "failing since" in cells["mail"] and "next retry in" in cells["mail"]
        assert "last sent: none yet" in cells["mail"]
        assert f"127.0.0.1:{port}" in cells["last error"]
        # Once the server is back the mail goes out and the page turns back to normal.
        with SmtpTestServer(port=port) as smtp:
            wait_for(lambda: smtp.received, what="the alarm mailed once the server is up")
            wait_for(
                lambda: "failing since" not in httpx.get(f"{proc.url}/", timeout=5).text,
                what="the status page back to normal",
            )
            html = httpx.get(f"{proc.url}/", timeout=5).text
            assert "last sent: 0s ago" in html or "last sent: 1s ago" in html
        assert metric(proc, "notifier_dispatch_decisions_total", reason="new_alarm") == 1
    finally:
        proc.stop()
