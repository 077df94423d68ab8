"""Forwarding to a syslog server: UDP (RFC 5426), TCP (RFC 6587) or TLS (RFC 5425).

TCP and TLS keep one connection open and write a whole batch of frames at once. Syslog has no
acknowledgement: a batch counts as sent when the kernel took it. Before reusing a connection
the sender looks whether the server closed it meanwhile, and reconnects if so, so a restart
of the server costs nothing that was written after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence

from notifier.config import ForwardSettings
from notifier.forward.encode import frame, next_hops, syslog_line
from notifier.forward.errors import ForwardError
from notifier.forward.tls import client_context
from notifier.records import Record

# The largest UDP payload (IPv4). RFC 5426 lets a sender truncate: a longer message would not
# be sent at all, and its error would surface on the next, innocent, send.
MAX_DATAGRAM_BYTES = 65507


class _Datagrams(asyncio.DatagramProtocol):
    """Remembers the last ICMP error (port unreachable) to report it with the next send."""

    def __init__(self) -> None:
        self.error: OSError | None = None

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.error = exc


class SyslogSender:
    """Sends batches of records to one syslog target; one connection, reused."""

    def __init__(self, forward: ForwardSettings, instance: str) -> None:
        self._f = forward
        self._instance = instance
        target = forward.target_address
        assert target is not None, "a syslog forward has a target (checked by the settings)"
        self._host, self._port = target.host, target.port
        self._ssl: ssl.SSLContext | None = (
            client_context(forward) if forward.protocol == "tls" else None
        )
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _Datagrams | None = None

    @property
    def endpoint(self) -> str:
        return f"syslog {self._f.protocol}://{self._f.target}"

    def encode(self, record: Record) -> str:
        return syslog_line(
            record,
            facility_class=self._f.facility_class,
            hops=next_hops(record, self._instance),
            rfc5424=self._f.format == "rfc5424",
        )

    async def send(self, records: Sequence[Record]) -> None:
        """Send all of `records`; raises `ForwardError` (nothing counted as sent) on failure."""
        messages = [self.encode(r) for r in records]
        try:
            if self._f.protocol == "udp":
                await self._send_udp(messages)
            else:
                await self._send_stream(messages)
        except (OSError, TimeoutError, ssl.SSLError) as e:
            await self.close()
            raise ForwardError(f"{self.endpoint}: {_describe(e)}") from None

    async def _send_udp(self, messages: list[str]) -> None:
        if self._udp is None or self._udp.is_closing():
            loop = asyncio.get_running_loop()
            self._udp, self._udp_protocol = await loop.create_datagram_endpoint(
                _Datagrams, remote_addr=(self._host, self._port)
            )
        assert self._udp_protocol is not None
        error, self._udp_protocol.error = self._udp_protocol.error, None
        if error is not None:
            # Told since the last send: nobody listens there (the datagrams are lost).
            raise error
        for message in messages:
            self._udp.sendto(message.encode("utf-8")[:MAX_DATAGRAM_BYTES])

    async def _send_stream(self, messages: list[str]) -> None:
        if self._writer is None or self._reader is None or self._reader.at_eof():
            await self.close()
            async with asyncio.timeout(self._f.timeout_s):
                self._reader, self._writer = await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        octets = self._f.framing == "octet-counted"
        self._writer.write(b"".join(frame(m, octets) for m in messages))
        async with asyncio.timeout(self._f.timeout_s):
            await self._writer.drain()

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                async with asyncio.timeout(2):
                    await writer.wait_closed()
        if self._udp is not None:
            self._udp.close()
            self._udp = None


def _describe(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return (
            f"server certificate not trusted ({e.verify_message}): set ca_file to the CA that "
            "signed it"
        )
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused: is the syslog server running on that port?"
    return f"{type(e).__name__}: {e}"
