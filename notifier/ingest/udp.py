"""Syslog over UDP (RFC 5426): one message per datagram, up to 64 KiB.

UDP cannot be acknowledged, so what matters is not losing datagrams before we read them: a
large socket receive buffer, and a reader that drains the socket in one callback (plain
`DatagramProtocol` reads one datagram per loop pass and is ~10x slower). Every loss is counted:
by the kernel (`Udp RcvbufErrors`, exported as a gauge) or by us (``spool_full``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from notifier.ingest.parse.syslog import parse_syslog
from notifier.ingest.stream import Intake, format_peer
from notifier.log import get_logger
from notifier.metrics import Metrics
from notifier.records import Record, SeverityScheme
from notifier.speedups import native
from notifier.spool.base import Spool, SpoolFull, SpoolUnavailable

_log = get_logger("notifier.ingest")

_MAX_DATAGRAM = 65536
# Datagrams read per callback before letting the loop run other work (TCP, the spool).
_BURST = 256
_BATCH = 1000  # records per spool put, at least (see `_flush`)
_MAX_PUT = 20_000  # records per spool put, at most
_MAX_BACKLOG = 50_000  # records read but not yet in the spool; beyond this they are lost
_UNAVAILABLE_RETRY_S = 1.0  # a put the storage failed is tried again after this long
_SNMP_PERIOD_S = 5.0
_MAX_SENDERS = 4096  # formatted peer addresses kept
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; not exported by Python
# recvmmsg, compiled (notifier/_speedups.c; Linux): None where not built or PURE_PYTHON is set.
_recv_burst: Callable[[int, int], list[tuple[bytes, str]]] | None = getattr(
    native, "recv_burst", None
)


def udp_rcvbuf_errors(proc_net: Path = Path("/proc/net")) -> int | None:
    """Host-wide datagrams the kernel dropped for a full receive buffer (UDP + UDP6)."""
    total = None
    try:
        lines = (proc_net / "snmp").read_text().splitlines()
    except OSError:
        lines = []
    udp = [line.split()[1:] for line in lines if line.startswith("Udp:")]
    if len(udp) >= 2 and "RcvbufErrors" in udp[0]:
        with contextlib.suppress(ValueError, IndexError):
            total = int(udp[1][udp[0].index("RcvbufErrors")])
    try:
        six = (proc_net / "snmp6").read_text().splitlines()
    except OSError:
        six = []
    for line in six:
        name, _, value = line.partition(" ")
        if name == "Udp6RcvbufErrors":
            with contextlib.suppress(ValueError):
                total = (total or 0) + int(value.strip())
    return total


def _set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for `size` bytes of receive buffer; returns what the kernel granted."""
    options = [socket.SO_RCVBUF]
    if sys.platform.startswith("linux"):
        # Beyond net.core.rmem_max only with CAP_NET_ADMIN; falls back quietly without it.
        options.insert(0, _SO_RCVBUFFORCE)
    for option in options:
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:
            continue
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


