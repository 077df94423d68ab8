"""One request answered on the direct path: HttpServer's protocol hands the hot ingest requests
(`DirectIngest.kind`) to a DirectCycle instead of starting an ASGI task for Starlette.

A DirectCycle stands where uvicorn's RequestResponseCycle would (`protocol.cycle`), with the
attributes uvicorn's protocol reads of it (`response_complete`, `keep_alive`, `disconnected`,
`message_event`), so keep-alive, pipelining, the header timeout, the connection limits and a
graceful stop work as for any request. What it does itself is what the ASGI app and uvicorn's
cycle did for these requests: it refuses a request on its head (auth, a declared body over the
limit) before reading the body, sends ``100 Continue`` when asked, counts the body as it
arrives (413 once over the limit), answers 408 when the body does not arrive in time, and
writes the response as uvicorn writes one (its default headers, ``connection: close`` when
the connection ends).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from notifier.ingest.http import DirectIngest, IngestRequest, Reply
from notifier.log import get_logger

log = get_logger(__name__)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_INTERNAL_ERROR = Response(
    "Internal Server Error",
    status_code=500,
    media_type="text/plain",
    headers={"Connection": "close"},
)


_defaults_seen: tuple[list[tuple[bytes, bytes]], bytes] = ([], b"")


def _defaults(headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default headers (the date, renewed once a second as a new list) as written."""
    global _defaults_seen
    seen, wire = _defaults_seen
    if headers is not seen:
        wire = b"".join(b"%s: %s\r\n" % pair for pair in headers)
        _defaults_seen = (headers, wire)
    return wire


class _NoEvent:
    """uvicorn's protocol sets its cycle's `message_event` on a disconnect; nobody waits here."""

    def set(self) -> None:
        return


_NO_EVENT = _NoEvent()


class DirectCycle:
    """One request of `kind` on `protocol`'s connection, from its head to its response."""

    __slots__ = (
        "_body_timer",
        "_chunks",
        "_complete",
        "_direct",
        "_expect_continue",
        "_finished",
        "_kind",
        "_over",
        "_protocol",
        "_request",
        "_size",
        "_started",
        "disconnected",
        "keep_alive",
        "message_event",
        "response_complete",
    )

    def __init__(
        self,
        protocol: Any,
        direct: DirectIngest,
        kind: str,
        request: IngestRequest,
        *,
        keep_alive: bool,
        expect_continue: bool,
    ) -> None:
        self._protocol = protocol
        self._direct = direct
        self._kind = kind
        self._request = request
        self._expect_continue = expect_continue
        self._chunks: list[bytes] = []
        self._size = 0
        self._over = False  # the body passed the limit (before the request started)
        self._complete = False  # the whole request (body included) has arrived
        self._started = False  # its turn on the connection has come
        self._finished = False  # handed to DirectIngest.body (or answered)
        self._body_timer: asyncio.TimerHandle | None = None
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False
        self.message_event = _NO_EVENT

    @property
    def _reads_body(self) -> bool:
        """A POST's body holds its fields; a GET's is not read (as through Starlette)."""
        return self._request.method == "POST"

    @property
    def _wants_body(self) -> bool:
        """More of the body is still to be read: not handed on, answered or over the limit."""
        return self._reads_body and not (self._finished or self.response_complete or self._over)

    # --- from the protocol ---

    def start(self) -> None:
        """Its turn on the connection (at once, or after the requests pipelined before it)."""
        if self._started or self.disconnected or self._protocol.transport.is_closing():
            return
        self._started = True
        try:
            refused = self._direct.head(self._kind, self._request)
            if refused is not None:
                self.answer(refused)
            elif not self._reads_body:
                self._finish()
            elif self._over:
                self.answer(self._direct.too_large(self._kind, self._request))
            else:
                if self._expect_continue:  # sent when the body is read, as uvicorn does
                    self._protocol.transport.write(_CONTINUE)
                if self._complete:
                    self._finish()
                else:
                    self._body_timer = self._protocol.loop.call_later(
                        self._direct.body_timeout_s, self._timed_out
                    )
        except Exception as e:
            self._fail(e)

    def on_body(self, data: bytes) -> None:
        if not self._wants_body:
            return
        self._size += len(data)
        if self._size > self._direct.max_body_bytes:
            self._chunks.clear()
            self._over = True
            if self._started:
                self.answer(self._direct.too_large(self._kind, self._request))
            return
        self._chunks.append(data)

    def on_message_complete(self) -> None:
        self._complete = True
        if self._started and self._wants_body:
            self._finish()

    def lost(self) -> None:
        """The connection is gone: a body still expected is counted as uvicorn's path counts
        it (a sender that went away mid-body)."""
        self.disconnected = True
        self._stop_timer()
        if self._started and self._wants_body:
            self._finished = True
            self._direct.gone(self._kind, self._request)

    # --- answering ---

    def _finish(self) -> None:
        self._finished = True
        self._stop_timer()
        body = b"".join(self._chunks)
        self._chunks.clear()
        try:
            self._direct.body(self._kind, self._request, body, self.answer)
        except Exception as e:
            self._fail(e)

    def _fail(self, error: Exception) -> None:
        """A bug of ours: logged with its traceback, answered as uvicorn answers a failing
        app (500, and the connection closed)."""
        log.error(
            "direct_ingest_failed",
            error=f"{type(error).__name__}: {error}",
            sender=self._request.peer,
            exc_info=error,
        )
        self.answer(_INTERNAL_ERROR)

    def _timed_out(self) -> None:
        self._body_timer = None
        if self._wants_body:
            self._finished = True
            self.answer(self._direct.too_slow(self._kind, self._request))

    def _stop_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def answer(self, response: Reply) -> None:
        """Write `response` (once) and hand the connection back to the protocol."""
        if self.response_complete:
            return
        self.response_complete = True
        self._stop_timer()
        protocol = self._protocol
        transport = protocol.transport
        if self.disconnected or transport.is_closing():
            return
        says_close = False
        defaults = _defaults(protocol.server_state.default_headers)
        lines = [STATUS_LINE[response.status_code], defaults]
        for name, value in response.raw_headers:
            if name == b"connection" and b"close" in value.lower():
                says_close = True
            lines += (name, b": ", value, b"\r\n")
        keep_alive = self.keep_alive and not says_close
        if not keep_alive and not says_close:
            lines.append(b"connection: close\r\n")
        lines += (b"\r\n", bytes(response.body))
        transport.write(b"".join(lines))
        if not keep_alive:
            transport.close()
        protocol.on_response_complete()
