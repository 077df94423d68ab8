"""The HTTP receiver: innovaphone form fields, the JSON records API, health, metrics, history.

Routes:
- ``GET|POST <paths>``, and with `catch_all` any other path and method that no other route takes
  (except the service endpoints below; the innovaphone Standard method's path is not documented):
  innovaphone fields in the query (GET) or the body (POST, parsed as a query string whatever the
  Content-Type). Answers ``200 OK`` (text/plain).
- ``POST /api/v1/records``: a JSON object or array (notifier.ingest.parse.jsonrec). Answers
  ``200 {"accepted": n, "ids": [...]}``.
- ``GET /api/v1/records?limit=N``: the newest N records received (default 100, at most 1000).
- ``POST /api/v1/alertmanager``, ``POST|PUT /api/v1/grafana``: their webhook payloads
  (notifier.ingest.parse.webhook), one record per alert, behind `[webhooks]` auth
  (notifier.ingest.webhooks) rather than the innovaphone senders'. Answer like the records API.
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
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

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
from notifier.ingest.parse.webhook import ALERTMANAGER, GRAFANA, parse_webhook
from notifier.ingest.stream import DEGRADED, extra_metrics
from notifier.ingest.webhooks import WebhookAuth
from notifier.log import RateLimiter, get_logger
from notifier.metrics import Metrics
from notifier.records import ParseError, Record, SeverityScheme
from notifier.spool.base import Spool, SpoolFull, SpoolUnavailable

log = get_logger(__name__)

FORM_RECEIVER = "http"
JSON_RECEIVER = "json"
RECORDS_PATH = "/api/v1/records"
ALERTMANAGER_PATH = "/api/v1/alertmanager"
GRAFANA_PATH = "/api/v1/grafana"
# The service endpoints' paths: no configured innovaphone path takes them.
_SERVICE_PATHS = frozenset({"/healthz", "/metrics", RECORDS_PATH, ALERTMANAGER_PATH, GRAFANA_PATH})
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


# The ingest requests the direct path (ingest/httpdirect.py) may answer without Starlette.
FORM = "form"  # innovaphone fields, GET or POST, on the configured paths
RECORDS = "records"  # POST /api/v1/records


class IngestRequest(NamedTuple):
    """What an ingest endpoint needs of a request's head, wherever it was parsed."""

    method: str
    target: str  # as the client sent it: what Digest signs as `uri`
    query: bytes
    authorization: str | None
    content_length: str  # as declared; "" when none was
    peer: str  # "ip:port"
    received_at: float


def _ingest_request(request: Request) -> IngestRequest:
    headers = request.headers
    return IngestRequest(
        method=request.method,
        target=request_target(request.scope),
        query=bytes(request.scope.get("query_string", b"")),
        authorization=headers.get("authorization"),
        content_length=headers.get("content-length", ""),
        peer=peer_of(request),
        received_at=time.time(),
    )


