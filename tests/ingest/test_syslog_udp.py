"""Syslog over UDP from real senders: util-linux logger and Python's SysLogHandler."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from notifier.ingest import udp
from notifier.ingest.stream import format_peer
from notifier.ingest.udp import start_udp, udp_rcvbuf_errors
from notifier.metrics import Metrics
from notifier.records import Kind, Record, Severity
from notifier.spool import MemorySpool
from notifier.spool.base import Overflow
from tests.conftest import free_port
from tests.ingest.conftest import StorageDown, arrived, count, eventually, run
from tests.service import NotifierProcess, wait_for

HOST = socket.gethostname()


@pytest.fixture(params=["recvmmsg", "recvfrom"])
def udp_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each IPv4 reader: compiled recvmmsg (what runs on Linux) and Python's recvfrom loop."""
    if request.param == "recvfrom":
        monkeypatch.setattr(udp, "_recv_burst", None)
    else:
        assert udp._recv_burst is not None, "the compiled hot loops were not built"
    return str(request.param)


def test_recv_burst_reads_what_recvfrom_reads() -> None:
    """Datagrams from two senders, empty and near 64 KiB ones among them, in order, each
    with its sender written as `format_peer` writes it; at most `count` a call; [] when
    nothing waits."""
    assert udp._recv_burst is not None, "the compiled hot loops were not built"
    sizes = [0, 1, 200, 65507, 3, *range(100, 300)]
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
    ):
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        assert udp._recv_burst(rx.fileno(), 10) == []
        sent = []
        for i, size in enumerate(sizes):
            sock = a if i % 3 else b
            data = bytes([i % 256]) * size
            sock.sendto(data, rx.getsockname())
            sent.append((data, format_peer(sock.getsockname())))
        time.sleep(0.2)
        got = udp._recv_burst(rx.fileno(), 100)
        assert len(got) == 100
        while more := udp._recv_burst(rx.fileno(), 1000):
            got += more
        assert got == sent


