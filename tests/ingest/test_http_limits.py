"""Limits of the HTTP receiver: body size, slow and oversized requests, a full spool, TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from notifier.ingest.http import build_ingest_app
from notifier.ingest.httpserver import HttpServer
from notifier.metrics import Metrics
from notifier.spool import MemorySpool
from tests import certs
from tests.ingest.http_fixtures import run_curl, running_receiver

LIMIT = 1000


async def test_body_over_the_limit_is_refused_with_413() -> None:
    async with running_receiver(max_body_bytes=LIMIT) as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/log", content=b"msg=" + b"x" * LIMIT)
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert str(LIMIT) in response.json()["detail"]
        assert rx.spool.history(10) == []
        assert rx.counter("rejected", receiver="http", reason="too_large") == 1


async def test_chunked_body_over_the_limit_is_refused_while_it_streams() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"msg="
        for _ in range(5):
            yield b"y" * 400

    async with running_receiver(max_body_bytes=LIMIT) as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/api/v1/records", content=chunks())
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert rx.spool.history(10) == []
        assert rx.counter("rejected", receiver="json", reason="too_large") == 1


async def test_body_at_the_limit_is_taken() -> None:
    body = b"msg=" + b"z" * (LIMIT - 4)
    async with running_receiver(max_body_bytes=LIMIT) as rx:
        status, _, _ = await run_curl("--data-binary", body.decode(), f"{rx.url}/log")
        assert status == 200
        assert rx.spool.history(1)[0].text == "z" * (LIMIT - 4)


async def test_full_spool_answers_503_with_retry_after_and_keeps_what_it_has() -> None:
    spool = MemorySpool(consumers=["test"], max_entries=1)
    async with running_receiver(spool=spool) as rx, httpx.AsyncClient() as client:
        first = await client.get(f"{rx.url}/log", params={"from": "gw", "msg": "first"})
        assert first.status_code == 200
        second = await client.get(f"{rx.url}/log", params={"from": "gw", "msg": "second"})
        assert second.status_code == 503
        assert second.headers["retry-after"] == "5"
        assert second.json()["error"] == "spool_full"
        json_api = await client.post(f"{rx.url}/api/v1/records", json={"text": "third"})
        assert json_api.status_code == 503
        assert [r.text for r in rx.spool.history(10)] == ["first"]
        assert rx.counter("rejected", receiver="http", reason="spool_full") == 1
        assert rx.counter("accepted", receiver="http", kind="log") == 1


async def test_a_request_head_that_never_ends_is_closed() -> None:
    async with running_receiver(server_options={"header_timeout_s": 0.2}) as rx:
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.server.port)
        writer.write(b"GET /log?msg=x HTTP/1.1\r\nHost: localhost\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        writer.close()
        assert rx.spool.history(10) == []


async def test_a_body_that_never_ends_is_refused_with_408() -> None:
    async with running_receiver(body_timeout_s=0.2) as rx:
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.server.port)
        writer.write(b"POST /log HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nmsg=")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 408")
        assert rx.counter("rejected", receiver="http", reason="body_timeout") == 1


async def test_a_request_head_growing_past_the_limit_is_refused() -> None:
    async with running_receiver(server_options={"max_header_bytes": 4096}) as rx:
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.server.port)
        writer.write(b"GET /log?msg=" + b"x" * 8000)  # the head is not complete yet
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 400")
        assert rx.spool.history(10) == []


async def test_a_taken_port_is_named_in_the_error() -> None:
    async with running_receiver() as rx:
        second = HttpServer(
            build_ingest_app(spool=rx.spool, metrics=Metrics()), "127.0.0.1", rx.server.port
        )
        with pytest.raises(OSError, match=f"127.0.0.1:{rx.server.port}"):
            await second.start()


async def test_https_with_the_configured_certificate(pki: certs.TestPKI) -> None:
    options = {"ssl_certfile": str(pki.server_cert), "ssl_keyfile": str(pki.server_key)}
    async with (
        running_receiver(server_options=options) as rx,
        httpx.AsyncClient(verify=pki.client_context()) as client,
    ):
        assert rx.url.startswith("https://")
        response = await client.get(f"{rx.url}/log", params={"from": "gw", "msg": "over tls"})
        assert response.status_code == 200
        assert rx.spool.history(1)[0].text == "over tls"


async def test_a_whole_oversized_head_in_one_write_is_refused() -> None:
    async with running_receiver(server_options={"max_header_bytes": 4096}) as rx:
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.server.port)
        head = (
            b"GET /log?msg=x HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"y" * 10_000 + b"\r\n\r\n"
        )
        writer.write(head)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 400")
        assert rx.spool.history(10) == []
