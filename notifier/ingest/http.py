"""The HTTP receiver: innovaphone form fields, the JSON records API, health, metrics, history.

Routes:
- ``GET|POST <paths>``, and with `catch_all` any other path and method that no other route takes
  (except the service endpoints below; the innovaphone Standard method's path is not documented):
  innovaphone fields in the query (GET) or the body (POST, parsed as a query string whatever the
  Content-Type). Answers ``200 OK`` (text/plain).
- ``POST /api/v1/records``: a JSON object or array (notifier.ingest.parse.jsonrec). Answers
  ``200 {"accepted": n, "ids": [...]}``.
- ``GET /api/v1/records?limit=N``: the newest N records received (default 100, at most 1000).
- ``GET /healthz`` (never behind auth), ``GET /metrics`` (Prometheus text; not behind auth so a
  scraper needs no password).

A 200 is sent only after `spool.put` returned, i.e. once the records are held (durably, for the
durable kinds). Refusals are JSON ``{"error": reason, "detail": ...}``: 400 bad input, 401 auth
(with the WWW-Authenticate challenges), 405 method, 408 slow body, 413 body too large (checked
while the body streams in, chunked or not), 503 spool full (with Retry-After).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from notifier.config import host_port
from notifier.ingest.httpauth import HttpAuth
from notifier.ingest.parse.fallback import unparsed_record
from notifier.ingest.parse.innovaphone import parse_form
from notifier.ingest.parse.jsonrec import parse_json_records
from notifier.ingest.stream import DEGRADED, extra_metrics
from notifier.log import RateLimiter, get_logger
from notifier.metrics import Metrics
from notifier.records import ParseError, Record, SeverityScheme
from notifier.spool.base import Spool, SpoolFull

log = get_logger(__name__)

FORM_RECEIVER = "http"
JSON_RECEIVER = "json"
RECORDS_PATH = "/api/v1/records"
HISTORY_DEFAULT = 100
HISTORY_MAX = 1000
# Bodies above this are parsed in a worker thread so a big batch does not stall the loop.
_THREAD_PARSE_BYTES = 256 * 1024


class _Refusal(Exception):
    """A request we answer with an error: the status, a counter reason and a detail for people."""

    def __init__(
        self, status: int, reason: str, detail: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers


def error_response(
    status: int, reason: str, detail: str, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    response = JSONResponse({"error": reason, "detail": detail}, status_code=status)
    for name, value in headers:
        # append, not set: a Digest 401 carries one challenge per algorithm.
        response.headers.append(name, value)
    return response


def peer_of(request: Request) -> str:
    """The sender as "ip:port" ("[v6]:port")."""
    if request.client is None:
        return "unknown"
    return host_port(request.client.host, request.client.port)


def request_target(scope: Scope) -> str:
    """The request target as the client sent it (what Digest signs as `uri`)."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
    target = bytes(raw_path).decode("latin-1")
    query = bytes(scope.get("query_string", b""))
    return f"{target}?{query.decode('latin-1')}" if query else target


def history_limit(value: str | None) -> int:
    """The `limit` query argument of the history endpoint; raises _Refusal when it is bad."""
    if value is None or value == "":
        return HISTORY_DEFAULT
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if not 1 <= limit <= HISTORY_MAX:
        raise _Refusal(
            400, "bad_limit", f"limit {value[:20]!r}: use a whole number from 1 to {HISTORY_MAX}"
        )
    return limit


