"""The direct path (ingest/httpdirect.py) answers the hot ingest requests as Starlette did.

Each request, as raw bytes on one connection, goes to a receiver with the direct path and to
one without it (`direct_path=False`: every request through uvicorn's ASGI cycle and the
Starlette app, as before the direct path); the answers (status, headers but the date, body),
what the spool holds and the ingest counters must be the same.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from notifier.ingest import http as http_module
from notifier.ingest.http import RECORDS, IngestRequest, build_ingest_app
from notifier.ingest.httpauth import HttpAuth
from notifier.metrics import Metrics
from notifier.spool import MemorySpool
from notifier.spool.base import Overflow, SpoolError, SpoolUnavailable
from tests.ingest.conftest import StorageDown, eventually
from tests.ingest.http_fixtures import Receiver, running_receiver

ALARM = {"type": "alarm", "code": "0x00010002", "severity": "major", "host": "gw1", "text": "L1"}
FORM = "evt=ALARM&text=Link+down&code=0x1&sev=2&hw=009033000001"
BASIC = "Basic " + base64.b64encode(b"pbx:secret").decode()
# Record ids and Digest nonces differ from one receiver to the other.
_VARYING = re.compile(rb'[0-9a-f]{26}|nonce="[^"]*"')


def post(path: str, body: bytes, *headers: str, content_type: str = "application/json") -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: notifier", f"Content-Type: {content_type}"]
    head += [f"Content-Length: {len(body)}", *headers]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


def get(target: str, *headers: str, version: str = "1.1") -> bytes:
    return "\r\n".join([f"GET {target} HTTP/{version}", "Host: notifier", *headers]).encode() + (
        b"\r\n\r\n"
    )


def chunked(path: str, chunks: Sequence[bytes]) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: notifier\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    return head.encode() + body


async def exchange(
    receiver: Receiver, data: bytes, answers: int, *, as_sent: bool = False
) -> list[bytes]:
    """`data` on a new connection; the first `answers` responses (100 Continue counts), each
    without its date header; fewer if the server closes the connection first."""
    port = receiver.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out: list[bytes] = []
    try:
        writer.write(data)
        for _ in range(answers):
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except asyncio.IncompleteReadError:
                break
            lines = [line for line in head.split(b"\r\n") if not line.startswith(b"date:")]
            length = 0
            for line in lines:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = b"" if data.startswith(b"HEAD ") else await reader.readexactly(length)
            answer = b"\r\n".join(lines) + body
            out.append(answer if as_sent else _VARYING.sub(b"<varies>", answer))
        closed = await _closed(reader)
        out.append(b"<closed>" if closed else b"<open>")
    finally:
        writer.close()
    return out


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.3) == b""
    except TimeoutError:
        return False


def stored(receiver: Receiver) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.to_dict().items() if k not in ("id", "received_at", "sender")}
        for r in receiver.spool.history(100)
    ]


def counters(receiver: Receiver) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in receiver.metrics.registry.collect():
        if family.name.startswith("notifier_ingest"):
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


async def both(
    data: bytes, answers: int = 1, **app: Any
) -> tuple[list[bytes], list[bytes], Receiver, Receiver]:
    results = []
    for direct in (True, False):
        async with running_receiver(server_options={"direct_path": direct}, **app) as r:
            results.append((await exchange(r, data, answers), r))
    (direct_answers, d), (asgi_answers, a) = results
    return direct_answers, asgi_answers, d, a


REQUESTS = {
    "form GET": (get(f"/log?{FORM}"), 1),
    "form GET, HTTP/1.0": (get(f"/log?{FORM}", version="1.0"), 1),
    "form GET, Connection: close": (get(f"/alarm?{FORM}", "Connection: close"), 1),
    "form GET, percent-encoded path": (get(f"/l%6Fg?{FORM}"), 1),
    "form GET, a body that is not read": (
        get(f"/log?{FORM}", "Content-Length: 5").rstrip(b"\r\n") + b"\r\n\r\nhello",
        1,
    ),
    "form POST": (post("/log", FORM.encode(), content_type="x"), 1),
    "form POST, empty body, fields in the query": (post(f"/log?{FORM}", b""), 1),
    "form POST, no fields": (post("/log", b"x=1"), 1),
    "JSON alarm": (post("/api/v1/records", json.dumps(ALARM).encode()), 1),
    "JSON batch": (post("/api/v1/records", json.dumps([ALARM, ALARM]).encode()), 1),
    "JSON chunked": (chunked("/api/v1/records", [b'{"text":', b' "x"}']), 1),
    "JSON invalid": (post("/api/v1/records", b'{"text": '), 1),
    "JSON empty array": (post("/api/v1/records", b"[]"), 1),
    "JSON bad field": (post("/api/v1/records", b'{"text": "x", "severity": []}'), 1),
    "declared too large": (post("/api/v1/records", b"x" * 2000), 1),
    "chunked too large": (chunked("/log", [b"x" * 600, b"y" * 600]), 1),
    "Expect: 100-continue": (
        post("/api/v1/records", b'{"text": "x"}', "Expect: 100-continue"),
        2,
    ),
    "Expect: 100-continue, too large": (
        post("/api/v1/records", b"x" * 2000, "Expect: 100-continue"),
        1,
    ),
    "pipelined: three requests in one write": (
        post("/api/v1/records", b'{"text": "a"}')
        + get(f"/log?{FORM}")
        + post("/api/v1/records", b'{"text": "b"}'),
        3,
    ),
    "pipelined: a refused one between two": (
        post("/log", FORM.encode()) + post("/api/v1/records", b"{") + get(f"/log?{FORM}"),
        3,
    ),
    "pipelined: a service request between two": (
        get(f"/log?{FORM}") + get("/api/v1/records?limit=x") + get(f"/log?{FORM}"),
        3,
    ),
    "form GET declaring a body it never sends": (
        get(f"/log?{FORM}", "Content-Length: 5"),
        1,
    ),
    "form GET, Expect: 100-continue": (get(f"/log?{FORM}", "Expect: 100-continue"), 1),
    "pipelined: a POST with Expect: 100-continue, its body sent": (
        get(f"/log?{FORM}") + post("/log", FORM.encode(), "Expect: 100-continue"),
        3,
    ),
    "pipelined: 150 refused between two": (
        get(f"/log?{FORM}") + post("/api/v1/records", b"{") * 150 + get(f"/alarm?{FORM}"),
        152,
    ),
    "records API, GET (not on the direct path)": (get("/api/v1/records?limit=1"), 1),
    "records API, PUT (not on the direct path)": (
        post("/api/v1/records", b"{}").replace(b"POST", b"PUT", 1),
        1,
    ),
    "HEAD on a form path (not on the direct path)": (
        get(f"/log?{FORM}").replace(b"GET", b"HEAD", 1),
        1,
    ),
}


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_the_direct_path_answers_and_stores_as_starlette(name: str) -> None:
    data, answers = REQUESTS[name]
    direct, asgi, d, a = await both(data, answers, max_body_bytes=1000)
    assert direct == asgi
    assert stored(d) == stored(a)
    assert counters(d) == counters(a)


AUTH_REQUESTS = {
    "no credentials": get(f"/log?{FORM}"),
    "wrong password": get(f"/log?{FORM}", "Authorization: Basic " + "eDp5"),
    "right password": get(f"/log?{FORM}", f"Authorization: {BASIC}"),
    "right password, JSON": post("/api/v1/records", b'{"text":"x"}', f"Authorization: {BASIC}"),
    "no credentials, a body over the limit": post("/api/v1/records", b"x" * 2000),
}
DIGEST_REQUESTS = {
    "no credentials": get(f"/log?{FORM}"),
    "a response with a non-ASCII byte": get(
        f"/log?{FORM}",
        'Authorization: Digest username="pbx", realm="notifier", nonce="x", '
        f'uri="/log?{FORM}", qop=auth, nc=00000001, cnonce="c", response="\xe9", '
        "algorithm=MD5",
    ),
    "a nonce with a non-ASCII byte": get(
        f"/log?{FORM}",
        'Authorization: Digest username="pbx", realm="notifier", nonce="' + "0" * 59 + '\xe9", '
        f'uri="/log?{FORM}", qop=auth, nc=00000001, cnonce="c", response="00", '
        "algorithm=MD5",
    ),
}


@pytest.mark.parametrize("name", list(AUTH_REQUESTS))
async def test_the_direct_path_authenticates_as_starlette(name: str) -> None:
    auth = HttpAuth("basic", {"pbx": "secret"})
    direct, asgi, d, a = await both(AUTH_REQUESTS[name], auth=auth, max_body_bytes=1000)
    assert direct == asgi
    assert stored(d) == stored(a)
    assert counters(d) == counters(a)


@pytest.mark.parametrize("name", list(DIGEST_REQUESTS))
async def test_the_direct_path_refuses_bad_digest_as_starlette(name: str) -> None:
    auth = HttpAuth("digest", {"pbx": "secret"})
    direct, asgi, d, a = await both(DIGEST_REQUESTS[name], auth=auth)
    assert direct == asgi
    assert direct[0].startswith(b"HTTP/1.1 401")
    assert counters(d) == counters(a)


async def test_digest_signs_the_target_as_sent() -> None:
    """The `uri` a Digest response signs is the request target as sent (percent-encoding and
    query included): the direct path checks it against the same string as Starlette did."""
    for direct in (True, False):
        auth = HttpAuth("digest", {"pbx": "secret"})
        async with running_receiver(server_options={"direct_path": direct}, auth=auth) as r:
            target = f"/l%6Fg?{FORM}"
            challenge = await exchange(r, get(target), 1, as_sent=True)
            assert challenge[0].startswith(b"HTTP/1.1 401")
            nonce = re.search(rb'nonce="([^"]*)"', challenge[0]).group(1).decode()  # type: ignore[union-attr]
            header = _digest_header(auth, nonce, target)
            answer = await exchange(r, get(target, f"Authorization: {header}"), 1)
            assert answer[0].startswith(b"HTTP/1.1 200"), (direct, answer)
            wrong = _digest_header(auth, nonce, "/log")  # signed for another target
            refused = await exchange(r, get(target, f"Authorization: {wrong}"), 1)
            assert refused[0].startswith(b"HTTP/1.1 401"), (direct, refused)


def _digest_header(auth: HttpAuth, nonce: str, uri: str) -> str:
    """The Authorization a device sends for `uri`, answering the challenge's `nonce`."""
    realm = auth.realm

    def h(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()  # Digest MD5, as a device computes it

    ha1 = h(f"pbx:{realm}:secret")
    ha2 = h(f"GET:{uri}")
    cnonce, nc = "0a4f113b", "00000001"
    response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="pbx", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'qop=auth, nc={nc}, cnonce="{cnonce}", response="{response}", algorithm=MD5'
    )


