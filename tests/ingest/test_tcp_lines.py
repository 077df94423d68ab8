"""The raw TCP receiver (innovaphone "log server type TCP"): LF or CRLF lines, syslog or text."""

from __future__ import annotations

import asyncio

from notifier.ingest.parse.line import parse_line
from notifier.ingest.stream import start_stream
from notifier.metrics import Metrics
from notifier.records import Kind
from notifier.spool import MemorySpool
from tests.conftest import free_port
from tests.ingest.conftest import arrived, count, eventually


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