async def test_logger_rfc3164_over_udp(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    receivers.append(await start_udp("127.0.0.1", port, spool=spool, metrics=metrics))
    before = time.time()
    await run(
        "logger",
        "-n",
        "127.0.0.1",
        "-P",
        str(port),
        "-d",
        "--rfc3164",
        "--id=4242",
        "-p",
        "local3.err",
        "-t",
        "mytag",
        "disk  full",
    )
    [r] = await arrived(spool)
    assert (r.kind, r.receiver, r.text, r.source) == (Kind.LOG, "syslog-udp", "disk  full", "mytag")
    assert r.device == HOST.split(".")[0]
    assert (r.facility, r.severity, r.severity_raw) == (19, Severity.MAJOR, "3")
    assert r.extras["procid"] == "4242"
    assert r.sender.startswith("127.0.0.1:")
    assert r.device_time is not None and abs(r.device_time - before) < 5
    assert count(metrics, "ingest_received", receiver="syslog-udp") == 1
    assert count(metrics, "ingest_accepted", receiver="syslog-udp", kind="log") == 1


async def test_logger_rfc5424_with_structured_data_over_udp(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    receivers.append(await start_udp("127.0.0.1", port, spool=spool, metrics=metrics))
    await run(
        "logger",
        "-n",
        "127.0.0.1",
        "-P",
        str(port),
        "-d",
        "--rfc5424",
        "--id=77",
        "--msgid",
        "ID47",
        "--sd-id",
        "x@1",
        "--sd-param",
        'a="b c"',
        "-t",
        "app",
        "hello",
    )
    [r] = await arrived(spool)
    assert (r.text, r.source, r.device, r.facility, r.severity_raw) == (
        "hello",
        "app",
        HOST,
        1,
        "5",
    )
    assert r.extras["sd.x@1.a"] == "b c"
    assert (r.extras["procid"], r.extras["msgid"]) == ("77", "ID47")
    assert r.device_time is not None


async def test_logger_over_ipv6_loopback(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    port = free_port(socket.SOCK_DGRAM, host="::1")
    rx = await start_udp("::1", port, spool=spool, metrics=metrics)
    receivers.append(rx)
    assert rx.addresses == [("::1", port)]
    await run("logger", "-n", "::1", "-P", str(port), "-d", "--rfc3164", "-t", "v6", "over six")
    [r] = await arrived(spool)
    assert (r.text, r.source) == ("over six", "v6")
    assert r.sender.startswith("[::1]:")


async def test_python_syslog_handler_over_udp(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    receivers.append(await start_udp("0.0.0.0", port, spool=spool, metrics=metrics))
    handler = logging.handlers.SysLogHandler(
        ("127.0.0.1", port), facility=logging.handlers.SysLogHandler.LOG_LOCAL3
    )
    log = logging.getLogger("test.udp.sysloghandler")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.error("trunk %d down", 3)
    finally:
        log.removeHandler(handler)
        handler.close()
    [r] = await arrived(spool)
    # SysLogHandler sends "<PRI>message\0": no header, so the sender is the device.
    assert (r.text, r.device, r.source, r.device_time) == ("trunk 3 down", "127.0.0.1", "", None)
    assert (r.facility, r.severity, r.severity_raw) == (19, Severity.MAJOR, "3")


@pytest.mark.usefixtures("udp_reader")
async def test_innovaphone_xml_alarm_over_udp_becomes_an_alarm(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    receivers.append(await start_udp("127.0.0.1", port, spool=spool, metrics=metrics))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(
            b'<134><alarm type="alarm" severity="Major" code="0x00010002" host="IP0011-42-04-a7" '
            b'source="RELAY/RECH" text="Registration down"/>',
            ("127.0.0.1", port),
        )
    [r] = await arrived(spool)
    assert (r.kind, r.severity, r.code, r.device, r.source, r.text) == (
        Kind.ALARM,
        Severity.MAJOR,
        "0x00010002",
        "IP0011-42-04-a7",
        "RELAY/RECH",
        "Registration down",
    )
    assert count(metrics, "ingest_accepted", receiver="syslog-udp", kind="alarm") == 1


def test_recv_burst_refuses_a_socket_it_cannot_read_before_taking_anything() -> None:
    """An IPv6 or TCP socket is refused before recvmmsg runs: no datagram is lost to it."""
    assert udp._recv_burst is not None, "the compiled hot loops were not built"
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rx:
        rx.bind(("::1", 0))
        rx.setblocking(False)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"still here", rx.getsockname())
        time.sleep(0.1)
        with pytest.raises(ValueError, match="IPv4 UDP sockets only"):
            udp._recv_burst(rx.fileno(), 10)
        assert rx.recvfrom(100)[0] == b"still here"
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        pytest.raises(ValueError, match="IPv4 UDP sockets only"),
    ):
        udp._recv_burst(tcp.fileno(), 10)


@pytest.mark.usefixtures("udp_reader")
async def test_garbage_datagram_is_counted_and_the_next_sender_is_served(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    receivers.append(await start_udp("127.0.0.1", port, spool=spool, metrics=metrics))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(bytes(range(1, 30)) + b"\xff\xfe\xfd", ("127.0.0.1", port))
        s.sendto(b"", ("127.0.0.1", port))
        s.sendto(b"<13>good one", ("127.0.0.1", port))
    [r] = await arrived(spool)
    assert r.text == "good one"
    assert count(metrics, "ingest_rejected", receiver="syslog-udp", reason="not_text") == 1
    assert count(metrics, "ingest_rejected", receiver="syslog-udp", reason="empty") == 1
    assert count(metrics, "ingest_received", receiver="syslog-udp") == 3


@pytest.mark.usefixtures("udp_reader")
async def test_a_burst_from_two_senders_keeps_each_sender_and_order(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    """Read, parsed and counted a burst at a time: every datagram still keeps its own sender."""
    port = free_port(socket.SOCK_DGRAM)
    receivers.append(await start_udp("127.0.0.1", port, spool=spool, metrics=metrics))
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
    ):
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        for i in range(300):  # sent before the receiver runs: read in bursts
            sock = a if i % 2 else b
            sock.sendto(
                b"<134>Mar 10 11:59:58 gw%d SIP[7]: line %d" % (i % 2, i), ("127.0.0.1", port)
            )
            if i % 50 == 0:
                sock.sendto(b"\x00" * 10, ("127.0.0.1", port))
        names = {0: f"127.0.0.1:{b.getsockname()[1]}", 1: f"127.0.0.1:{a.getsockname()[1]}"}
    records = await arrived(spool, 300)
    assert [r.text for r in records] == [f"line {i}" for i in range(300)]
    assert all(r.sender == names[i % 2] and r.device == f"gw{i % 2}" for i, r in enumerate(records))
    assert count(metrics, "ingest_received", receiver="syslog-udp") == 306
    assert count(metrics, "ingest_rejected", receiver="syslog-udp", reason="empty") == 6
    assert count(metrics, "ingest_accepted", receiver="syslog-udp", kind="log") == 300


@pytest.mark.usefixtures("udp_reader")
async def test_datagram_of_60_kib_is_taken_whole(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    receivers.append(await start_udp("127.0.0.1", port, spool=spool, metrics=metrics))
    body = "x" * (60 * 1024)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"<13>" + body.encode(), ("127.0.0.1", port))
    [r] = await arrived(spool)
    assert r.text == body


async def test_full_spool_loses_datagrams_and_counts_each(
    metrics: Metrics, receivers: list
) -> None:
    spool = MemorySpool(consumers=["test"], max_entries=2, overflow=Overflow.REJECT)
    port = free_port(socket.SOCK_DGRAM)
    receivers.append(await start_udp("127.0.0.1", port, spool=spool, metrics=metrics))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(5):
            s.sendto(b"<13>m%d" % i, ("127.0.0.1", port))
    rejected = lambda: count(metrics, "ingest_rejected", receiver="syslog-udp", reason="spool_full")  # noqa: E731
    accepted = lambda: count(metrics, "ingest_accepted", receiver="syslog-udp", kind="log")  # noqa: E731
    await eventually(lambda: rejected() + accepted() == 5, "every datagram accounted for")
    assert accepted() == 2
    assert spool.entries == 2


async def test_datagrams_read_while_the_spool_is_down_are_stored_once_it_is_back(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    # UDP cannot tell its sender "later": what was read waits (up to the backlog's bound) and
    # is tried again each second, so a short database outage loses nothing.
    monkeypatch.setattr(udp, "_MAX_BACKLOG", 3)
    monkeypatch.setattr(udp, "_UNAVAILABLE_RETRY_S", 0.05)
    spool = StorageDown()
    port = free_port(socket.SOCK_DGRAM)
    receiver = await start_udp("127.0.0.1", port, spool=spool, metrics=metrics)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"<13>m0", ("127.0.0.1", port))
            await eventually(lambda: len(spool.puts) >= 1, "the first put refused")
            for i in range(1, 5):
                s.sendto(b"<13>m%d" % i, ("127.0.0.1", port))
        lost = lambda: count(  # noqa: E731
            metrics, "ingest_rejected", receiver="syslog-udp", reason="spool_unavailable"
        )
        # Beyond the backlog's 3 the datagrams are lost, counted for what it is.
        await eventually(lambda: lost() == 2, "the 2 datagrams over the backlog counted lost")
        await eventually(lambda: len(spool.puts) >= 3, "the put tried again")
        assert count(metrics, "ingest_spool_waits", receiver="syslog-udp") >= 2
        assert count(metrics, "ingest_rejected", receiver="syslog-udp", reason="spool_full") == 0

        spool.down = False
        assert [r.text for r in await arrived(spool, 3)] == ["m0", "m1", "m2"]
    finally:
        await receiver.close()
    assert lost() == 2


async def test_a_udp_receiver_closed_while_the_spool_is_down_counts_what_it_held_as_lost(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(udp, "_UNAVAILABLE_RETRY_S", 0.05)
    spool = StorageDown()
    port = free_port(socket.SOCK_DGRAM)
    receiver = await start_udp("127.0.0.1", port, spool=spool, metrics=metrics)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(3):
            s.sendto(b"<13>m%d" % i, ("127.0.0.1", port))
    await eventually(lambda: len(spool.puts) >= 1, "a put refused")
    received = lambda: count(metrics, "ingest_received", receiver="syslog-udp")  # noqa: E731
    await eventually(lambda: received() == 3, "the 3 datagrams read")

    # Closing does not wait for the database: it ends, and says what it could not keep.
    await asyncio.wait_for(receiver.close(), 10)

    assert count(metrics, "ingest_rejected", receiver="syslog-udp", reason="spool_unavailable") == 3
    assert spool.entries == 0


def test_kernel_receive_buffer_drops_are_read_from_proc(tmp_path: Path) -> None:
    (tmp_path / "snmp").write_text(
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "Udp: 100 2 7 50 5 0\n"
    )
    (tmp_path / "snmp6").write_text("Udp6InDatagrams                 	10\nUdp6RcvbufErrors 3\n")
    assert udp_rcvbuf_errors(tmp_path) == 8
    assert udp_rcvbuf_errors(tmp_path / "missing") is None


async def test_receive_buffer_drops_are_exported(
    spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    receivers.append(await start_udp("127.0.0.1", 0, spool=spool, metrics=metrics))
    before = udp_rcvbuf_errors()
    if before is None:
        pytest.fail("/proc/net/snmp is not readable on this machine")
    # Real drops: a socket with the smallest receive buffer that nobody reads, flooded.
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sink.bind(("127.0.0.1", 0))
        for _ in range(200):
            sender.sendto(b"x" * 1000, sink.getsockname())
        after = udp_rcvbuf_errors()
    assert after is not None and after >= before + 100, "the kernel counted no drops"
    await eventually(
        lambda: (metrics.registry.get_sample_value("notifier_udp_rcvbuf_errors") or 0) >= after,
        "the kernel's count of the drops exported",
        timeout=20,
    )


def test_second_instance_on_the_same_udp_port_stops_and_the_first_keeps_receiving(
    tmp_path: Path,
) -> None:
    with NotifierProcess(tmp_path / "first") as first:
        second = NotifierProcess(
            tmp_path / "second",
            syslog_port=first.syslog_port,
            overrides={"syslog": {"tcp": ""}, "tcp": {"listen": ""}},
        )
        try:
            with pytest.raises(RuntimeError, match="exited with 1"):
                second.start()
        finally:
            second.stop()
        assert "Traceback" not in second.logs()
        [failure] = [e for e in second.log_events() if e.get("level") == "error"]
        assert failure["event"] == "cannot start"
        assert "address already in use" in failure["error"].lower()
        assert str(first.syslog_port) in failure["error"]
        assert failure["hint"].startswith("another process uses that port")

        port = str(first.syslog_port)
        subprocess.run(
            ["logger", "-n", "127.0.0.1", "-P", port, "-d", "--rfc3164", "still here"], check=True
        )

        def texts() -> list[str]:
            records = httpx.get(f"{first.url}/api/v1/records", timeout=5).json()
            return [r["text"] for r in records]

        wait_for(lambda: "still here" in texts(), what="the first instance got the datagram")


class _SlowSpool(MemorySpool):
    """A spool whose first put waits until `commit` is set, as a durable commit can."""

    def __init__(self) -> None:
        super().__init__(["test"], max_entries=100_000)
        self.sizes: list[int] = []
        self.commit = asyncio.Event()

    async def put(self, records: Sequence[Record]) -> None:
        self.sizes.append(len(records))
        if len(self.sizes) == 1:
            await self.commit.wait()
        await super().put(records)


async def test_what_arrives_while_a_put_waits_goes_in_one_put(
    metrics: Metrics, receivers: list
) -> None:
    """Under a flood, the reads must not fall behind a put waiting for its commit: what was
    read meanwhile is put at once, not 1,000 records (and a durable commit) at a time."""
    spool = _SlowSpool()
    port = free_port(socket.SOCK_DGRAM)
    receivers.append(
        await start_udp("127.0.0.1", port, spool=spool, metrics=metrics, rcvbuf_bytes=8 << 20)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"<134>Mar 10 11:59:58 gw01 SIP[7]: first", ("127.0.0.1", port))
        await eventually(lambda: spool.sizes == [1], "the first put")
        for i in range(3000):
            s.sendto(b"<134>Mar 10 11:59:58 gw01 SIP[7]: line %d" % i, ("127.0.0.1", port))
    await eventually(
        lambda: count(metrics, "ingest_received", receiver="syslog-udp") == 3001, "the reads"
    )
    spool.commit.set()
    await eventually(
        lambda: count(metrics, "ingest_accepted", receiver="syslog-udp", kind="log") == 3001,
        "all of it in the spool",
    )
    assert spool.sizes == [1, 3000]