def _gone() -> _Refusal:
    return _Refusal(400, "disconnected", "the client went away mid-body")


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
        webhook_auth: WebhookAuth | None = None,
    ) -> None:
        self.history_guard = history_guard
        self.webhook_auth = webhook_auth or WebhookAuth()
        self.spool = spool
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.auth = auth
        self.scheme = scheme
        self.body_timeout_s = body_timeout_s
        self.max_records = max_records
        self.health_info = health
        self.limiter = RateLimiter()
        self._received = {
            FORM: metrics.received.labels(FORM_RECEIVER),
            RECORDS: metrics.received.labels(JSON_RECEIVER),
        }
        self._accepted: dict[tuple[str, str], Any] = {}  # (receiver, kind) → its counter

    # --- endpoints ---

    async def innovaphone(self, request: Request) -> Response:
        if request.method not in ("GET", "POST"):
            return _method_not_allowed("GET, POST")
        req = _ingest_request(request)
        try:
            self.head(FORM, req)
            body = await self._read_body(request) if req.method == "POST" else b""
            await self._store(FORM_RECEIVER, [self._form_record(req, body)])
        except _Refusal as refusal:
            return self._refuse(FORM_RECEIVER, req.peer, refusal)
        return PlainTextResponse("OK")

    async def records(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._post_records(request)
        if request.method != "GET":
            return _method_not_allowed("GET, POST")
        if self.history_guard is not None and (refused := self.history_guard(request)):
            return refused
        try:
            self._authenticate(
                request.method, request_target(request.scope), request.headers.get("authorization")
            )
            limit = history_limit(request.query_params.get("limit"))
        except _Refusal as refusal:
            return self._refuse(JSON_RECEIVER, peer_of(request), refusal)
        return JSONResponse([record.to_dict() for record in self.spool.history(limit)])

    async def _post_records(self, request: Request) -> Response:
        req = _ingest_request(request)
        try:
            self.head(RECORDS, req)
            body = await self._read_body(request)
            records = await self._parse(
                parse_json_records, JSON_RECEIVER, body, req.received_at, req.peer
            )
            await self._store(JSON_RECEIVER, records)
        except _Refusal as refusal:
            return self._refuse(JSON_RECEIVER, req.peer, refusal)
        return _accepted(records)

    def webhook(self, receiver: str) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint of one webhook sender (`receiver`: alertmanager, grafana)."""

        async def endpoint(request: Request) -> Response:
            received_at = time.time()
            peer = peer_of(request)
            self.metrics.received.labels(receiver).inc()
            try:
                verdict = self.webhook_auth.check(
                    request.headers.get("authorization"),
                    request.client.host if request.client else None,
                )
                if not verdict.ok:
                    challenges = [("WWW-Authenticate", c) for c in verdict.challenges]
                    raise _Refusal(verdict.status, verdict.reason, verdict.detail, challenges)
                body = await self._read_body(request)
                records = await self._parse(parse_webhook, receiver, body, received_at, peer)
                await self._store(receiver, records)
            except _Refusal as refusal:
                return self._refuse(receiver, peer, refusal)
            return _accepted(records)

        return endpoint

    async def healthz(self, request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok"}
        if self.health_info is not None:
            body.update(self.health_info())
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    async def metrics_text(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- steps ---

    def head(self, kind: str, req: IngestRequest) -> None:
        """A request of `kind` whose head has arrived: counted, authenticated, and refused
        (raises _Refusal) when the body it declares is over the limit."""
        self._received[kind].inc()
        self._authenticate(req.method, req.target, req.authorization)
        if req.method == "POST":
            self._check_declared(req.content_length)

    def _check_declared(self, declared: str) -> None:
        """Refuses a body declared (Content-Length) over the limit before reading any of it."""
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _Refusal(
                413, "too_large", f"body of {declared} bytes; at most {self.max_body_bytes}"
            )

    def _authenticate(self, method: str, target: str, authorization: str | None) -> None:
        if self.auth is None:
            return
        result = self.auth.check(method, target, authorization)
        if result.ok:
            return
        challenges = [("WWW-Authenticate", c) for c in self.auth.challenges(stale=result.stale)]
        if result.routine:
            # The first leg of every Digest exchange: counted apart from failed logins.
            raise _Refusal(401, "auth_challenge", "authentication required", challenges)
        detail = f"{result.reason} (user {result.user[:64]!r})" if result.user else result.reason
        raise _Refusal(401, "auth", detail, challenges)

    def _form_record(self, req: IngestRequest, body: bytes) -> Record:
        """The record of an innovaphone request: its fields are in the body of a POST, or in
        the query (a GET, or a POST with an empty body: some senders do that)."""
        data = body if body.strip() else req.query
        try:
            return parse_form(
                data,
                received_at=req.received_at,
                sender=req.peer,
                receiver=FORM_RECEIVER,
                scheme=self.scheme,
            )
        except ParseError as e:
            raise _Refusal(400, e.reason, str(e)) from None
        except Exception as e:  # a parser bug: keep the message and answer 200, never 500
            return unparsed_record(
                data, e, received_at=req.received_at, sender=req.peer, receiver=FORM_RECEIVER
            )

    async def _read_body(self, request: Request) -> bytes:
        """The request body, refused as soon as it passes `max_body_bytes` (chunked or not)."""
        self._check_declared(request.headers.get("content-length", ""))
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise self.too_large()
                    chunks.append(chunk)
        except TimeoutError:
            raise self.too_slow() from None
        except ClientDisconnect:
            raise _gone() from None
        return b"".join(chunks)

    def too_large(self) -> _Refusal:
        """A body that passed the limit while it streamed in."""
        return _Refusal(413, "too_large", f"body over {self.max_body_bytes} bytes")

    def too_slow(self) -> _Refusal:
        return _Refusal(408, "body_timeout", f"body not received within {self.body_timeout_s:g} s")

    async def _parse(
        self,
        parser: Callable[..., list[Record]],
        receiver: str,
        body: bytes,
        received_at: float,
        peer: str,
    ) -> list[Record]:
        """`parser` (a JSON body → Records) on `body`, a big one in a worker thread."""
        if len(body) > _THREAD_PARSE_BYTES:
            return await asyncio.to_thread(
                self._parse_now, parser, receiver, body, received_at, peer
            )
        return self._parse_now(parser, receiver, body, received_at, peer)

    def _parse_now(
        self,
        parser: Callable[..., list[Record]],
        receiver: str,
        body: bytes,
        received_at: float,
        peer: str,
    ) -> list[Record]:
        """`parser` on `body`; bad input is a 400 refusal."""
        try:
            return parser(
                body,
                received_at=received_at,
                sender=peer,
                receiver=receiver,
                scheme=self.scheme,
                max_records=self.max_records,
            )
        except ParseError as e:
            raise _Refusal(400, e.reason, str(e)) from None
        except Exception as e:  # a parser bug: keep the body as one log record, never a 500
            return [
                unparsed_record(body, e, received_at=received_at, sender=peer, receiver=receiver)
            ]

    async def _store(self, receiver: str, records: Sequence[Record]) -> None:
        """`records` into the spool, counted; a refusal (_Refusal) when they cannot be."""
        try:
            await self.spool.put(records)
        except Exception as e:
            raise self._put_refusal(receiver, e) from None
        self._count_all([(receiver, records)])

    def _put_refusal(self, receiver: str, error: Exception) -> _Refusal:
        """What a sender is told when the spool did not take its records."""
        if isinstance(error, SpoolFull):
            # A full queue and failed storage (the database is down) are both "retry later",
            # told apart (`reason`) so that whoever reads the answer or the metric looks at
            # the right one.
            retry_after = str(max(1, int(error.retry_after_s)))
            return _Refusal(503, error.reason, str(error), [("Retry-After", retry_after)])
        # Not the sender's fault and not theirs to see: they retry, we log the cause.
        log.error("spool_put_failed", receiver=receiver, error=f"{type(error).__name__}: {error}")
        return _Refusal(
            503, "spool_error", "records could not be stored: retry later", [("Retry-After", "5")]
        )

    def _count_all(self, puts: Iterable[tuple[str, Sequence[Record]]]) -> None:
        """Counts the records stored, each (receiver, kind) counter once."""
        counts: dict[tuple[str, str], int] = {}
        for receiver, records in puts:
            for record in records:
                key = (receiver, record.kind.value)
                counts[key] = counts.get(key, 0) + 1
                if record.extras:
                    self._count_degraded(receiver, record)
        for (receiver, kind), n in counts.items():
            counter = self._accepted.get((receiver, kind))
            if counter is None:
                counter = self._accepted[receiver, kind] = self.metrics.accepted.labels(
                    receiver, kind
                )
            counter.inc(n)

    def _count_degraded(self, receiver: str, record: Record) -> None:
        """Kept with a problem noted (a parser failure among them): counted as the stream
        receivers count it."""
        for key in record.extras.keys() & DEGRADED.keys():
            extra_metrics(self.metrics).degraded.labels(receiver, DEGRADED[key]).inc()
            reason = DEGRADED[key]
            self._warn("ingest_degraded", receiver, reason, record.sender, record.extras[key])

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


def _accepted(records: Sequence[Record]) -> Response:
    return JSONResponse({"accepted": len(records), "ids": [r.id for r in records]})


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


class Answer(NamedTuple):
    """A response as the direct path writes it: what it reads of a Starlette Response."""

    status_code: int
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes


Reply = Response | Answer
# What a request answered on the direct path is told, once its records are stored.
_Answer = Callable[[Reply], None]


class DirectIngest:
    """The hot ingest requests, answered by HttpServer's protocol (ingest/httpdirect.py)
    straight from the parsed request instead of through an ASGI task and Starlette.

    The steps are the endpoints' own (auth, body limits, parsing, metrics, refusals and
    answers), so a sender cannot tell the two paths apart. What differs is the spool: the
    records of every request that completed in one turn of the event loop go to the spool in
    one put, and on a refusal of that put each request's records are put on their own, so
    one sender's refusal is never another's.
    """

    def __init__(self, endpoints: _IngestEndpoints, form_paths: Sequence[str]) -> None:
        self._endpoints = endpoints
        self._form_paths = frozenset(form_paths) - _SERVICE_PATHS  # those routes come first
        self._waiting: list[tuple[str, IngestRequest, list[Record], _Answer]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def max_body_bytes(self) -> int:
        return self._endpoints.max_body_bytes

    @property
    def body_timeout_s(self) -> float:
        return self._endpoints.body_timeout_s

    def kind(self, method: bytes, path: str) -> str | None:
        """FORM or RECORDS when a request of `method` on `path` is one of ours, else None
        (Starlette answers it)."""
        if path == RECORDS_PATH:
            return RECORDS if method == b"POST" else None
        if path in self._form_paths and method in (b"GET", b"POST"):
            return FORM
        return None

    def head(self, kind: str, req: IngestRequest) -> Response | None:
        """The answer to a request refused on its head alone (auth, declared size), else
        None: read the body (a GET's is ignored)."""
        try:
            self._endpoints.head(kind, req)
        except _Refusal as refusal:
            return self._refuse(kind, req, refusal)
        return None

    def too_large(self, kind: str, req: IngestRequest) -> Response:
        return self._refuse(kind, req, self._endpoints.too_large())

    def too_slow(self, kind: str, req: IngestRequest) -> Response:
        return self._refuse(kind, req, self._endpoints.too_slow())

    def gone(self, kind: str, req: IngestRequest) -> None:
        """The sender went away before its body had arrived: counted and logged."""
        self._refuse(kind, req, _gone())

    def body(self, kind: str, req: IngestRequest, body: bytes, answer: _Answer) -> None:
        """The whole request is in: parse it and store its records; `answer` is called with
        the response once they are stored (or refused)."""
        e = self._endpoints
        receiver = _receiver(kind)
        try:
            if kind == FORM:
                records = [e._form_record(req, body if req.method == "POST" else b"")]
            elif len(body) > _THREAD_PARSE_BYTES:
                self._spawn(self._parse_aside(req, body, answer))
                return
            else:
                records = e._parse_now(
                    parse_json_records, JSON_RECEIVER, body, req.received_at, req.peer
                )
        except _Refusal as refusal:
            answer(self._refuse(kind, req, refusal))
            return
        self._put_soon(receiver, req, records, answer)

    async def _parse_aside(self, req: IngestRequest, body: bytes, answer: _Answer) -> None:
        try:
            records = await self._endpoints._parse(
                parse_json_records, JSON_RECEIVER, body, req.received_at, req.peer
            )
        except _Refusal as refusal:
            answer(self._refuse(RECORDS, req, refusal))
            return
        self._put_soon(JSON_RECEIVER, req, records, answer)

    def _put_soon(
        self, receiver: str, req: IngestRequest, records: list[Record], answer: _Answer
    ) -> None:
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._flush)
        self._waiting.append((receiver, req, records, answer))

    def _flush(self) -> None:
        """One put for the requests completed in this turn of the loop (the durable spool
        also commits the puts that wait for it together)."""
        waiting, self._waiting = self._waiting, []
        self._spawn(self._put(waiting))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put(self, waiting: list[tuple[str, IngestRequest, list[Record], _Answer]]) -> None:
        e = self._endpoints
        try:
            await e.spool.put([r for _, _, records, _ in waiting for r in records])
        except Exception as error:
            if len(waiting) > 1 and _a_limit(error):
                # Whether a request's records fit depends on them, so each is put on its own:
                # one sender's refusal is not another's.
                for receiver, req, records, answer in waiting:
                    try:
                        await e._store(receiver, records)
                    except _Refusal as refusal:
                        _tell(answer, e._refuse(receiver, req.peer, refusal))
                    else:
                        _tell(answer, _stored(receiver, records))
                return
            # The storage failed (a database outage): every request of the put is told to
            # retry, at once; putting each again would make the last wait for every failure.
            failed = e._put_refusal(waiting[0][0], error)
            for receiver, req, _, answer in waiting:
                _tell(answer, e._refuse(receiver, req.peer, failed))
            return
        e._count_all((receiver, records) for receiver, _, records, _ in waiting)
        for receiver, _, records, answer in waiting:
            _tell(answer, _stored(receiver, records))

    def _refuse(self, kind: str, req: IngestRequest, refusal: _Refusal) -> Response:
        return self._endpoints._refuse(_receiver(kind), req.peer, refusal)


