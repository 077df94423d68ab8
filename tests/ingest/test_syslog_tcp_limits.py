"""Bad input, limits and back-pressure on the stream receivers (syslog TCP and TLS, raw TCP):
counted, never fatal, nothing accepted is lost."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from structlog.testing import capture_logs

from notifier.ingest.parse.line import parse_line
from notifier.ingest.parse.syslog import parse_syslog
from notifier.ingest.stream import StreamReceiver, start_stream
from notifier.metrics import Metrics
from notifier.records import Kind, Severity
from notifier.spool import MemorySpool
from notifier.spool.base import Overflow
from tests import certs
from tests.conftest import free_port
from tests.ingest.conftest import StorageDown, arrived, count, eventually


async def syslog_tcp(
    spool: MemorySpool, metrics: Metrics, receivers: list, **kw: object
) -> tuple[StreamReceiver, int]:
    """A started stream receiver on a free port: syslog TCP unless `kw` says otherwise."""
    port = free_port()
    kw = {"receiver": "syslog-tcp", "parse": parse_syslog, **kw}
    rx = await start_stream("127.0.0.1", port, spool=spool, metrics=metrics, **kw)  # type: ignore[arg-type]
    receivers.append(rx)
    return rx, port


async def send(port: int, payload: bytes, tls: ssl.SSLContext | None = None) -> None:
    """One sender: connect, write, close."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
    )
    writer.write(payload)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (bytes(range(1, 9)) + b"\xff\xfe\xfd\x80\x81\x82\x83\n", "not_text"),
        (b"100 <13>cut short", "truncated_frame"),
        (b"<13>" + b"x" * 5000 + b"\n", "frame_too_large"),
        (b"4000 <13>" + b"y" * 3995, "frame_too_large"),
        (b"99999999999 <13>nonsense count\n", "bad_octet_count"),
    ],
    ids=["garbage", "truncated", "long-line", "long-counted", "bad-count"],
)
async def test_refused_input_is_counted_and_the_next_sender_is_served(
    payload: bytes, reason: str, spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    _, port = await syslog_tcp(spool, metrics, receivers, max_frame_bytes=1024)
    await send(port, payload)
    await eventually(
        lambda: count(metrics, "ingest_rejected", receiver="syslog-tcp", reason=reason) == 1,
        f"{reason} counted",
    )
    await send(port, b"<13>next sender\n")
    [r] = await arrived(spool)
    assert r.text == "next sender"
    assert spool.entries == 1


async def test_invalid_utf8_is_taken_with_replacement_and_raw_kept(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    _, port = await syslog_tcp(spool, metrics, receivers)
    await send(port, b"<13>Mar 10 11:00:00 gw app: M\xfcller\n")
    [r] = await arrived(spool)
    assert (r.text, r.raw) == ("M\ufffdller", b"<13>Mar 10 11:00:00 gw app: M\xfcller")
    assert count(metrics, "ingest_accepted", receiver="syslog-tcp", kind="log") == 1


async def test_broken_xml_alarm_is_kept_as_a_log_line_and_counted(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    _, port = await syslog_tcp(spool, metrics, receivers)
    await send(port, b'<134><alarm type="alarm" code="0x1" text="unterminated\n')
    [r] = await arrived(spool)
    assert (r.kind, r.text) == (Kind.LOG, '<alarm type="alarm" code="0x1" text="unterminated')
    assert "does not parse" in r.extras["xml_error"]
    assert count(metrics, "ingest_degraded", receiver="syslog-tcp", reason="bad_xml") == 1


async def test_unknown_severity_in_xml_keeps_the_alarm_and_counts_it(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    _, port = await syslog_tcp(spool, metrics, receivers)
    await send(port, b'<134><alarm type="alarm" code="0x2" severity="purple" text="t"/>\n')
    [r] = await arrived(spool)
    assert (r.kind, r.severity, r.severity_raw) == (Kind.ALARM, Severity.INDETERMINATE, "purple")
    assert count(metrics, "ingest_degraded", receiver="syslog-tcp", reason="unknown_severity") == 1
    assert count(metrics, "ingest_accepted", receiver="syslog-tcp", kind="alarm") == 1


def open_connections(metrics: Metrics, receiver: str) -> float:
    """What the open-connections gauge shows for `receiver`."""
    value = metrics.registry.get_sample_value("notifier_ingest_connections", {"receiver": receiver})
    return value or 0.0


def refused(metrics: Metrics, receiver: str) -> float:
    """Every refusal counted for `receiver`, whatever the reason."""
    return sum(
        sample.value
        for metric in metrics.registry.collect()
        if metric.name == "notifier_ingest_rejected"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["receiver"] == receiver
    )


async def test_at_the_limit_the_connection_silent_longest_is_closed_for_a_new_sender(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    _, port = await syslog_tcp(spool, metrics, receivers, max_connections=2)
    oldest = await asyncio.open_connection("127.0.0.1", port)
    await eventually(lambda: open_connections(metrics, "syslog-tcp") == 1, "the first one open")
    younger = await asyncio.open_connection("127.0.0.1", port)
    younger[1].write(b"<13>still here\n")
    await arrived(spool)

    await send(port, b"<13>new sender\n")
    assert await oldest[0].read() == b""  # closed by the server to make room
    assert [r.text for r in await arrived(spool, 2)] == ["still here", "new sender"]
    assert (
        count(metrics, "ingest_rejected", receiver="syslog-tcp", reason="idle_closed_for_room") == 1
    )
    younger[1].write(b"<13>and served\n")
    await arrived(spool, 3)
    for _, writer in (oldest, younger):
        writer.close()  # the server closed `oldest`; its writer here is still ours to close
        await writer.wait_closed()


async def test_when_every_connection_is_busy_a_new_one_is_closed_at_once_and_counted(
    metrics: Metrics, receivers: list
) -> None:
    spool = MemorySpool(consumers=["test"], max_entries=1, overflow=Overflow.REJECT)
    _, port = await syslog_tcp(spool, metrics, receivers, max_connections=1)
    _, busy = await asyncio.open_connection("127.0.0.1", port)
    busy.write(b"<13>one\n<13>two waits for room in the spool\n")
    await eventually(
        lambda: count(metrics, "ingest_spool_waits", receiver="syslog-tcp") > 0, "a busy sender"
    )

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.read() == b""  # closed by the server without a word
    writer.close()
    assert (
        count(metrics, "ingest_rejected", receiver="syslog-tcp", reason="too_many_connections") == 1
    )
    await arrived(spool)
    [first] = await spool.lease("test", limit=1, visibility_s=30)
    await spool.ack("test", [first.record.id])
    # The busy sender's second frame was held, not lost, and goes in once there is room.
    assert [r.text for r in await arrived(spool, 2)] == ["one", "two waits for room in the spool"]
    busy.close()


async def test_silent_client_is_closed_after_the_idle_timeout(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    _, port = await syslog_tcp(spool, metrics, receivers, idle_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    assert count(metrics, "ingest_rejected", receiver="syslog-tcp", reason="idle_timeout") == 1


async def test_full_spool_pauses_the_sender_and_loses_nothing(
    metrics: Metrics, receivers: list
) -> None:
    spool = MemorySpool(consumers=["test"], max_entries=5, overflow=Overflow.REJECT)
    _, port = await syslog_tcp(spool, metrics, receivers)
    sent = [f"line {i:03}" for i in range(60)]
    sender = asyncio.create_task(send(port, b"".join(b"<13>%s\n" % s.encode() for s in sent)))
    await eventually(lambda: spool.entries == 5, "the spool full")
    await eventually(
        lambda: count(metrics, "ingest_spool_waits", receiver="syslog-tcp") > 0,
        "the receiver waiting",
    )

    got: list[str] = []
    while len(got) < len(sent):
        leases = await spool.lease("test", limit=3, visibility_s=30)
        if not leases:
            await spool.wait(0.05)
            continue
        got += [lease.record.text for lease in leases]
        await spool.ack("test", [lease.record.id for lease in leases])
    await sender
    assert got == sent
    assert count(metrics, "ingest_accepted", receiver="syslog-tcp", kind="log") == len(sent)
    assert refused(metrics, "syslog-tcp") == 0


@pytest.mark.parametrize("receiver", ["syslog-tcp", "syslog-tls", "tcp"])
async def test_a_device_is_served_while_another_address_holds_hundreds_of_connections(
    receiver: str, pki: certs.TestPKI, spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    tls = receiver == "syslog-tls"
    _, port = await syslog_tcp(
        spool,
        metrics,
        receivers,
        receiver=receiver,
        parse=parse_line if receiver == "tcp" else parse_syslog,
        ssl=pki.server_context() if tls else None,
        max_connections=100,
        max_connections_per_peer=64,
        tls_handshake_timeout_s=60,  # the attacker's TLS connections never say hello
    )
    # Linux routes all of 127/8 to lo: the attacker is another address on the same box.
    held = [
        await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        for _ in range(150)
    ]
    try:
        # Past the total limit (100) whatever the per-peer rule: the device comes after them.
        await eventually(lambda: refused(metrics, receiver) >= 50, "the attacker refused")
        for n in range(3):
            await send(port, b"<13>device line %d\n" % n, pki.client_context() if tls else None)
        assert [r.text for r in await arrived(spool, 3)] == [f"device line {n}" for n in range(3)]
        reason = "too_many_connections_per_peer"
        await eventually(
            lambda: count(metrics, "ingest_rejected", receiver=receiver, reason=reason) == 86,
            "150 - 64 connections refused for the per-peer limit",
        )
        await eventually(lambda: open_connections(metrics, receiver) == 64, "the attacker's 64")
    finally:
        for _, writer in held:
            writer.close()


async def test_a_spool_whose_storage_is_down_pauses_the_sender_and_says_so(
    metrics: Metrics, receivers: list
) -> None:
    # PostgreSQL stopped: the reader stops reading (TCP tells the sender to wait), the log says
    # the storage failed rather than that the queue is full, and what was sent goes in after.
    spool = StorageDown()
    _, port = await syslog_tcp(spool, metrics, receivers)
    with capture_logs() as logs:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"<13>one\n<13>two\n")
        await eventually(lambda: len(spool.puts) >= 2, "the put tried again")

    paused = [e for e in logs if e["event"].startswith("ingest_paused")]
    assert {(e["event"], e["reason"]) for e in paused} == {
        ("ingest_paused_spool_unavailable", "spool_unavailable")
    }
    assert "PostgreSQL at 127.0.0.1:5432 is unreachable" in paused[0]["detail"]
    assert count(metrics, "ingest_spool_waits", receiver="syslog-tcp") >= 2

    spool.down = False
    assert [r.text for r in await arrived(spool, 2)] == ["one", "two"]
    writer.close()
    await writer.wait_closed()
