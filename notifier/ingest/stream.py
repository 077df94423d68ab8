"""Syslog over TCP and TLS (RFC 6587 / 5425) and raw TCP lines: stream receivers.

A frame counts as taken only once the spool holds it: while a batch is being put, the
connection stops reading, so a full spool pushes back on the sender through TCP instead of
losing what was already read. `Intake` (counting and rejection logs) is shared with the UDP
receiver.
"""

from __future__ import annotations

import asyncio
import operator
import socket
import time
import weakref
from collections import Counter as Tally
from collections.abc import Callable, Coroutine, Sequence
from ssl import SSLContext
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter

from notifier.backoff import Backoff
from notifier.config import host_port
from notifier.ingest.connections import ConnectionLimits
from notifier.ingest.parse.fallback import unparsed_record
from notifier.ingest.parse.framing import FrameDecoder
from notifier.ingest.parse.line import parse_line
from notifier.ingest.parse.syslog import host_of, parse_fast_3164, parse_syslog
from notifier.log import RateLimiter, get_logger
from notifier.metrics import Metrics
from notifier.records import ParseError, Record, SeverityScheme, new_record_ids
from notifier.spool.base import Spool, SpoolFull

_log = get_logger("notifier.ingest")

Parse = Callable[..., Record]
FastParse = Callable[..., list[Record | None]]

# Parsers whose usual lines a batch reader takes as they would (see `parse_fast_3164`): a raw
# TCP line that has the syslog shape is a syslog message to `parse_line` too.
_FAST: dict[Parse, FastParse] = {parse_syslog: parse_fast_3164, parse_line: parse_fast_3164}

# Retries of a put the spool refused, at most a second apart; reading stays paused meanwhile.
_PUT_RETRY = Backoff(base_s=0.05, cap_s=1.0)
# How long `close` lets connections hand what they already read to the spool.
_DRAIN_S = 5.0
_DETAIL_CHARS = 200
_MAX_BATCH = 1000  # records per spool put
_KIND = operator.attrgetter("kind")