async def test_hot_requests_never_reach_the_asgi_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct path is really taken: with the Starlette endpoints broken, the hot
    requests are still answered and stored (and only they). Without it (`direct_path=False`,
    the other side of every parity test) they reach the broken endpoints."""

    async def broken(self: Any, request: Any) -> Any:
        raise AssertionError("the ASGI app was called")

    monkeypatch.setattr(http_module._IngestEndpoints, "innovaphone", broken)
    monkeypatch.setattr(http_module._IngestEndpoints, "_post_records", broken)
    async with running_receiver() as r:
        answers = await exchange(
            r, get(f"/log?{FORM}") + post("/api/v1/records", json.dumps(ALARM).encode()), 2
        )
        assert [a.split(b"\r\n")[0] for a in answers[:2]] == [b"HTTP/1.1 200 OK"] * 2
        assert len(r.spool.history(10)) == 2
    async with running_receiver(server_options={"direct_path": False}) as r:
        answers = await exchange(r, get(f"/log?{FORM}"), 1)
        assert answers[0].startswith(b"HTTP/1.1 500")
        assert r.spool.history(10) == []


async def test_one_senders_refusal_is_not_anothers() -> None:
    """Requests whose puts are gathered into one: when the spool refuses that put, each
    request's records are put on their own, so those that fit are stored and answered 200
    and only the others are refused (503), as if each had come alone."""
    spool = MemorySpool(consumers=["test"], max_entries=3, overflow=Overflow.REJECT)
    async with running_receiver(spool=spool) as r:
        port = r.server.port
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        for i, (_, writer) in enumerate(streams):
            writer.write(post("/api/v1/records", json.dumps({**ALARM, "code": str(i)}).encode()))
        statuses = []
        for reader, writer in streams:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            statuses.append(int(head.split()[1]))
            writer.close()
        assert sorted(statuses) == [200, 200, 200, 503, 503]
        assert len(r.spool.history(10)) == 3
        assert r.counter("accepted", receiver="json", kind="alarm") == 3
        assert r.counter("rejected", receiver="json", reason="spool_full") == 2


async def test_requests_completed_together_share_one_put() -> None:
    """Many senders at once: their records reach the spool in fewer puts than requests."""
    spool = MemorySpool(consumers=["test"])
    puts: list[int] = []
    real_put = spool.put

    async def counting_put(records: Any) -> None:
        puts.append(len(records))
        await real_put(records)

    spool.put = counting_put  # type: ignore[method-assign]
    async with running_receiver(spool=spool) as r:
        port = r.server.port
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for _ in range(5):
            for _, writer in streams:
                writer.write(post("/api/v1/records", json.dumps(ALARM).encode()))
            for reader, _ in streams:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200")
                await reader.readexactly(int(re.search(rb"content-length: (\d+)", head)[1]))  # type: ignore[index]
        for _, writer in streams:
            writer.close()
    assert sum(puts) == 100
    assert len(puts) < 100


async def test_a_request_that_fails_inside_is_answered_500_and_others_are_not_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug while one request is handled: that one is answered 500 (its connection
    closed) with the cause logged; requests on other connections are answered as usual."""
    real = http_module._IngestEndpoints._form_record

    def failing(self: Any, req: Any, body: bytes) -> Any:
        if b"boom" in req.query:
            raise RuntimeError("boom")
        return real(self, req, body)

    monkeypatch.setattr(http_module._IngestEndpoints, "_form_record", failing)
    async with running_receiver() as r:
        with capture_logs() as logs:
            failed, fine = await asyncio.gather(
                exchange(r, get(f"/log?{FORM}&boom=1") + get(f"/log?{FORM}"), 2),
                exchange(r, get(f"/log?{FORM}"), 1),
            )
        assert failed[0].startswith(b"HTTP/1.1 500")
        assert failed[-1] == b"<closed>"
        assert fine[0].startswith(b"HTTP/1.1 200")
        assert any(e["event"] == "direct_ingest_failed" for e in logs)
        assert len(r.spool.history(10)) == 1


