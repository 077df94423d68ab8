"""End to end: notifier forwards to a second notifier (which mails) and to rsyslog."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.certs import TestPKI
from tests.e2e.test_alarm_mail import account, post_alarm, route, subjects
from tests.e2e.test_overflow import metric
from tests.rsyslog import ForwardRsyslog, run_rsyslog
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import SmtpTestServer


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


_rsyslog = pytest.fixture(name="rsyslog")(run_rsyslog)


@pytest.fixture
def down_port() -> Iterator[int]:
    """A port that refuses connections: bound, never listening, so nothing else takes it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_second_notifier_mails_alarms_forwarded_by_syslog_and_by_http(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    b = NotifierProcess(
        tmp_path / "b",
        {
            "accounts": [account(smtp)],
            "routes": [route()],
            "http": {"auth": "digest", "users": {"notifier-a": "s3cret"}},
        },
    )
    (tmp_path / "pw").write_text("s3cret\n")
    forwards: list[dict[str, Any]] = [
        {
            "name": "b-syslog",
            "kind": "syslog",
            "target": f"127.0.0.1:{b.syslog_port}",
            "protocol": "tcp",
            "format": "rfc5424",
            "match": {"codes": ["0x0001*"]},
        },
        {
            "name": "b-http",
            "kind": "http",
            "url": f"{b.url}/alarm",
            "method": "post",
            "auth": "digest",
            "username": "notifier-a",
            "password_file": str(tmp_path / "pw"),
            "match": {"codes": ["0x0002*"]},
        },
    ]
    # A picks its free ports while B listens on its own: they cannot collide.
    with b:
        a = NotifierProcess(tmp_path / "a", {"forwards": forwards})
        with a:
            assert post_alarm(a, details='<relay prot="SH323"/>').status_code == 200
            wait_for(lambda: len(smtp.received) >= 1, what="the alarm forwarded by syslog, mailed")
            link = {"code": "0x00020001", "source": "IP", "text": "Link down", "severity": "Minor"}
            assert post_alarm(a, **link).status_code == 200
            wait_for(lambda: len(smtp.received) >= 2, what="the alarm forwarded by HTTP, mailed")
            assert post_alarm(a, type="clear", **link).status_code == 200
            wait_for(lambda: len(smtp.received) >= 3, what="the clear forwarded by HTTP, mailed")
            assert metric(a, "notifier_forward_sent_total", forward="b-syslog") == 1
            assert metric(a, "notifier_forward_sent_total", forward="b-http") == 2
    # B mails them as if the device had sent them to B directly, and says how they came.
    got = subjects(smtp.received)
    assert got[:2] == [
        "[ALARM Major] gw01 RELAY/RECH: Registration down (0x00010002)",
        "[ALARM Minor] gw01 IP: Link down (0x00020001)",
    ]
    assert got[2].startswith("[CLEARED] gw01 IP: Link down (0x00020001) (active ")
    bodies = [str(m.message.get_body(("plain",)).get_content()) for m in smtp.received]  # type: ignore[union-attr]
    assert re.search(r"Sender: +127\.0\.0\.1:\d+ via syslog-tcp", bodies[0])
    assert 'relay prot="SH323"' in bodies[0]
    assert re.search(r"Sender: +127\.0\.0\.1:\d+ via http", bodies[1])


@pytest.mark.parametrize("method", ["get", "standard"])
def test_second_notifier_mails_an_alarm_forwarded_by_http_get_and_standard(
    tmp_path: Path, smtp: SmtpTestServer, method: str
) -> None:
    b = NotifierProcess(
        tmp_path / "b",
        {
            "accounts": [account(smtp)],
            "routes": [route()],
            "http": {"auth": "basic", "users": {"notifier-a": "s3cret"}},
        },
    )
    forward = {
        "name": "b",
        "kind": "http",
        "url": f"{b.url}/alarm",
        "method": method,
        "auth": "basic",
        "username": "notifier-a",
        "password": "s3cret",
    }
    # A picks its free ports while B listens on its own: they cannot collide.
    with b:
        a = NotifierProcess(tmp_path / "a", {"forwards": [forward]})
        with a:
            assert post_alarm(a).status_code == 200
            mail = wait_for(lambda: smtp.received, what="the forwarded alarm, mailed")[0]
    assert mail.message["Subject"] == (
        "[ALARM Major] gw01 RELAY/RECH: Registration down (0x00010002)"
    )


def test_log_lines_no_route_wants_reach_rsyslog_and_a_down_target_blocks_nothing(
    tmp_path: Path, smtp: SmtpTestServer, rsyslog: ForwardRsyslog, down_port: int
) -> None:
    forwards: list[dict[str, Any]] = [
        {
            "name": "archive",
            "kind": "syslog",
            "target": f"127.0.0.1:{rsyslog.tcp_port}",
            "protocol": "tcp",
            "framing": "lf",
            "format": "rfc3164",
            "class": 2,
            "match": {"kinds": ["log", "alarm"]},
        },
        {
            "name": "down",
            "kind": "syslog",
            "target": f"127.0.0.1:{down_port}",
            "protocol": "tcp",
            "match": {"kinds": []},
        },
        {"name": "down-http", "kind": "http", "url": f"http://127.0.0.1:{down_port}/log"},
    ]
    a = NotifierProcess(
        tmp_path / "a",
        {"accounts": [account(smtp)], "routes": [route()], "forwards": forwards},
    )
    with a:
        subprocess.run(
            [
                *("logger", "-n", "127.0.0.1", "-P", str(a.syslog_port), "-d", "--rfc3164"),
                *("-t", "gwlog", "LOG_HTTP 3 TCP-Up"),
            ],
            check=True,
            timeout=10,
        )
        assert post_alarm(a).status_code == 200
        got = rsyslog.wait_received(2)
        wait_for(lambda: smtp.received, what="the alarm mail")
        wait_for(
            lambda: metric(a, "notifier_forward_failures_total", forward="down") > 0, what="fail"
        )
        wait_for(lambda: metric(a, "notifier_forward_failures_total", forward="down-http") > 0)
        assert metric(a, "notifier_forward_sent_total", forward="archive") == 2
    assert subjects(smtp.received) == [
        "[ALARM Major] gw01 RELAY/RECH: Registration down (0x00010002)"
    ]
    assert [g.facility for g in got] == [18, 18]  # local2
    assert got[0].app == "gwlog"
    assert got[0].raw.endswith("LOG_HTTP 3 TCP-Up")
    assert '<alarm type="alarm" severity="major"' in got[1].raw


def test_a_forward_back_to_itself_stops_after_one_round(tmp_path: Path) -> None:
    a = NotifierProcess(tmp_path / "a")
    a.overrides["forwards"] = [
        {
            "name": "self",
            "kind": "syslog",
            "target": f"127.0.0.1:{a.syslog_port}",
            "protocol": "udp",
            "format": "rfc3164",
        }
    ]
    with a:
        assert post_alarm(a).status_code == 200
        wait_for(
            lambda: any(
                e.get("event") == "not forwarded again: passed through this instance before"
                for e in a.log_events()
            ),
            what="the record that came back is not forwarded again",
        )
        assert metric(a, "notifier_forward_sent_total", forward="self") == 1


def test_alarm_only_a_forward_wants_survives_a_crash_while_the_target_is_down(
    tmp_path: Path, pki: TestPKI
) -> None:
    rsyslog = ForwardRsyslog(tmp_path / "rsyslog", pki=pki)  # ports chosen, not started yet: down
    a = NotifierProcess(
        tmp_path / "a",
        {
            "spool": {"retry_base_s": 0.2, "retry_max_s": 0.5},
            # No route mails alarms: only the forward wants them.
            "routes": [{"name": "logs", "to": ["x@example.test"], "match": {"kinds": ["log"]}}],
            "forwards": [
                {
                    "name": "archive",
                    "kind": "syslog",
                    "target": f"127.0.0.1:{rsyslog.tcp_port}",
                    "protocol": "tcp",
                }
            ],
        },
    )
    a.start()
    try:
        assert post_alarm(a).status_code == 200
        wait_for(lambda: metric(a, "notifier_forward_failures_total", forward="archive") > 0)
        a.kill()
        rsyslog.start()
        a.start()
        (got,) = rsyslog.wait_received(1)
    finally:
        a.stop()
        rsyslog.stop()
    assert '<alarm type="alarm" severity="major" severity_raw="Major"' in got.raw


def test_silences_mute_only_the_forwards_that_respect_them(
    tmp_path: Path, smtp: SmtpTestServer, rsyslog: ForwardRsyslog
) -> None:
    def to_rsyslog(name: str, facility_class: int, **extra: Any) -> dict[str, Any]:
        target = f"127.0.0.1:{rsyslog.tcp_port}"
        return {"name": name, "kind": "syslog", "target": target, "protocol": "tcp",
                "framing": "lf", "class": facility_class, **extra}  # fmt: skip

    forwards = [to_rsyslog("siem", 3), to_rsyslog("pager-bridge", 4, respect_silences=True)]
    a = NotifierProcess(
        tmp_path, {"accounts": [account(smtp)], "routes": [route()], "forwards": forwards}
    )
    with a:
        silence = {
            "matchers": {"devices": ["gw31"]},
            "duration": "1h",
            "comment": "maintenance",
        }
        assert httpx.post(f"{a.url}/api/v1/silences", json=silence, timeout=5).status_code == 201
        assert post_alarm(a, host="gw31").status_code == 200
        assert post_alarm(a, host="gw32").status_code == 200
        got = rsyslog.wait_received(3)
        import sys

        print(
            "DBG",
            metric(a, "notifier_forward_sent_total", forward="pager-bridge"),
            metric(a, "notifier_forward_sent_total", forward="siem"),
            [
                (e.get("event"), e.get("forward"), e.get("records"))
                for e in a.log_events()
                if "forward" in e
            ],
            file=sys.stderr,
        )
        wait_for(lambda: metric(a, "notifier_forward_sent_total", forward="pager-bridge") == 1)
        assert metric(a, "notifier_forward_sent_total", forward="siem") == 2
        silenced = [e for e in a.log_events() if e.get("event") == "not forwarded: silenced"]
        assert [e["forward"] for e in silenced] == ["pager-bridge"]
    by_facility = sorted((g.facility, "gw31" in g.raw) for g in got)
    # local3 (the SIEM) took both alarms; local4 only the one no silence mutes.
    assert by_facility == [(19, False), (19, True), (20, False)]