def _a_limit(error: Exception) -> bool:
    """A put refused for a limit (the queue or the disk is full), not for failed storage."""
    return isinstance(error, SpoolFull) and not isinstance(error, SpoolUnavailable)


def _tell(answer: _Answer, response: Reply) -> None:
    """`answer(response)`; a failure is logged and never keeps the others from theirs."""
    try:
        answer(response)
    except Exception as e:
        log.error("direct_answer_failed", error=f"{type(e).__name__}: {e}", exc_info=e)


def _receiver(kind: str) -> str:
    return FORM_RECEIVER if kind == FORM else JSON_RECEIVER


def _stored(receiver: str, records: Sequence[Record]) -> Reply:
    """The answer to a request whose records are stored: what the endpoints answer (the
    parity tests hold it to them), built without Starlette (record ids are hex digits)."""
    if receiver == FORM_RECEIVER:
        return _OK
    ids = ",".join([f'"{r.id}"' for r in records])
    body = f'{{"accepted":{len(records)},"ids":[{ids}]}}'.encode()
    return Answer(200, [(b"content-length", b"%d" % len(body)), _JSON_TYPE], body)


_JSON_TYPE = (b"content-type", b"application/json")
_OK = PlainTextResponse("OK")  # only read: one for every innovaphone request


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
    webhook_auth: WebhookAuth | None = None,
) -> Starlette:
    """The Starlette app of the HTTP receiver (see the module docstring for the routes).

    `extra_routes` (web pages) take precedence over the catch-all; `health()` adds fields to
    ``/healthz`` (a "status" other than "ok" answers 503). `history_guard` may refuse a
    ``GET /api/v1/records`` (returns the refusal, or None to let it through). `webhook_auth`
    guards the webhooks (default: loopback senders only).
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
        webhook_auth=webhook_auth,
    )
    service: list[BaseRoute] = [  # the paths are _SERVICE_PATHS
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/metrics", endpoints.metrics_text, methods=["GET"]),
        Route(RECORDS_PATH, endpoints.records, methods=["GET", "POST"]),
        Route(ALERTMANAGER_PATH, endpoints.webhook(ALERTMANAGER), methods=["POST"]),
        # Grafana's contact point lets the user pick POST or PUT.
        Route(GRAFANA_PATH, endpoints.webhook(GRAFANA), methods=["POST", "PUT"]),
    ]
    routes: list[BaseRoute] = [
        *service,
        *(Route(path, endpoints.innovaphone, methods=["GET", "POST"]) for path in paths),
        *extra_routes,
    ]
    if catch_all:
        routes.append(_CatchAll(endpoints.innovaphone, others=service))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    # HttpServer's protocol answers these requests itself (see DirectIngest).
    app.state.direct_ingest = DirectIngest(endpoints, paths)
    return app