async def test_a_sender_gone_mid_body_is_counted_at_once() -> None:
    async with running_receiver() as r:
        _, writer = await asyncio.open_connection("127.0.0.1", r.server.port)
        writer.write(post("/api/v1/records", b'{"text": "x"}')[:-4])
        await asyncio.sleep(0.2)
        writer.close()
        await eventually(
            lambda: r.counter("rejected", receiver="json", reason="disconnected") == 1,
            "the sender gone mid-body counted (the body timeout is 30 s)",
        )
        assert r.counter("rejected", receiver="json", reason="body_timeout") == 0


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (SpoolError("connection to the database lost"), "spool_error"),
        # What the PostgreSQL and SQLite spools raise when their storage fails: a SpoolFull
        # (503, Retry-After) told apart from a full queue, and not a limit a smaller put
        # would pass.
        (
            SpoolUnavailable("connection to the database lost", retry_after_s=30),
            "spool_unavailable",
        ),
    ],
)
async def test_a_storage_failure_answers_every_request_of_the_put_at_once(
    error: SpoolError, reason: str
) -> None:
    """Requests gathered into one put that fails for the storage (not a limit) are all told
    503 to retry, from that one failure: putting each again would make the last of them wait
    for every failure in turn (a sender timed out during a PostgreSQL outage that way)."""
    spool = StorageDown(error=error, delay_s=0.05)
    app = build_ingest_app(spool=spool, metrics=Metrics())
    direct = app.state.direct_ingest
    answers: list[Any] = []
    for i in range(5):
        req = IngestRequest("POST", "/api/v1/records", b"", None, "", f"127.0.0.1:{i}", 0.0)
        direct.body(RECORDS, req, json.dumps(ALARM).encode(), answers.append)
    await eventually(lambda: len(answers) == 5, "every request answered")

    assert spool.puts == [5]
    assert {(a.status_code, json.loads(a.body)["error"]) for a in answers} == {(503, reason)}