class _Extra:
    """Counters beyond `Metrics`, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.degraded = Counter(
            "notifier_ingest_degraded",
            "Records accepted with a problem noted in extras (bad_xml, unknown_severity, "
            "deep_details, parser_error)",
            ["receiver", "reason"],
            registry=registry,
        )
        self.spool_waits = Counter(
            "notifier_ingest_spool_waits",
            "Times a receiver held a batch and paused because the spool refused it (full, or "
            "its storage failed)",
            ["receiver"],
            registry=registry,
        )


_extras: weakref.WeakKeyDictionary[CollectorRegistry, _Extra] = weakref.WeakKeyDictionary()

# extras key a parser sets → the degraded reason counted (and logged, rate-limited) for it
DEGRADED = {
    "xml_error": "bad_xml",
    "severity_error": "unknown_severity",
    "details_error": "deep_details",
    "parser_error": "parser_error",
}


def extra_metrics(metrics: Metrics) -> _Extra:
    found = _extras.get(metrics.registry)
    if found is None:
        found = _extras[metrics.registry] = _Extra(metrics.registry)
    return found


def format_peer(address: Any) -> str:
    """A socket address as "ip:port", "[v6]:port"; IPv4-mapped v6 shown as IPv4."""
    if not isinstance(address, tuple) or len(address) < 2:
        return str(address or "")
    host, port = str(address[0]), address[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host_port(host, port)


class Refusals:
    """Refusals of one receiver (messages and connections): counted by reason, logged
    rate-limited per sender address."""

    def __init__(self, receiver: str, metrics: Metrics) -> None:
        self.receiver = receiver
        self._metrics = metrics
        self._limiter = RateLimiter()

    def reject(self, sender: str, reason: str, detail: str, count: int = 1) -> None:
        self._metrics.rejected.labels(self.receiver, reason).inc(count)
        self._warn(sender, reason, detail, "ingest_rejected", count=count)

    def _warn(self, sender: str, reason: str, detail: str, event: str, **more: Any) -> None:
        allowed, suppressed = self._limiter.allow(f"{self.receiver} {host_of(sender)}")
        if allowed:
            _log.warning(
                event,
                receiver=self.receiver,
                sender=sender,
                reason=reason,
                detail=detail[:_DETAIL_CHARS],
                suppressed=suppressed,
                **more,
            )


class Intake(Refusals):
    """Parsing, counting and rate-limited rejection logs, the same for every receiver."""

    def __init__(
        self, receiver: str, metrics: Metrics, parse: Parse, scheme: SeverityScheme
    ) -> None:
        super().__init__(receiver, metrics)
        self._parse = parse
        self._fast = _FAST.get(parse)
        self._scheme = scheme
        self._received = metrics.received.labels(receiver)
        self._extra = extra_metrics(metrics)

    def parse_all(self, frames: Sequence[tuple[bytes, str]], now: float) -> list[Record]:
        """(frame, sender) pairs, each a datagram or frame received at `now`, parsed and
        counted as received; what cannot be parsed is left out (counted and logged).

        One call, one id timestamp and one counter increment for a whole UDP read burst or
        stream read: this loop is where a busy receiver spends its time. Lines of the usual
        shape are read in one batch (`parse_fast_3164`), the rest one by one.
        """
        if not frames:
            return []
        ids = new_record_ids(len(frames), now)
        fast = self._fast
        found = (
            fast(frames, ids, received_at=now, receiver=self.receiver)
            if fast is not None
            else [None] * len(frames)
        )
        parse, receiver, scheme = self._parse, self.receiver, self._scheme
        out = []
        for (data, sender), id, record in zip(frames, ids, found, strict=True):
            if record is not None:
                out.append(record)
                continue
            try:
                out.append(
                    parse(
                        data,
                        received_at=now,
                        sender=sender,
                        receiver=receiver,
                        scheme=scheme,
                        id=id,
                    )
                )
            except ParseError as e:
                self.reject(sender, e.reason, str(e))
            except Exception as e:  # a parser bug: keep the message as it came (see fallback)
                out.append(
                    unparsed_record(data, e, received_at=now, sender=sender, receiver=self.receiver)
                )
        self._received.inc(len(frames))
        return out

    def records(self, frames: Sequence[bytes | ParseError], sender: str) -> list[Record]:
        """The frames of one stream read (and the framing errors among them), parsed."""
        good: list[tuple[bytes, str]] = []
        for frame in frames:
            if isinstance(frame, ParseError):
                self._received.inc()
                self.reject(sender, frame.reason, str(frame))
            else:
                good.append((frame, sender))
        return self.parse_all(good, time.time())

    def accepted(self, records: Sequence[Record]) -> None:
        """Count records the spool now holds."""
        kinds = Tally(map(_KIND, records))
        for kind, n in kinds.items():
            self._metrics.accepted.labels(self.receiver, kind.value).inc(n)
        # A clean extras mapping is looked at once: a read's log lines share one per process
        # id. (While `records` lives, no two of its mappings can have the same id().)
        clean: set[int] = set()
        for r in records:
            extras = r.extras
            if not extras or id(extras) in clean:
                continue
            if DEGRADED.keys().isdisjoint(extras):  # `isdisjoint` builds no set
                clean.add(id(extras))
                continue
            for key in extras.keys() & DEGRADED.keys():
                self._extra.degraded.labels(self.receiver, DEGRADED[key]).inc()
                self._warn(r.sender, DEGRADED[key], extras[key], "ingest_degraded")

    def spool_wait(self, sender: str, error: SpoolFull) -> None:
        """Reading stops while the spool refuses: full, or its storage failed."""
        self._extra.spool_waits.labels(self.receiver).inc()
        self._warn(sender, error.reason, str(error), f"ingest_paused_{error.reason}")


class StreamReceiver:
    """A listening TCP or TLS server; see `start_stream`."""

    def __init__(
        self,
        *,
        spool: Spool,
        metrics: Metrics,
        intake: Intake,
        ssl: SSLContext | None,
        max_frame_bytes: int,
        octet_counting: bool,
        max_connections: int,
        max_connections_per_peer: int,
        idle_timeout_s: float,
        tls_handshake_timeout_s: float,
    ) -> None:
        self.spool = spool
        self.intake = intake
        self.receiver = intake.receiver
        self.ssl = ssl
        self.max_frame_bytes = max_frame_bytes
        self.octet_counting = octet_counting
        self.idle_timeout_s = idle_timeout_s
        self.tls_handshake_timeout_s = tls_handshake_timeout_s
        # Connections being handshaken count too (they hold a socket) but are never idle.
        self.connections: ConnectionLimits[_Connection] = ConnectionLimits(
            max_total=max_connections,
            max_per_peer=max_connections_per_peer,
            gauge=metrics.connections.labels(self.receiver),
            reject=intake.reject,
        )
        self._server: asyncio.Server | None = None  # plain TCP
        self._listeners: list[socket.socket] = []  # TLS: accepted by hand, see `_accept_tls`
        self._acceptors: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def addresses(self) -> list[tuple[str, int]]:
        socks = list(self._server.sockets) if self._server is not None else self._listeners
        return [(s.getsockname()[0], s.getsockname()[1]) for s in socks]

    async def close(self) -> None:
        """Stop listening, close connections, and give what they read `_DRAIN_S` to reach the
        spool; anything still unheld after that is counted as rejected (``shutdown``)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for acceptor in self._acceptors:
            acceptor.cancel()
        await asyncio.gather(*self._acceptors, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        for connection in self.connections:
            connection.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=_DRAIN_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def admit(self, connection: _Connection) -> bool:
        """False (counted, logged) when the connection must be closed at once: its peer holds
        `max_connections_per_peer`, or all `max_connections` are busy (the one idle longest
        is closed to make room when there is one), or the receiver is stopping."""
        if self._closing:
            self.intake.reject(connection.sender, "shutdown", "the receiver is stopping")
            return False
        connection.admitted = self.connections.admit(connection) is None
        return connection.admitted

    async def _accept_tls(self, listener: socket.socket) -> None:
        """Accept TLS connections by hand so a failed handshake can be counted with its peer.

        (`create_server(ssl=...)` drops failed handshakes silently, and `start_tls` after a
        plain accept loses the ClientHello under uvloop, which reads before we can pause.)
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as e:  # out of file descriptors and the like: back off, keep serving
                _log.warning("accept_failed", receiver=self.receiver, error=str(e))
                await asyncio.sleep(0.1)
                continue
            connection = _Connection(self, sender=format_peer(address))
            if not self.admit(connection):
                sock.close()
                continue
            self.spawn(self._handshake(sock, connection))

    async def _handshake(self, sock: socket.socket, connection: _Connection) -> None:
        assert self.ssl is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: connection,
                sock,
                ssl=self.ssl,
                ssl_handshake_timeout=self.tls_handshake_timeout_s,
            )
        except Exception as e:
            self.intake.reject(connection.sender, "tls_handshake", f"{type(e).__name__}: {e}")
            self.connections.release(connection)
            sock.close()

    async def put(self, batch: list[Record], sender: str) -> None:
        """Hand `batch` to the spool in order, retrying while it is full; counts what it holds.

        A refused put is retried with half as many records: a small batch may fit where a big
        one never will (a memory queue smaller than the batch).
        """
        attempt = 0
        size = _MAX_BATCH
        done = 0
        try:
            while done < len(batch):
                chunk = batch[done : done + size]
                try:
                    await self.spool.put(chunk)
                except SpoolFull as e:
                    self.intake.spool_wait(sender, e)
                    # Jittered: connections waiting for room do not all retry at once.
                    wait = _PUT_RETRY.delay(attempt)
                    await asyncio.sleep(min(wait, max(_PUT_RETRY.base_s, e.retry_after_s)))
                    attempt += 1
                    size = max(1, len(chunk) // 2)
                    continue
                self.intake.accepted(chunk)
                done += len(chunk)
                attempt = 0
        except asyncio.CancelledError:
            self.intake.reject(
                sender, "shutdown", "stopped before the spool took these", count=len(batch) - done
            )
            raise
        except Exception as e:
            _log.exception("spool_put_failed", receiver=self.receiver, sender=sender)
            self.intake.reject(
                sender, "spool_error", f"{type(e).__name__}: {e}", count=len(batch) - done
            )


class _Connection(asyncio.Protocol):
    """One peer: frames in, batches to the spool, reading paused while a batch is put."""

    def __init__(self, rx: StreamReceiver, *, sender: str = "") -> None:
        self._rx = rx
        self._decoder = FrameDecoder(rx.max_frame_bytes, octet_counting=rx.octet_counting)
        self._transport: asyncio.Transport | None = None
        self._paused: asyncio.Transport | None = None
        self._pending: list[Record] = []
        self._flushing = False
        self._ended = False
        self._last = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self.admitted = False  # TLS: at accept, before the handshake; TCP: once connected
        self.sender = sender

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if not self.admitted:
            self.sender = format_peer(transport.get_extra_info("peername"))
            if not self._rx.admit(self):
                transport.close()
                return
        self._last = time.monotonic()
        self._arm_idle(self._rx.idle_timeout_s)

    def idle_since(self) -> float | None:
        """When the peer last sent; None while handshaking or while its frames go to the spool."""
        if self._transport is None or self._flushing or self._pending or self._ended:
            return None
        return self._last

    def data_received(self, data: bytes) -> None:
        if not self.admitted:  # refused for the connection limit; closing
            return
        self._last = time.monotonic()
        frames = self._decoder.feed(data)
        if frames:
            self._take(frames)

    def eof_received(self) -> bool | None:
        self._finish_frames()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish_frames()
        self._end()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _finish_frames(self) -> None:
        if not self._ended:
            frames = self._decoder.close()
            if frames:
                self._take(frames)

    def _end(self) -> None:
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._rx.connections.release(self)

    def _take(self, frames: list[bytes | ParseError]) -> None:
        records = self._rx.intake.records(frames, self.sender)
        if not records:
            return
        self._pending.extend(records)
        if not self._flushing:
            self._flushing = True
            self._reading(False)
            self._rx.spawn(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._rx.put(batch, self.sender)
        finally:
            self._flushing = False
            if not self._ended:
                self._reading(True)

    def _reading(self, on: bool) -> None:
        if on:
            transport, self._paused = self._paused, None
            if transport is not None and not transport.is_closing():
                transport.resume_reading()
        elif self._transport is not None and not self._transport.is_closing():
            self._paused = self._transport
            self._paused.pause_reading()

    def _arm_idle(self, delay: float) -> None:
        if self._rx.idle_timeout_s > 0:
            self._timer = asyncio.get_running_loop().call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        self._timer = None
        if self._ended:
            return
        timeout = self._rx.idle_timeout_s
        silent = time.monotonic() - self._last
        # Waiting on a full spool is our silence, not the peer's.
        if self._flushing or silent < timeout:
            self._arm_idle(timeout if self._flushing else timeout - silent)
            return
        self._rx.intake.reject(self.sender, "idle_timeout", f"nothing received for {timeout:g} s")
        self.close()


async def start_stream(
    host: str,
    port: int,
    *,
    spool: Spool,
    metrics: Metrics,
    receiver: str,
    parse: Parse,
    ssl: SSLContext | None = None,
    max_frame_bytes: int = 65536,
    max_connections: int = 1000,
    max_connections_per_peer: int = 64,
    idle_timeout_s: float = 300,
    tls_handshake_timeout_s: float = 10,
    octet_counting: bool | None = None,
    scheme: SeverityScheme = SeverityScheme.EVENTS_API,
) -> StreamReceiver:
    """Listen on `host`:`port` (``""`` = every interface, ``"::"`` = IPv6 only) for TCP, or TLS
    when `ssl` is given, and hand each frame, parsed with `parse`, to `spool`.

    `octet_counting` defaults to on except for the raw ``"tcp"`` receiver, whose frames are
    plain LF / CRLF lines. `idle_timeout_s` 0 disables the idle timeout.
    """
    rx = StreamReceiver(
        spool=spool,
        metrics=metrics,
        intake=Intake(receiver, metrics, parse, scheme),
        ssl=ssl,
        max_frame_bytes=max_frame_bytes,
        octet_counting=receiver != "tcp" if octet_counting is None else octet_counting,
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
        idle_timeout_s=idle_timeout_s,
        tls_handshake_timeout_s=tls_handshake_timeout_s,
    )
    loop = asyncio.get_running_loop()
    if ssl is None:
        rx._server = await loop.create_server(
            lambda: _Connection(rx), host=host or None, port=port, reuse_address=True, backlog=512
        )
    else:
        rx._listeners = await _listen(host, port)
        rx._acceptors = [loop.create_task(rx._accept_tls(s)) for s in rx._listeners]
    _log.info(
        "receiver_listening",
        receiver=receiver,
        addresses=[format_peer(a) for a in rx.addresses],
        tls=ssl is not None,
        client_certificates=ssl is not None and ssl.verify_mode.name == "CERT_REQUIRED",
    )
    return rx


async def _listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets as `create_server` makes them (IPv6 sockets are IPv6 only)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(512)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks
