"""End to end: a real notifier process, real senders, aiosmtpd receiving the mails."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.spool.schema import spool_path
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import ReceivedMail, SmtpTestServer


def account(smtp: SmtpTestServer) -> dict[str, Any]:
    return {
        "name": "ops",
        "server": f"127.0.0.1:{smtp.port}",
        "tls": "none",
        "sender_address": "alarms@notifier.test",
        "sender_name": "notifier",
    }


def route(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "ops",
        "account": "ops",
        "to": ["Ops Team <ops@example.test>"],
        "group_wait_s": 0.3,
        "group_interval_s": 0.0,
        "repeat_interval_s": 3600.0,
        "max_mails_per_minute": 600,
    }
    base.update(changes)
    return base


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


@pytest.fixture
def notifier(tmp_path: Path, smtp: SmtpTestServer) -> Iterator[NotifierProcess]:
    proc = NotifierProcess(tmp_path, {"accounts": [account(smtp)], "routes": [route()]})
    proc.start()
    yield proc
    proc.stop()


def post_alarm(n: NotifierProcess, **fields: str) -> httpx.Response:
    data = {
        "type": "alarm",
        "severity": "Major",
        "code": "0x00010002",
        "host": "gw01",
        "serial": "009033000000",
        "source": "RELAY/RECH",
        "text": "Registration down",
        **fields,
    }
    return httpx.post(f"{n.url}/api/v1/records", json=data, timeout=10)


def subjects(mails: list[ReceivedMail]) -> list[str]:
    return [str(m.message["Subject"]) for m in mails]


def test_logger_syslog_alarm_record_arrives_as_mail(
    notifier: NotifierProcess, smtp: SmtpTestServer
) -> None:
    xml = (
        '<alarm type="alarm" severity="Major" code="0x00010002" host="gw01" '
        'source="RELAY/RECH" text="Registration down"><details><relay prot="SH323"/></details>'
        "</alarm>"
    )
    subprocess.run(
        [
            "logger",
            "-n",
            "127.0.0.1",
            "-P",
            str(notifier.syslog_port),
            "-T",
            "--rfc3164",
            "-t",
            "ALARM",
            xml,
        ],
        check=True,
        timeout=10,
    )
    mail = wait_for(lambda: smtp.received, what="the alarm mail")[0]
    msg = mail.message
    assert msg["Subject"] == "[ALARM Major] gw01 RELAY/RECH: Registration down (0x00010002)"
    assert msg["To"] == "Ops Team <ops@example.test>"
    assert msg["From"] == "notifier <alarms@notifier.test>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert mail.rcpt_tos == ("ops@example.test",)
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert 'relay prot="SH323"' in text
    assert "syslog-tcp" in text


def test_innovaphone_http_alarm_becomes_mail(
    notifier: NotifierProcess, smtp: SmtpTestServer
) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"{notifier.url}/alarm?type=alarm&severity=2&code=0x00020001&host=IP0011-42-04-a7"
            "&source=IP&text=Link+down",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert out.stdout == "200"
    mail = wait_for(lambda: smtp.received, what="the alarm mail")[0]
    assert mail.message["Subject"] == "[ALARM Major] IP0011-42-04-a7 IP: Link down (0x00020001)"


def test_alarm_resent_within_repeat_interval_sends_no_second_mail_and_clear_says_duration(
    notifier: NotifierProcess, smtp: SmtpTestServer
) -> None:
    assert post_alarm(notifier).status_code == 200
    wait_for(lambda: len(smtp.received) == 1, what="the first mail")
    # The device re-sends the active alarm: counted, not mailed.
    assert post_alarm(notifier).status_code == 200
    assert post_alarm(notifier).status_code == 200
    time.sleep(1.5)
    assert len(smtp.received) == 1
    assert post_alarm(notifier, type="clear").status_code == 200
    wait_for(lambda: len(smtp.received) == 2, what="the clear mail")
    clear = smtp.received[1].message
    assert re.fullmatch(
        r"\[CLEARED\] gw01 RELAY/RECH: Registration down \(0x00010002\).*active \d+s.*",
        str(clear["Subject"]),
    ), clear["Subject"]
    reasons = [e.get("reason") for e in notifier.log_events() if e.get("event") == "decision"]
    assert reasons == ["new_alarm", "repeat_suppressed", "repeat_suppressed", "cleared"]


def test_storm_of_1000_alarms_becomes_digests_accounting_for_every_alarm(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    proc = NotifierProcess(
        tmp_path,
        {
            "accounts": [account(smtp)],
            "routes": [route(group_wait_s=1.0, group_interval_s=2.0, max_records_per_mail=50)],
        },
    )
    proc.start()
    try:
        batch = [
            {
                "type": "alarm",
                "severity": "Major",
                "code": f"0x{i:08x}",
                "host": f"gw{i % 7:02d}",
                "source": "RELAY/RECH",
                "text": f"Registration down {i}",
            }
            for i in range(1000)
        ]
        for start in range(0, 1000, 100):
            r = httpx.post(
                f"{proc.url}/api/v1/records", json=batch[start : start + 100], timeout=30
            )
            assert r.status_code == 200
            time.sleep(0.4)  # a storm over ~4 s: several group intervals
        mails = wait_for(
            lambda: smtp.received if _alarms_in(smtp.received) >= 1000 else None,
            timeout=60,
            what="digests covering 1000 alarms",
        )
        assert _alarms_in(mails) == 1000
        assert 2 <= len(mails) <= 10, subjects(mails)
        ids: list[str] = []
        for m in mails:
            ids += _record_codes(m)
        # Every alarm shown in a digest appears once; the rest are counted ("N more").
        assert len(ids) == len(set(ids))
    finally:
        proc.stop()


def _alarms_in(mails: list[ReceivedMail]) -> int:
    total = 0
    for m in mails:
        subject = str(m.message["Subject"])
        found = re.match(r"\[(\d+) ALARMS?", subject)
        total += int(found.group(1)) if found else (1 if subject.startswith("[ALARM") else 0)
    return total


def _record_codes(mail: ReceivedMail) -> list[str]:
    body = mail.message.get_body(("plain",))
    assert body is not None
    return re.findall(r"Registration down (\d+)", body.get_content())


def test_an_alarm_no_route_takes_is_kept_as_history_only_and_the_routed_one_is_mailed(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    """The spool decides at put time, with the routes' own match, that nobody wants the gw02
    alarm: it is stored (answered 200, in the history) with no delivery, so no route leases and
    acknowledges it; the gw01 alarm is owed to the route and mailed."""
    proc = NotifierProcess(
        tmp_path,
        {"accounts": [account(smtp)], "routes": [route(match={"devices": ["gw01"]})]},
    )
    with proc:
        assert post_alarm(proc, host="gw02", code="0x00020002").status_code == 200
        with contextlib.closing(sqlite3.connect(spool_path(proc.data_dir))) as db:
            rows = db.execute(
                "SELECT r.pending, (SELECT count(*) FROM deliveries d WHERE d.seq = r.seq) "
                "FROM records r"
            ).fetchall()
        assert rows == [(0, 0)]  # history only, from the moment it was answered
        assert post_alarm(proc, host="gw01").status_code == 200
        mail = wait_for(lambda: smtp.received, what="the gw01 alarm mail")[0]
        assert "gw01" in str(mail.message["Subject"])
        history = httpx.get(f"{proc.url}/api/v1/records?limit=5", timeout=10).json()
        assert {r["device"] for r in history} == {"gw01", "gw02"}
        time.sleep(1.0)  # a mail for gw02 would have been sent by now (group_wait_s 0.3)
        assert len(smtp.received) == 1
