"""The syslog sender against a real rsyslogd (UDP, TCP, TLS) and a counting TCP server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from notifier.config import ForwardSettings
from notifier.forward.errors import ForwardError
from notifier.forward.syslog import SyslogSender
from notifier.records import Kind, Record
from tests.certs import TestPKI
from tests.conftest import free_port
from tests.forward.test_encode import alarm, log_line
from tests.rsyslog import ForwardRsyslog


def forward(port: int, **changes: Any) -> ForwardSettings:
    settings: dict[str, Any] = {
        "name": "siem",
        "kind": "syslog",
        "target": f"127.0.0.1:{port}",
        "timeout_s": 5.0,
    }
    settings.update(changes)
    return ForwardSettings.model_validate(settings)


def records(n: int) -> list[Record]:
    return [log_line(text=f"line {i}  with  spaces") for i in range(n)] + [
        alarm(),
        alarm(Kind.CLEAR),
    ]


async def send_all(sender: SyslogSender, *batches: list[Record]) -> None:
    try:
        for batch in batches:
            await sender.send(batch)
    finally:
        await sender.close()


@pytest.mark.parametrize(
    ("protocol", "framing", "fmt"),
    [
        ("udp", "octet-counted", "rfc5424"),
        ("udp", "octet-counted", "rfc3164"),
        ("tcp", "octet-counted", "rfc5424"),
        ("tcp", "lf", "rfc3164"),
        ("tls", "octet-counted", "rfc5424"),
    ],
)
def test_rsyslog_receives_forwarded_records_as_sent(
    rsyslog: ForwardRsyslog, pki: TestPKI, protocol: str, framing: str, fmt: str
) -> None:
    port = {"udp": rsyslog.udp_port, "tcp": rsyslog.tcp_port, "tls": rsyslog.tls_port}[protocol]
    settings = forward(
        port,
        protocol=protocol,
        framing=framing,
        format=fmt,
        ca_file=str(pki.ca_file),
        **{"class": 5},
    )
    sender = SyslogSender(settings, "notifier-a:8080")
    sent = records(20)
    asyncio.run(send_all(sender, sent[:10], sent[10:]))

    got = rsyslog.wait_received(len(sent))
    assert len(got) == len(sent)
    assert {g.input for g in got} == {protocol}
    # Every message arrives whole and unchanged, in order (one connection, one datagram each).
    expected = [sender.encode(r) for r in sent]
    if protocol == "udp":
        assert sorted(g.raw for g in got) == sorted(expected)
    else:
        assert [g.raw for g in got] == expected
    assert {g.facility for g in got} == {21}  # local5
    assert {g.hostname for g in got} == {"gw01"}
    alarms = [g for g in got if "<alarm " in g.raw]
    assert [g.severity for g in alarms] == [3, 6]  # major, then the clear
    if fmt == "rfc5424":
        assert {g.structured_data for g in got} == {'[notifier@32473 hop="notifier-a:8080"]'}
        assert {g.app for g in alarms} == {"RELAY/RECH"}


def test_tls_with_client_certificate(rsyslog: ForwardRsyslog, pki: TestPKI) -> None:
    settings = forward(
        rsyslog.mtls_port,
        protocol="tls",
        ca_file=str(pki.ca_file),
        tls_cert_file=str(pki.client_cert),
        tls_key_file=str(pki.client_key),
    )
    asyncio.run(send_all(SyslogSender(settings, "a"), [alarm()]))
    (got,) = rsyslog.wait_received(1)
    assert got.input == "mtls" and "<alarm " in got.raw


def test_untrusted_server_certificate_is_a_clear_error(rsyslog: ForwardRsyslog) -> None:
    sender = SyslogSender(forward(rsyslog.tls_port, protocol="tls"), "a")
    with pytest.raises(ForwardError, match=r"server certificate not trusted.*set ca_file"):
        asyncio.run(send_all(sender, [alarm()]))


def test_target_down_is_a_forward_error_not_a_hang() -> None:
    sender = SyslogSender(forward(free_port(), protocol="tcp"), "a")
    with pytest.raises(ForwardError, match="connection refused"):
        asyncio.run(send_all(sender, [alarm()]))


class CountingServer:
    """A TCP server that keeps what it reads and counts connections; `restart` drops them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.data = b""
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while chunk := await reader.read(65536):
            self.data += chunk
        writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


def test_tcp_connection_is_reused_and_renewed_after_the_server_closed_it() -> None:
    async def scenario() -> CountingServer:
        server = CountingServer(free_port())
        await server.start()
        sender = SyslogSender(forward(server.port, protocol="tcp", framing="lf"), "a")
        for i in range(3):
            await sender.send([log_line(text=f"batch {i}")])
            await asyncio.sleep(0.05)
        # The server restarts: the next batch goes over a new connection, not into the void.
        await server.stop()
        await asyncio.sleep(0.1)
        await server.start()
        await sender.send([log_line(text="after restart")])
        await asyncio.sleep(0.2)
        await sender.close()
        await server.stop()
        return server

    server = asyncio.run(scenario())
    assert [line.rsplit(b"] ", 1)[-1] for line in server.data.splitlines()] == [
        b"batch 0",
        b"batch 1",
        b"batch 2",
        b"after restart",
    ]
    assert server.connections == 2


def test_udp_record_larger_than_a_datagram_goes_truncated_and_costs_nothing_else() -> None:
    async def scenario() -> list[bytes]:
        received: list[bytes] = []

        class Collect(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                received.append(data)

        loop = asyncio.get_running_loop()
        port = free_port()
        transport, _ = await loop.create_datagram_endpoint(Collect, local_addr=("127.0.0.1", port))
        sender = SyslogSender(forward(port, protocol="udp"), "a")
        try:
            await sender.send([log_line(text="x" * 70_000), log_line(text="small")])
            await asyncio.sleep(0.1)
            await sender.send([log_line(text="next")])
            await asyncio.sleep(0.1)
        finally:
            await sender.close()
            transport.close()
        return received

    got = asyncio.run(scenario())
    assert [len(d) for d in got[:1]] == [65507]
    assert [d.rsplit(b" ", 1)[-1] for d in got[1:]] == [b"small", b"next"]
