"""Silences, maintenance windows and acknowledgements through `notifier run` and aiosmtpd:
what is mailed, what is not, and what the decision log says."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_alarm_mail import account, post_alarm, route, subjects
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import SmtpTestServer


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def start(tmp_path: Path, smtp: SmtpTestServer, **overrides: Any) -> NotifierProcess:
    proc = NotifierProcess(
        tmp_path,
        {"accounts": [account(smtp)], "routes": [route(**overrides.pop("route", {}))], **overrides},
    )
    proc.start()
    return proc


def silence(proc: NotifierProcess, duration: str = "1h", **matchers: list[str]) -> str:
    body = {"matchers": matchers, "duration": duration, "comment": "test", "created_by": "t"}
    created = httpx.post(f"{proc.url}/api/v1/silences", json=body, timeout=10)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def decisions(proc: NotifierProcess, code: str) -> list[str]:
    return [
        e["reason"]
        for e in proc.log_events()
        if e.get("event") == "decision" and e.get("code") == code
    ]


def wait_decision(proc: NotifierProcess, code: str, reason: str) -> None:
    wait_for(lambda: reason in decisions(proc, code), what=f"{reason} for {code}")


def resend_after_the_repeat_interval(proc: NotifierProcess, host: str, code: str) -> None:
    """Re-send an acknowledged alarm twice after its 1 s repeat interval: a reminder each time,
    unless acknowledged. (An acknowledgement given to this instance applies at its next step.)"""
    for _ in range(2):
        time.sleep(1.2)
        assert post_alarm(proc, host=host, code=code).status_code == 200
    wait_for(
        lambda: decisions(proc, code).count("repeat_suppressed") == 2,
        what="both re-sends counted, not mailed",
    )


def test_a_silenced_alarm_is_mailed_when_its_silence_ends_while_it_is_still_active(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    proc = start(tmp_path, smtp)
    try:
        silence_id = silence(proc, devices=["gw05"])
        assert post_alarm(proc, host="gw05", code="0x00050001").status_code == 200
        # Not silenced: another device's alarm goes out meanwhile, proving mail flows.
        assert post_alarm(proc, host="gw06", code="0x00060001").status_code == 200
        wait_decision(proc, "0x00050001", "silenced")
        wait_for(lambda: any("gw06" in s for s in subjects(smtp.received)), what="gw06 mailed")
        assert not any("gw05" in s for s in subjects(smtp.received))
        page = httpx.get(f"{proc.url}/api/v1/alarms", params={"device": "gw05"}, timeout=5)
        (listed,) = page.json()["alarms"]
        assert listed["silenced"] == silence_id
        metric = httpx.get(f"{proc.url}/metrics", timeout=5).text
        assert 'notifier_dispatch_decisions_total{reason="silenced"} 1.0' in metric

        assert httpx.delete(f"{proc.url}/api/v1/silences/{silence_id}", timeout=5).is_success
        mail = wait_for(
            lambda: [m for m in smtp.received if "gw05" in str(m.message["Subject"])],
            what="the alarm mailed as its silence ended",
        )[0]
        assert str(mail.message["Subject"]).startswith("[ALARM Major, still active] gw05")
        body = mail.message.get_body(("plain",))
        assert body is not None and "as its silence ended" in body.get_content()
        assert "silence_ended" in decisions(proc, "0x00050001")
        # Its clear threads to that mail, as to any set mail.
        assert post_alarm(proc, host="gw05", code="0x00050001", type="clear").status_code == 200
        clear = wait_for(
            lambda: [m for m in smtp.received if str(m.message["Subject"]).startswith("[CLEARED")],
            what="the clear",
        )[0]
        assert clear.message["In-Reply-To"] == mail.message["Message-ID"]
    finally:
        proc.stop()


def test_the_clear_of_a_silenced_set_is_not_mailed_but_a_clear_of_a_mailed_set_is(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    proc = start(tmp_path, smtp)
    try:
        # Mailed before the silence: people who were told it is down learn that it is up.
        assert post_alarm(proc, host="gw07", code="0x00070001").status_code == 200
        wait_for(lambda: smtp.received, what="the set mailed")
        silence(proc, devices=["gw07", "gw08"])
        assert post_alarm(proc, host="gw07", code="0x00070001", type="clear").status_code == 200
        wait_for(
            lambda: any(s.startswith("[CLEARED] gw07") for s in subjects(smtp.received)),
            what="the clear of the alarm mailed before the silence",
        )
        # Set and cleared within the silence: nobody is told either.
        assert post_alarm(proc, host="gw08", code="0x00080001").status_code == 200
        wait_decision(proc, "0x00080001", "silenced")
        assert post_alarm(proc, host="gw08", code="0x00080001", type="clear").status_code == 200
        wait_decision(proc, "0x00080001", "silenced_clear")
        time.sleep(1)
        assert not any("gw08" in s for s in subjects(smtp.received))
    finally:
        proc.stop()


def test_an_acknowledged_alarm_sends_no_reminders_and_its_clear_says_who_acknowledged_it(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    proc = start(tmp_path, smtp, route={"repeat_interval_s": 1})
    try:
        assert post_alarm(proc, host="gw09", code="0x00090001").status_code == 200
        wait_for(lambda: smtp.received, what="the set mailed")
        (alarm,) = httpx.get(f"{proc.url}/api/v1/alarms", timeout=5).json()["alarms"]
        acked = httpx.post(
            f"{proc.url}/api/v1/alarms/{alarm['key']}/ack",
            json={"comment": "replacing the PSU", "by": "bob"},
            timeout=5,
        )
        assert acked.status_code == 200
        resend_after_the_repeat_interval(proc, "gw09", "0x00090001")
        assert len(smtp.received) == 1
        assert post_alarm(proc, host="gw09", code="0x00090001", type="clear").status_code == 200
        clear = wait_for(lambda: smtp.received[1:], what="the clear")[0]
        body = clear.message.get_body(("plain",))
        assert body is not None
        assert "Acknowledged: bob at " in body.get_content()
        assert "replacing the PSU" in body.get_content()
    finally:
        proc.stop()


def test_an_always_on_maintenance_window_mutes_its_devices_only(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    window = {
        "name": "forever",
        "schedule": "* * * * *",
        "duration": "2m",
        "timezone": "Europe/Berlin",
        "match": {"devices": ["lab*"]},
    }
    proc = start(tmp_path, smtp, maintenance=[window])
    try:
        assert post_alarm(proc, host="lab01", code="0x000a0001").status_code == 200
        assert post_alarm(proc, host="gw10", code="0x000a0002").status_code == 200
        wait_decision(proc, "0x000a0001", "silenced")
        wait_for(lambda: any("gw10" in s for s in subjects(smtp.received)), what="gw10 mailed")
        assert not any("lab01" in s for s in subjects(smtp.received))
        (listed,) = httpx.get(
            f"{proc.url}/api/v1/alarms", params={"device": "lab01"}, timeout=5
        ).json()["alarms"]
        assert listed["silenced"] == "forever"
    finally:
        proc.stop()


def test_a_silence_survives_a_restart(tmp_path: Path, smtp: SmtpTestServer) -> None:
    proc = start(tmp_path, smtp)
    try:
        silence_id = silence(proc, devices=["gw11"])
        proc.stop()
        proc.start()
        listed = httpx.get(f"{proc.url}/api/v1/silences", timeout=5).json()["silences"]
        assert [(s["id"], s["state"]) for s in listed] == [(silence_id, "active")]
        assert post_alarm(proc, host="gw11", code="0x000b0001").status_code == 200
        wait_decision(proc, "0x000b0001", "silenced")
    finally:
        proc.stop()