class UdpReceiver:
    """Bound datagram sockets feeding the spool; see `start_udp`."""

    def __init__(
        self,
        socks: list[socket.socket],
        spool: Spool,
        intake: Intake,
        first: Sequence[UdpReceiver] = (),
    ) -> None:
        self._socks = socks
        self._spool = spool
        self._intake = intake
        self._backlog: list[Record] = []
        self._senders: dict[Any, str] = {}  # socket address -> "ip:port"
        self._flusher: asyncio.Task[None] | None = None
        self._unavailable: str | None = None  # why the last put failed for the storage
        self._closing = False  # closing: a failed put drops the backlog instead of waiting
        self._stats: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._first = list(first)  # read before each burst of this one's: see `start_udp`
        # Sockets `_recv_burst` reads (IPv4, where it is compiled); `sock.family` is a Python
        # property, too slow to ask per read.
        self._ipv4 = {s for s in socks if _recv_burst is not None and s.family == socket.AF_INET}

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(s.getsockname()[0], s.getsockname()[1]) for s in self._socks]

    def _start(self, metrics: Metrics) -> None:
        for sock in self._socks:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)
        self._stats = self._loop.create_task(self._watch_kernel_drops(metrics))

    def _on_readable(self, sock: socket.socket) -> None:
        # An alarm listener's datagrams first: under a log flood this callback runs back to
        # back, and the alarm socket must not wait its turn behind it.
        for first in self._first:
            first._drain()
        # Everything per datagram here is on the one event-loop thread: parsed and counted as
        # one burst, the sender's address formatted once per peer.
        now = time.time()
        burst = self._read(sock)
        if not burst:
            return
        records = self._backlog
        records += self._intake.parse_all(burst, now)
        if len(records) > _MAX_BACKLOG:
            lost = len(records) - _MAX_BACKLOG
            del records[_MAX_BACKLOG:]
            if self._unavailable is not None:
                reason, detail = (
                    "spool_unavailable",
                    f"the spool's storage failed: {self._unavailable}",
                )
            else:
                reason, detail = "spool_full", "spool is not keeping up with UDP"
            self._intake.reject("", reason, detail, count=lost)
        if records and self._flusher is None:
            self._flusher = self._loop.create_task(self._flush())

    def _read(self, sock: socket.socket) -> list[tuple[bytes, str]]:
        """Up to `_BURST` datagrams waiting on `sock`, each with its sender's address."""
        try:
            if _recv_burst is not None and sock in self._ipv4:
                # 64 datagrams a system call, the sender formatted once per run of them
                return _recv_burst(sock.fileno(), _BURST)
            return self._recvfrom(sock)
        except OSError as e:  # e.g. ICMP errors surfacing on the socket: not ours to die of
            _log.warning("udp_receive_failed", receiver=self._intake.receiver, error=str(e))
            return []

    def _recvfrom(self, sock: socket.socket) -> list[tuple[bytes, str]]:
        """`_read` in Python: IPv6 sockets, and where the hot loops are not compiled."""
        senders = self._senders
        burst: list[tuple[bytes, str]] = []
        recvfrom = sock.recvfrom
        for _ in range(_BURST):
            try:
                data, address = recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                if burst:  # the error shows on the next read
                    break
                raise
            sender = senders.get(address)
            burst.append((data, sender if sender is not None else self._sender(address)))
        return burst

    def _drain(self) -> None:
        """Read what waits on every socket of this receiver, a burst each."""
        for sock in self._socks:
            if sock.fileno() >= 0:
                self._on_readable(sock)

    def _sender(self, address: Any) -> str:
        if len(self._senders) >= _MAX_SENDERS:  # many peers (or spoofed ones): start over
            self._senders.clear()
        sender = self._senders[address] = format_peer(address)
        return sender

    async def _flush(self) -> None:
        shrunk: int | None = None  # the size a refused put was halved to
        try:
            while self._backlog:
                # What arrived while the last put waited for its commit goes in one put: under
                # a flood, the alarms among the log lines share a durable commit, instead of a
                # commit per 1,000 records falling behind the reads (issue #12, the flood).
                size = shrunk or min(max(_BATCH, len(self._backlog)), _MAX_PUT)
                batch = self._backlog[:size]
                try:
                    await self._spool.put(batch)
                except SpoolUnavailable as e:
                    # The storage failed (the database is down): no smaller put would pass,
                    # and a datagram cannot be refused. The backlog is kept and tried again (a
                    # short outage loses nothing); what overflows it is dropped as it arrives.
                    self._unavailable = str(e)
                    if self._closing:
                        lost = self._backlog[:]
                        self._backlog.clear()
                        self._intake.reject(lost[0].sender, e.reason, str(e), len(lost))
                        continue
                    self._intake.spool_wait(batch[0].sender, e)
                    await asyncio.sleep(_UNAVAILABLE_RETRY_S)
                    continue
                except SpoolFull as e:
                    if len(batch) > 1:  # maybe only short of room for a batch this big
                        shrunk = len(batch) // 2
                        continue
                    # Not even one fits. UDP cannot say "later": what is read is lost, counted.
                    lost = self._backlog[:_BATCH]
                    del self._backlog[:_BATCH]
                    self._intake.reject(lost[0].sender, e.reason, str(e), count=len(lost))
                    shrunk = None
                    continue
                except Exception as e:
                    del self._backlog[: len(batch)]
                    _log.exception("spool_put_failed", receiver=self._intake.receiver)
                    self._intake.reject(
                        batch[0].sender, "spool_error", f"{type(e).__name__}: {e}", len(batch)
                    )
                    continue
                del self._backlog[: len(batch)]
                self._unavailable = None
                self._intake.accepted(batch)
        finally:
            self._flusher = None

    async def _watch_kernel_drops(self, metrics: Metrics) -> None:
        while True:
            errors = await asyncio.to_thread(udp_rcvbuf_errors)
            if errors is not None:
                metrics.udp_rcvbuf_errors.set(errors)
            await asyncio.sleep(_SNMP_PERIOD_S)

    async def close(self) -> None:
        """Stop reading; what was read is handed to the spool before this returns (or, when
        the spool's storage is down, counted as lost)."""
        self._closing = True
        for sock in self._socks:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        if self._stats is not None:
            self._stats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats
        if self._flusher is not None:
            await asyncio.shield(self._flusher)


async def start_udp(
    host: str,
    port: int,
    *,
    spool: Spool,
    metrics: Metrics,
    receiver: str = "syslog-udp",
    rcvbuf_bytes: int = 8 << 20,
    scheme: SeverityScheme = SeverityScheme.EVENTS_API,
    first: Sequence[UdpReceiver] = (),
) -> UdpReceiver:
    """Bind `host`:`port` (``""`` = every interface; ``"::"`` = IPv6 only) and start reading.

    `first`: receivers (the alarm listener) whose sockets are read before every burst of this
    one's, so a flood here delays them by no more than one burst. Raises OSError naming the
    address when it cannot be bound.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # No SO_REUSEADDR: on UDP it lets a second process bind the same port and take
            # its datagrams from the first without a word; a port in use must stop the start.
            granted = _set_rcvbuf(sock, rcvbuf_bytes)
            try:
                sock.bind(address)
            except OSError as e:
                # Worded like asyncio's TCP bind error, which `run` turns into one line + hint.
                reason = (e.strerror or str(e)).lower()
                where = format_peer(address)
                raise OSError(e.errno, f"{receiver}: cannot bind UDP {where}: {reason}") from e
            sock.setblocking(False)
            log = _log.warning if granted < rcvbuf_bytes else _log.info
            log(
                "receiver_listening",
                receiver=receiver,
                address=format_peer(sock.getsockname()),
                rcvbuf_asked=rcvbuf_bytes,
                rcvbuf_effective=granted,
                hint=""
                if granted >= rcvbuf_bytes
                else "receive buffer smaller than asked: raise net.core.rmem_max "
                "(sysctl) or run with CAP_NET_ADMIN, or bursts will be lost",
            )
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    rx = UdpReceiver(socks, spool, Intake(receiver, metrics, parse_syslog, scheme), first)
    rx._start(metrics)
    return rx
