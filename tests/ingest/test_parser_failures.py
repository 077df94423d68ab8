"""Deep alarm XML and parser failures through the receivers: nothing lost, nothing refused.

An alarm whose <details> nest 1,000 elements is still the alarm (details kept as text). An
exception other than ParseError escaping a parser (a bug of ours, simulated here by a parser
that raises) keeps the message as a log record with extras["parser_error"], answers 200 / takes
the frame, is counted, and is logged rate-limited: never a 500, never a traceback per message.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from structlog.testing import capture_logs

import notifier.ingest.http
import notifier.ingest.udp
from notifier.ingest.parse.innovaphone import parse_form
from notifier.ingest.parse.jsonrec import parse_json_records
from notifier.ingest.parse.syslog import parse_syslog
from notifier.ingest.stream import start_stream
from notifier.ingest.udp import start_udp
from notifier.metrics import Metrics
from notifier.records import Kind, Record, Severity
from notifier.spool import MemorySpool
from tests.conftest import free_port
from tests.ingest.conftest import arrived, count
from tests.ingest.http_fixtures import running_receiver
from tests.service import NotifierProcess, wait_for

DEEP = 1000
MESSAGES = 20


def deep_alarm(levels: int = DEEP) -> str:
    nested = "<a>" * levels + "leaf" + "</a>" * levels
    return (
        '<alarm type="alarm" severity="Major" code="0x00010002" source="RELAY/RECH" '
        f'text="Registration down"><details>{nested}</details></alarm>'
    )


def assert_deep_alarm_kept(r: Record) -> None:
    assert (r.kind, r.severity, r.code, r.source, r.text, r.details) == (
        Kind.ALARM,
        Severity.MAJOR,
        "0x00010002",
        "RELAY/RECH",
        "Registration down",
        "leaf",
    )
    assert "elements deep" in r.extras["details_error"]


def raising_on_boom(parse: Any) -> Any:
    """`parse`, except that it fails as a parser bug would on input holding b"boom"."""

    def parse_or_fail(data: bytes, **kw: Any) -> Record:
        if b"boom" in data:
            raise RecursionError("maximum recursion depth exceeded")
        result: Record = parse(data, **kw)
        return result

    return parse_or_fail


def degraded(metrics: Metrics, receiver: str, reason: str) -> float:
    return count(metrics, "ingest_degraded", receiver=receiver, reason=reason)


def warnings_about(logs: list[dict[str, Any]], reason: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("reason") == reason and e["log_level"] == "warning"]


# --- HTTP ---


async def test_deep_alarm_details_over_http_alarm_are_stored_and_answered_200() -> None:
    form = f"event=syslog&from=gw&msg={quote(deep_alarm())}"
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/alarm", content=form)
        assert (response.status_code, response.text) == (200, "OK")
        [r] = rx.spool.history(10)
        assert_deep_alarm_kept(r)
        assert degraded(rx.metrics, "http", "deep_details") == 1


async def test_a_parser_bug_over_http_keeps_each_message_answers_200_and_logs_rate_limited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifier.ingest.http, "parse_form", raising_on_boom(parse_form))
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        with capture_logs() as logs:
            statuses = [
                (await client.post(f"{rx.url}/alarm", content=f"msg=boom+{i}")).status_code
                for i in range(MESSAGES)
            ]
            ok = await client.post(f"{rx.url}/alarm", content="msg=fine")
        assert statuses == [200] * MESSAGES
        assert ok.status_code == 200
        records = list(reversed(rx.spool.history(100)))
        assert [r.text for r in records] == [f"msg=boom+{i}" for i in range(MESSAGES)] + ["fine"]
        failed = records[:MESSAGES]
        assert all(r.kind is Kind.LOG for r in failed)
        assert all(r.extras["parser_error"].startswith("RecursionError: ") for r in failed)
        assert failed[0].raw == b"msg=boom+0"
        assert degraded(rx.metrics, "http", "parser_error") == MESSAGES
        assert rx.counter("accepted", receiver="http", kind="log") == MESSAGES + 1
        assert 1 <= len(warnings_about(logs, "parser_error")) < MESSAGES
        assert not [e for e in logs if e["log_level"] in ("error", "exception", "critical")]


async def test_a_parser_bug_over_the_json_api_keeps_the_body_and_answers_200(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        notifier.ingest.http, "parse_json_records", raising_on_boom(parse_json_records)
    )
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/api/v1/records", json={"text": "boom"})
        assert response.status_code == 200
        [r] = rx.spool.history(10)
        assert response.json() == {"accepted": 1, "ids": [r.id]}
        assert (r.kind, r.text) == (Kind.LOG, '{"text":"boom"}')
        assert "RecursionError" in r.extras["parser_error"]
        assert degraded(rx.metrics, "json", "parser_error") == 1


# --- syslog UDP and TCP ---


async def test_deep_alarm_details_over_syslog_udp_and_tcp_keep_the_alarm(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    udp_port, tcp_port = free_port(socket.SOCK_DGRAM), free_port()
    receivers.append(await start_udp("127.0.0.1", udp_port, spool=spool, metrics=metrics))
    receivers.append(
        await start_stream(
            "127.0.0.1",
            tcp_port,
            spool=spool,
            metrics=metrics,
            receiver="syslog-tcp",
            parse=parse_syslog,
        )
    )
    message = b"<134>" + deep_alarm().encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(message, ("127.0.0.1", udp_port))
    [from_udp] = await arrived(spool)
    _, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
    writer.write(message + b"\n")
    await writer.drain()
    _, from_tcp = await arrived(spool, 2)
    writer.close()
    await writer.wait_closed()

    for r, receiver in ((from_udp, "syslog-udp"), (from_tcp, "syslog-tcp")):
        assert r.receiver == receiver
        assert_deep_alarm_kept(r)
        assert degraded(metrics, receiver, "deep_details") == 1
        assert count(metrics, "ingest_accepted", receiver=receiver, kind="alarm") == 1


async def test_a_parser_bug_over_syslog_udp_keeps_every_datagram_and_logs_rate_limited(
    spool: MemorySpool, metrics: Metrics, receivers: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notifier.ingest.udp, "parse_syslog", raising_on_boom(parse_syslog))
    port = free_port(socket.SOCK_DGRAM)
    receivers.append(await start_udp("127.0.0.1", port, spool=spool, metrics=metrics))
    with capture_logs() as logs:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(MESSAGES):
                s.sendto(b"<13>boom %d" % i, ("127.0.0.1", port))
            s.sendto(b"<13>fine", ("127.0.0.1", port))
        records = await arrived(spool, MESSAGES + 1)
    assert [r.text for r in records] == [f"<13>boom {i}" for i in range(MESSAGES)] + ["fine"]
    assert all("RecursionError" in r.extras["parser_error"] for r in records[:MESSAGES])
    assert records[0].raw == b"<13>boom 0"
    assert degraded(metrics, "syslog-udp", "parser_error") == MESSAGES
    assert count(metrics, "ingest_rejected", receiver="syslog-udp", reason="parser_error") == 0
    assert 1 <= len(warnings_about(logs, "parser_error")) < MESSAGES
    assert not [e for e in logs if e["log_level"] in ("error", "exception", "critical")]


async def test_a_parser_bug_over_syslog_tcp_takes_the_frame_and_the_next_ones(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    port = free_port()
    receivers.append(
        await start_stream(
            "127.0.0.1",
            port,
            spool=spool,
            metrics=metrics,
            receiver="syslog-tcp",
            parse=raising_on_boom(parse_syslog),
        )
    )
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"<13>before\n<13>boom\n<13>after\n")
    await writer.drain()
    before, failed, after = await arrived(spool, 3)
    writer.close()
    await writer.wait_closed()
    assert (before.text, failed.text, after.text) == ("before", "<13>boom", "after")
    assert (failed.kind, failed.device) == (Kind.LOG, "127.0.0.1")
    assert "RecursionError" in failed.extras["parser_error"]
    assert degraded(metrics, "syslog-tcp", "parser_error") == 1


# --- through `notifier run` ---


def test_deep_alarm_details_reach_the_spool_as_alarms_through_a_running_notifier(
    tmp_path: Path,
) -> None:
    message = deep_alarm().encode()
    with NotifierProcess(tmp_path) as n:
        response = httpx.post(
            f"{n.url}/alarm", content=b"event=syslog&msg=" + quote(message).encode()
        )
        assert response.status_code == 200
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"<134>" + message, ("127.0.0.1", n.syslog_port))
        for port in (n.syslog_port, n.tcp_port):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"<134>" + message + b"\n")

        def stored() -> dict[str, Record]:
            records = httpx.get(f"{n.url}/api/v1/records", timeout=5).json()
            return {r["receiver"]: Record.from_dict(r) for r in records}

        receivers = {"http", "syslog-udp", "syslog-tcp", "tcp"}
        got = wait_for(lambda: (s := stored()).keys() >= receivers and s, what="4 alarms")
        for receiver in receivers:
            assert_deep_alarm_kept(got[receiver])
        assert "Traceback" not in n.logs()
