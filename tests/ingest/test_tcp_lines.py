"""The raw TCP receiver (innovaphone "log server type TCP"): LF or CRLF lines, syslog or text."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx

from notifier.ingest.parse.line import parse_line
from notifier.ingest.stream import start_stream
from notifier.metrics import Metrics
from notifier.records import Kind
from notifier.spool import MemorySpool
from tests.conftest import free_port
from tests.ingest.conftest import arrived, count, eventually
from tests.service import NotifierProcess, wait_for


async def test_lf_crlf_and_pri_lines_become_records(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    port = free_port()
    receivers.append(
        await start_stream(
            "127.0.0.1", port, spool=spool, metrics=metrics, receiver="tcp", parse=parse_line
        )
    )
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"LOG_HTTP 3 TCP-Up 172.16.10.14:7793  172.16.0.17:471\n")
    writer.write(b"12 apples stay text\r\n")
    writer.write(b"<134>Mar 10 11:00:00 IP24-1d-00-8d SIP: registered\r\n")
    writer.write(b'<alarm type="clear" code="0x00010002" source="RELAY/RECH"/>\n')
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    plain, numbered, syslog, clear = await arrived(spool, 4)
    assert (plain.kind, plain.text, plain.receiver, plain.facility) == (
        Kind.LOG,
        "LOG_HTTP 3 TCP-Up 172.16.10.14:7793  172.16.0.17:471",
        "tcp",
        None,
    )
    assert plain.device == "127.0.0.1"
    assert numbered.text == "12 apples stay text"
    assert (syslog.device, syslog.source, syslog.text, syslog.facility) == (
        "IP24-1d-00-8d",
        "SIP",
        "registered",
        16,
    )
    assert (clear.kind, clear.code, clear.source) == (Kind.CLEAR, "0x00010002", "RELAY/RECH")
    assert count(metrics, "ingest_received", receiver="tcp") == 4


async def test_line_over_the_limit_is_refused_and_the_connection_keeps_working(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    port = free_port()
    receivers.append(
        await start_stream(
            "127.0.0.1",
            port,
            spool=spool,
            metrics=metrics,
            receiver="tcp",
            parse=parse_line,
            max_frame_bytes=100,
        )
    )
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"z" * 1000 + b"\nshort line\n")
    await writer.drain()
    [r] = await arrived(spool)
    assert r.text == "short line"
    await eventually(
        lambda: count(metrics, "ingest_rejected", receiver="tcp", reason="frame_too_large") == 1,
        "the long line counted",
    )
    writer.close()
    await writer.wait_closed()


_NUMBERED = (
    b"2026 year line\n"
    b"70000 calls dropped\r\n"
    b"<134>Mar 10 11:00:00 gw01 SIP: after the numbers\n"
    b"5 apples, 3 pears\n"
    b"last line\n"
)
_NUMBERED_TEXTS = [
    "2026 year line",
    "70000 calls dropped",
    "after the numbers",
    "5 apples, 3 pears",
    "last line",
]


def test_lines_starting_with_a_number_swallow_nothing_on_the_raw_and_syslog_tcp_ports(
    tmp_path: Path,
) -> None:
    """The ports as `notifier run` opens them: a count is a count only when "<" follows it."""
    with NotifierProcess(tmp_path) as n:
        for port in (n.tcp_port, n.syslog_port):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(_NUMBERED)

        def by_receiver() -> dict[str, list[str]]:
            records = httpx.get(f"{n.url}/api/v1/records", timeout=5).json()
            got: dict[str, list[str]] = {}
            for r in reversed(records):  # newest first: put them in arrival order
                got.setdefault(r["receiver"], []).append(r["text"])
            return got

        wait_for(
            lambda: (
                len(by_receiver().get("tcp", [])) >= 5
                and len(by_receiver().get("syslog-tcp", [])) >= 5
            ),
            what="5 records on each port",
        )
        assert by_receiver() == {"tcp": _NUMBERED_TEXTS, "syslog-tcp": _NUMBERED_TEXTS}