class _IngestEndpoints:
    def __init__(
        self,
        *,
        spool: Spool,
        metrics: Metrics,
        max_body_bytes: int,
        auth: HttpAuth | None,
        scheme: SeverityScheme,
        body_timeout_s: float,
        max_records: int,
        health: Callable[[], Mapping[str, Any]] | None,
        history_guard: Callable[[Request], Response | None] | None = None,
    ) -> None:
        self.history_guard = history_guard
        self.spool = spool
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.auth = auth
        self.scheme = scheme
        self.body_timeout_s = body_timeout_s
        self.max_records = max_records
        self.health_info = health
        self.limiter = RateLimiter()

    # --- endpoints ---

    async def innovaphone(self, request: Request) -> Response:
        if request.method not in ("GET", "POST"):
            return _method_not_allowed("GET, POST")
        received_at = time.time()
        peer = peer_of(request)
        self.metrics.received.labels(FORM_RECEIVER).inc()
        try:
            self._authenticate(request)
            data = bytes(request.scope.get("query_string", b""))
            if request.method == "POST":
                body = await self._read_body(request)
                # Some senders POST an empty body with the fields in the URL.
                if body.strip():
                    data = body
            try:
                record = parse_form(
                    data,
                    received_at=received_at,
                    sender=peer,
                    receiver=FORM_RECEIVER,
                    scheme=self.scheme,
                )
            except ParseError as e:
                raise _Refusal(400, e.reason, str(e)) from None
            except Exception as e:  # a parser bug: keep the message and answer 200, never 500
                record = unparsed_record(
                    data, e, received_at=received_at, sender=peer, receiver=FORM_RECEIVER
                )
            await self._store(FORM_RECEIVER, [record])
        except _Refusal as refusal:
            return self._refuse(FORM_RECEIVER, peer, refusal)
        return PlainTextResponse("OK")

    async def records(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._post_records(request)
        if request.method != "GET":
            return _method_not_allowed("GET, POST")
        if self.history_guard is not None and (refused := self.history_guard(request)):
            return refused
        try:
            self._authenticate(request)
            limit = history_limit(request.query_params.get("limit"))
        except _Refusal as refusal:
            return self._refuse(JSON_RECEIVER, peer_of(request), refusal)
        return JSONResponse([record.to_dict() for record in self.spool.history(limit)])

    async def _post_records(self, request: Request) -> Response:
        received_at = time.time()
        peer = peer_of(request)
        self.metrics.received.labels(JSON_RECEIVER).inc()
        try:
            self._authenticate(request)
            body = await self._read_body(request)
            records = await self._parse_json(body, received_at, peer)
            await self._store(JSON_RECEIVER, records)
        except _Refusal as refusal:
            return self._refuse(JSON_RECEIVER, peer, refusal)
        return JSONResponse({"accepted": len(records), "ids": [r.id for r in records]})

    async def healthz(self, request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok"}
        if self.health_info is not None:
            body.update(self.health_info())
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    async def metrics_text(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- steps ---

    def _authenticate(self, request: Request) -> None:
        if self.auth is None:
            return
        result = self.auth.check(
            request.method, request_target(request.scope), request.headers.get("authorization")
        )
        if result.ok:
            return
        challenges = [("WWW-Authenticate", c) for c in self.auth.challenges(stale=result.stale)]
        if result.routine:
            # The first leg of every Digest exchange: counted apart from failed logins.
            raise _Refusal(401, "auth_challenge", "authentication required", challenges)
        detail = f"{result.reason} (user {result.user[:64]!r})" if result.user else result.reason
        raise _Refusal(401, "auth", detail, challenges)

    async def _read_body(self, request: Request) -> bytes:
        """The request body, refused as soon as it passes `max_body_bytes` (chunked or not)."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _Refusal(413, "too_large", f"body of {declared} bytes; at most {limit}")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise _Refusal(413, "too_large", f"body over {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise _Refusal(
                408, "body_timeout", f"body not received within {self.body_timeout_s:g} s"
            ) from None
        except ClientDisconnect:
            raise _Refusal(400, "disconnected", "the client went away mid-body") from None
        return b"".join(chunks)

    async def _parse_json(self, body: bytes, received_at: float, peer: str) -> list[Record]:
        def parse() -> list[Record]:
            return parse_json_records(
                body,
                received_at=received_at,
                sender=peer,
                receiver=JSON_RECEIVER,
                scheme=self.scheme,
                max_records=self.max_records,
            )

        try:
            if len(body) > _THREAD_PARSE_BYTES:
                return await asyncio.to_thread(parse)
            return parse()
        except ParseError as e:
            raise _Refusal(400, e.reason, str(e)) from None
        except Exception as e:  # a parser bug: keep the body as one log record, never a 500
            return [
                unparsed_record(
                    body, e, received_at=received_at, sender=peer, receiver=JSON_RECEIVER
                )
            ]

    async def _store(self, receiver: str, records: Sequence[Record]) -> None:
        try:
            await self.spool.put(records)
        except SpoolFull as e:
            raise _Refusal(
                503, "spool_full", str(e), [("Retry-After", str(max(1, int(e.retry_after_s))))]
            ) from None
        except Exception as e:
            # Not the sender's fault and not theirs to see: they retry, we log the cause.
            log.error("spool_put_failed", receiver=receiver, error=f"{type(e).__name__}: {e}")
            raise _Refusal(
                503,
                "spool_error",
                "records could not be stored: retry later",
                [("Retry-After", "5")],
            ) from None
        for record in records:
            self.metrics.accepted.labels(receiver, record.kind.value).inc()
            # Kept with a problem noted (a parser failure among them): counted as the stream
            # receivers count it.
            for key in record.extras.keys() & DEGRADED.keys():
                extra_metrics(self.metrics).degraded.labels(receiver, DEGRADED[key]).inc()
                self._warn(
                    "ingest_degraded", receiver, DEGRADED[key], record.sender, record.extras[key]
                )

    def _refuse(self, receiver: str, peer: str, refusal: _Refusal) -> Response:
        self.metrics.rejected.labels(receiver, refusal.reason).inc()
        self._warn(
            "ingest_rejected",
            receiver,
            refusal.reason,
            peer,
            refusal.detail,
            status=refusal.status,
        )
        return error_response(refusal.status, refusal.reason, refusal.detail, refusal.headers)

    def _warn(
        self, event: str, receiver: str, reason: str, peer: str, detail: str, **more: Any
    ) -> None:
        """Log `event` unless this sender had its share of `reason` lines this minute."""
        host = peer.rsplit(":", 1)[0]
        allowed, suppressed = self.limiter.allow(f"{receiver}|{reason}|{host}")
        if allowed:
            emit = log.debug if reason == "auth_challenge" else log.warning
            emit(
                event,
                receiver=receiver,
                reason=reason,
                sender=peer,
                detail=detail,
                suppressed=suppressed,
                **more,
            )


def _method_not_allowed(allow: str) -> Response:
    return error_response(
        405, "method_not_allowed", f"use {allow.replace(', ', ' or ')}", [("Allow", allow)]
    )


class _CatchAll(Route):
    """Innovaphone fields (GET / POST) on any path but our own service endpoints.

    Routes listed before it win for the methods they take; a POST to a page that only takes
    GET (say ``/``) is still ingested, since the Standard method's path is not documented and
    an alarm answered 405 would be retried by the device for ever.
    """

    def __init__(self, endpoint: Callable[[Request], Any], others: Sequence[BaseRoute]) -> None:
        super().__init__("/{path:path}", endpoint, methods=["GET", "POST"])
        self._others = others

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if any(route.matches(scope)[0] is not Match.NONE for route in self._others):
            return Match.NONE, {}
        return super().matches(scope)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reasons = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code,
        reasons.get(exc.status_code, "http_error"),
        f"{exc.detail}: {request.method} {request.url.path[:200]}",
        list((exc.headers or {}).items()),
    )


def build_ingest_app(
    *,
    spool: Spool,
    metrics: Metrics,
    paths: Sequence[str] = ("/log", "/alarm"),
    catch_all: bool = True,
    max_body_bytes: int = 1 << 20,
    auth: HttpAuth | None = None,
    scheme: SeverityScheme = SeverityScheme.EVENTS_API,
    extra_routes: Sequence[BaseRoute] = (),
    health: Callable[[], Mapping[str, Any]] | None = None,
    body_timeout_s: float = 30.0,
    max_records: int = 10_000,
    history_guard: Callable[[Request], Response | None] | None = None,
) -> Starlette:
    """The Starlette app of the HTTP receiver (see the module docstring for the routes).

    `extra_routes` (web pages) take precedence over the catch-all; `health()` adds fields to
    ``/healthz`` (a "status" other than "ok" answers 503). `history_guard` may refuse a
    ``GET /api/v1/records`` (returns the refusal, or None to let it through).
    """
    endpoints = _IngestEndpoints(
        spool=spool,
        metrics=metrics,
        max_body_bytes=max_body_bytes,
        auth=auth,
        scheme=scheme,
        body_timeout_s=body_timeout_s,
        max_records=max_records,
        health=health,
        history_guard=history_guard,
    )
    service: list[BaseRoute] = [
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/metrics", endpoints.metrics_text, methods=["GET"]),
        Route(RECORDS_PATH, endpoints.records, methods=["GET", "POST"]),
    ]
    routes: list[BaseRoute] = [
        *service,
        *(Route(path, endpoints.innovaphone, methods=["GET", "POST"]) for path in paths),
        *extra_routes,
    ]
    if catch_all:
        routes.append(_CatchAll(endpoints.innovaphone, others=service))
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
