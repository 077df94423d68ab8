"""Run an ASGI app under uvicorn inside our own event loop, with limits uvicorn leaves open.

We own the loop and the signals (app.py drains on SIGTERM), so uvicorn must not install signal
handlers. uvicorn has no header-read timeout: a peer that opens a connection and sends its request
head slowly would hold a slot for ever, so the protocol closes a connection whose next request has
not started within `header_timeout_s`. Request bodies are limited by the app (see ingest/http.py).

Connections are limited here, not by uvicorn's `limit_concurrency`: that one counts idle
keep-alive connections too, so a few hundred held open lock every sender out with a bare 503
that no counter sees. Instead (ingest/connections.py) a peer gets at most
`max_connections_per_peer`, and at `max_connections` the connection idle longest is closed to
make room. A refused connection is answered once its request head has arrived: 503 with
Retry-After, a JSON reason and ``Connection: close``. A device handles that best: it is an
answer its log can show, and Retry-After says when to come back; a connection closed before any
answer looks like a network fault, or like a stale keep-alive connection that HTTP clients retry
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Generator
from typing import Any
from urllib.parse import unquote

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from notifier.config import host_port
from notifier.ingest.connections import ConnectionLimits, Refusal
from notifier.ingest.http import FORM_RECEIVER, DirectIngest, IngestRequest, error_response
from notifier.ingest.httpdirect import DirectCycle
from notifier.ingest.stream import Refusals, format_peer
from notifier.log import get_logger
from notifier.metrics import Metrics

log = get_logger(__name__)

# What a refused connection is told: the peer's connections close within the keep-alive time.
_RETRY_AFTER_S = 5


class _Server(uvicorn.Server):
    """uvicorn.Server that leaves the signals to us and tells when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


class HeadTooLarge(Exception):
    """A request head over `max_header_bytes`: the parser refuses it (400) and closes."""


def _refusal_app(refusal: Refusal) -> Any:
    """The ASGI app that answers every request of a refused connection (and closes it)."""
    return error_response(
        503,
        refusal.reason,
        refusal.detail,
        [("Retry-After", str(_RETRY_AFTER_S)), ("Connection", "close")],
    )


