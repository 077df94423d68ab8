"""Syslog over TCP and TLS from real senders: logger, SysLogHandler, an ssl client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import socket
import ssl

import pytest

from notifier.ingest.parse.syslog import parse_syslog
from notifier.ingest.stream import StreamReceiver, start_stream
from notifier.ingest.tls import server_context
from notifier.metrics import Metrics
from notifier.records import Kind, Severity
from notifier.spool import MemorySpool
from tests import certs
from tests.conftest import free_port
from tests.ingest.conftest import arrived, count, eventually, run

HOST = socket.gethostname()


async def syslog_tcp(
    spool: MemorySpool, metrics: Metrics, receivers: list, host: str = "127.0.0.1", **kw: object
) -> tuple[StreamReceiver, int]:
    port = free_port(host=host)
    kw.setdefault("receiver", "syslog-tcp")
    rx = await start_stream(host, port, spool=spool, metrics=metrics, parse=parse_syslog, **kw)  # type: ignore[arg-type]
    receivers.append(rx)
    return rx, port


@pytest.mark.parametrize("framing", [[], ["--octet-count"]], ids=["lf", "octet-count"])
async def test_logger_rfc3164_over_tcp(
    framing: list[str], spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    _, port = await syslog_tcp(spool, metrics, receivers)
    await run(
        "logger",
        "-n",
        "127.0.0.1",
        "-P",
        str(port),
        "-T",
        "--rfc3164",
        *framing,
        "--id=99",
        "-p",
        "daemon.warning",
        "-t",
        "mytag",
        "fan  failed",
    )
    [r] = await arrived(spool)
    assert (r.kind, r.receiver, r.text, r.source) == (
        Kind.LOG,
        "syslog-tcp",
        "fan  failed",
        "mytag",
    )
    assert (r.device, r.facility, r.severity, r.severity_raw) == (
        HOST.split(".")[0],
        3,
        Severity.WARNING,
        "4",
    )
    assert r.extras["procid"] == "99"
    assert count(metrics, "ingest_accepted", receiver="syslog-tcp", kind="log") == 1


@pytest.mark.parametrize("framing", [[], ["--octet-count"]], ids=["lf", "octet-count"])
async def test_logger_rfc5424_over_tcp(
    framing: list[str], spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    _, port = await syslog_tcp(spool, metrics, receivers)
    await run(
        "logger",
        "-n",
        "127.0.0.1",
        "-P",
        str(port),
        "-T",
        "--rfc5424",
        *framing,
        "--sd-id",
        "x@1",
        "--sd-param",
        'a="b"',
        "-t",
        "mytag",
        "msg one",
    )
    [r] = await arrived(spool)
    assert (r.text, r.source, r.device, r.facility, r.severity_raw) == (
        "msg one",
        "mytag",
        HOST,
        1,
        "5",
    )
    assert r.extras["sd.x@1.a"] == "b"
    assert r.device_time is not None


@pytest.mark.parametrize("listen", ["::1", "::"])
async def test_logger_over_tcp_on_ipv6(
    listen: str, spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    rx, port = await syslog_tcp(spool, metrics, receivers, host=listen)
    assert rx.addresses == [(listen, port)]
    await run("logger", "-n", "::1", "-P", str(port), "-T", "--rfc5424", "-t", "six", "over v6")
    [r] = await arrived(spool)
    assert (r.text, r.source) == ("over v6", "six")
    assert r.sender.startswith("[::1]:")


@pytest.mark.parametrize("append_nul", [True, False], ids=["nul", "lf"])
async def test_python_syslog_handler_over_tcp(
    append_nul: bool, spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    _, port = await syslog_tcp(spool, metrics, receivers)
    handler = logging.handlers.SysLogHandler(("127.0.0.1", port), socktype=socket.SOCK_STREAM)
    handler.append_nul = append_nul
    if not append_nul:
        handler.setFormatter(logging.Formatter("%(message)s\n"))
    log = logging.getLogger(f"test.tcp.sysloghandler.{append_nul}")
    log.propagate = False
    log.addHandler(handler)
    try:
        await asyncio.to_thread(log.warning, "first")
        await asyncio.to_thread(log.critical, "second")
    finally:
        log.removeHandler(handler)
        handler.close()
    first, second = await arrived(spool, 2)
    assert (first.text, first.severity, first.facility) == ("first", Severity.WARNING, 1)
    assert (second.text, second.severity, second.severity_raw) == ("second", Severity.CRITICAL, "2")


async def send_tls(port: int, ctx: ssl.SSLContext, payload: bytes) -> None:
    """Connect with TLS, send `payload`, close (close_notify, then TCP FIN)."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    writer.write(payload)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_tls_client_without_client_certificate(
    pki: certs.TestPKI, spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    ctx = server_context(str(pki.server_cert), str(pki.server_key))
    _, port = await syslog_tcp(spool, metrics, receivers, receiver="syslog-tls", ssl=ctx)
    await send_tls(port, pki.client_context(), b"30 <13>Mar 10 11:00:00 gw tls: hi")
    [r] = await arrived(spool)
    assert (r.receiver, r.device, r.source, r.text) == ("syslog-tls", "gw", "tls", "hi")
    assert count(metrics, "ingest_accepted", receiver="syslog-tls", kind="log") == 1


async def test_tls_with_required_client_certificate(
    pki: certs.TestPKI, spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    ctx = server_context(str(pki.server_cert), str(pki.server_key), str(pki.ca_file))
    _, port = await syslog_tcp(spool, metrics, receivers, receiver="syslog-tls", ssl=ctx)

    # Without a certificate the server ends the handshake: nothing is taken, it is counted.
    # (In TLS 1.3 the client learns it only from the alert or the close, whichever it reads.)
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        await send_tls(port, pki.client_context(), b"<13>no certificate\n")
    assert count(metrics, "ingest_rejected", receiver="syslog-tls", reason="tls_handshake") == 1

    _, writer = await asyncio.open_connection(
        "127.0.0.1",
        port,
        ssl=pki.client_context(with_client_cert=True),
        server_hostname="localhost",
    )
    writer.write(b"<13>with certificate\n")
    await writer.drain()
    [r] = await arrived(spool)
    assert r.text == "with certificate"
    writer.close()
    await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    assert spool.entries == 1


async def test_plain_tcp_client_on_the_tls_port_is_refused_and_counted(
    pki: certs.TestPKI, spool: MemorySpool, metrics: Metrics, receivers: list
) -> None:
    ctx = server_context(str(pki.server_cert), str(pki.server_key))
    _, port = await syslog_tcp(spool, metrics, receivers, receiver="syslog-tls", ssl=ctx)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"<13>plain text on a TLS port\n")
    await writer.drain()
    with contextlib.suppress(ConnectionError):
        await reader.read()  # the server closes the connection
    writer.close()
    await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    await eventually(
        lambda: (
            count(metrics, "ingest_rejected", receiver="syslog-tls", reason="tls_handshake") == 1
        ),
        "the failed handshake counted",
    )
    assert spool.entries == 0


def test_unusable_certificate_files_name_the_file() -> None:
    with pytest.raises(ValueError, match=r"missing\.pem"):
        server_context("missing.pem", "missing.key")