def _protocol(
    header_timeout_s: float,
    max_header_bytes: int,
    limits: ConnectionLimits[Any],
    direct: DirectIngest | None = None,
) -> type[Any]:
    """The HTTP protocol class: httptools (the C parser, with our own head-size limit, which
    h11 has built in), with the header timeout and the connection limits; the requests
    `direct` takes are answered on the direct path (ingest/httpdirect.py)."""
    base = HttpToolsProtocol
    # Refused connections waiting for their request head to be answered 503; more than
    # `max_connections` of them are closed at once (already counted), so they stay bounded.
    refusing: set[Any] = set()

    class LimitedProtocol(base):  # type: ignore[misc, valid-type]
        """Closes the connection when no request has begun `header_timeout_s` after the last;
        admits it under the connection limits."""

        _header_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _idle_from: float | None = None
        _direct = direct
        sender = ""
        cycle: Any  # uvicorn's RequestResponseCycle, or a DirectCycle

        # httptools callbacks (h11 never calls these): count the head as it arrives.
        def on_message_begin(self) -> None:
            self._head_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count_head(self, n: int) -> None:
            self._head_bytes += n
            if self._head_bytes > max_header_bytes:
                raise HeadTooLarge(f"request head over {max_header_bytes} bytes")

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.sender = format_peer(transport.get_extra_info("peername"))
            self._idle_from = time.monotonic()
            refusal = limits.admit(self)
            if refusal is not None:
                if len(refusing) >= limits.max_total:
                    transport.close()
                    return
                refusing.add(self)
                self.app = _refusal_app(refusal)  # uvicorn runs `self.app` for each request
                self._direct = None
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            self._idle_from = None
            super().data_received(data)

        # The direct path: its requests get a DirectCycle instead of an ASGI task.
        def on_headers_complete(self) -> None:
            if self._direct is not None and not self.parser.should_upgrade():
                try:
                    cycle = self._direct_cycle(self._direct)
                except Exception as e:  # a bug of ours: uvicorn and Starlette take the request
                    log.error("direct_ingest_failed", error=f"{type(e).__name__}: {e}", exc_info=e)
                    cycle = None
                if cycle is not None:
                    existing, self.cycle = self.cycle, cycle
                    if existing is None or existing.response_complete:
                        cycle.start()
                    else:  # pipelined: its turn comes in on_response_complete
                        self.flow.pause_reading()
                        self.pipeline.appendleft((cycle, None))
                    return
            super().on_headers_complete()

        def _direct_cycle(self, direct: DirectIngest) -> DirectCycle | None:
            try:
                parsed = httptools.parse_url(self.url)
                path = parsed.path.decode("ascii")
            except (httptools.HttpParserError, UnicodeDecodeError):
                return None  # uvicorn answers it as it would any other
            method = self.parser.get_method()
            kind = direct.kind(method, unquote(path) if "%" in path else path)
            if kind is None:
                return None
            headers = dict(reversed(self.headers))  # the first of a repeated header, as Starlette
            target = parsed.path.decode("latin-1")
            if parsed.query:
                target += "?" + parsed.query.decode("latin-1")
            authorization = headers.get(b"authorization")
            request = IngestRequest(
                method=method.decode("ascii"),
                target=target,
                query=parsed.query or b"",
                authorization=None if authorization is None else authorization.decode("latin-1"),
                content_length=headers.get(b"content-length", b"").decode("latin-1"),
                peer=host_port(*self.client) if self.client else "unknown",
                received_at=time.time(),
            )
            return DirectCycle(
                self,
                direct,
                kind,
                request,
                keep_alive=self.parser.get_http_version() != "1.0"
                and self.parser.should_keep_alive(),
                expect_continue=self.expect_100_continue,
            )

        def on_body(self, body: bytes) -> None:
            if type(self.cycle) is DirectCycle:
                self.cycle.on_body(body)
            else:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if type(self.cycle) is DirectCycle:
                self.cycle.on_message_complete()
            else:
                super().on_message_complete()

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            if type(cycle) is DirectCycle:
                # A pipelined one, its turn come as the one before was answered: started on
                # the next turn of the loop (as uvicorn starts a task), not inside that answer.
                self.loop.call_soon(cycle.start)
            else:
                super()._start_asgi_task(cycle, app)

        def on_response_complete(self) -> None:
            self._idle_from = time.monotonic()
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if type(self.cycle) is DirectCycle:
                self.cycle.lost()
            if self._header_timer is not None:
                self._header_timer.cancel()
            limits.release(self)
            refusing.discard(self)
            super().connection_lost(exc)

        def idle_since(self) -> float | None:
            """When the last response was sent (or the connection opened) if no request has
            begun since; None while one is in progress."""
            if self.cycle is not None and not self.cycle.response_complete:
                return None
            return self._idle_from

        def close(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            # A new request replaces `cycle`; the same one still there means none has begun.
            waiting_after = self.cycle
            self._header_timer = self.loop.call_later(
                header_timeout_s, self._header_timeout, waiting_after
            )

        def _header_timeout(self, waiting_after: object) -> None:
            if self.cycle is waiting_after and not self.transport.is_closing():
                self.transport.close()

    return LimitedProtocol


class HttpServer:
    """An ASGI app served on `host`:`port` (0 picks a free port; `.port` tells which)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        ssl_certfile: str = "",
        ssl_keyfile: str = "",
        metrics: Metrics | None = None,
        max_connections: int = 1000,
        max_connections_per_peer: int = 64,
        timeout_keep_alive: int = 30,
        header_timeout_s: float = 30.0,
        max_header_bytes: int = 64 * 1024,
        timeout_graceful_shutdown: int = 10,
        direct_path: bool = True,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = port
        metrics = metrics or Metrics()
        self.connections: ConnectionLimits[Any] = ConnectionLimits(
            max_total=max_connections,
            max_per_peer=max_connections_per_peer,
            gauge=metrics.connections.labels(FORM_RECEIVER),
            reject=Refusals(FORM_RECEIVER, metrics).reject,
        )
        # The ingest app's hot requests skip the ASGI stack (ingest/http.py, DirectIngest).
        direct = getattr(getattr(app, "state", None), "direct_ingest", None)
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=_protocol(
                header_timeout_s,
                max_header_bytes,
                self.connections,
                direct if direct_path else None,
            ),
            ws="none",
            lifespan="off",  # app.py starts and stops what the app needs
            log_config=None,  # logging is set up by notifier.log
            access_log=False,
            server_header=False,
            proxy_headers=False,  # the peer address is the device; no proxy is trusted
            ssl_certfile=ssl_certfile or None,
            ssl_keyfile=ssl_keyfile or None,
            limit_concurrency=None,  # see the module docstring: LimitedProtocol limits
            timeout_keep_alive=timeout_keep_alive,
            timeout_graceful_shutdown=timeout_graceful_shutdown,
            # Bounds what h11 buffers of a request head still incomplete (slow or huge heads);
            # with httptools, LimitedProtocol counts the head itself.
            h11_max_incomplete_event_size=max_header_bytes,
        )
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._config.is_ssl else "http"

    async def start(self) -> None:
        """Bind and serve; returns once listening. Raises OSError when the address is taken."""
        self._socket = self._bind()
        self.port = int(self._socket.getsockname()[1])
        server = _Server(self._config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[self._socket]), name="http-server")
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait({self._task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not server.listening.is_set():
            listening.cancel()
            where = host_port(self.host, self.port)
            try:
                self._task.result()
            except BaseException as e:  # uvicorn calls sys.exit on startup failures
                raise OSError(f"HTTP server on {where} did not start: {e}") from e
            raise OSError(f"HTTP server on {where} stopped while starting")
        log.info("http_listening", host=self.host, port=self.port, scheme=self.scheme)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            sock.listen(self._config.backlog)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            where = host_port(self.host, self._requested_port)
            raise OSError(e.errno, f"cannot listen on {where}: {e.strerror}") from None
        return sock

    async def stop(self) -> None:
        """Stop accepting, let running requests finish (up to the graceful timeout), close."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server = None
            self._task = None
            if self._socket is not None:
                self._socket.close()
                self._socket = None
