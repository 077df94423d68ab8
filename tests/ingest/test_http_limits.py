"""Limits of the HTTP receiver: body size, slow and oversized requests, a full spool, TLS, and
connections (per peer, and idle keep-alive connections closed to make room)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from structlog.testing import capture_logs

from notifier.ingest.http import build_ingest_app
from notifier.ingest.httpserver import HttpServer
from notifier.metrics import Metrics
from notifier.spool import MemorySpool
from tests import certs
from tests.ingest.conftest import eventually
from tests.ingest.http_fixtures import run_curl, running_receiver

LIMIT = 1000
# Small enough for a 2-core box, big enough to be "hundreds of connections".
CONNECTION_LIMITS = {"max_connections": 100, "max_connections_per_peer": 64}
ATTACKER = "127.0.0.2"  # Linux routes all of 127/8 to lo

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def request(stream: Stream, target: str = "/healthz") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on an open connection: (status, headers, body); kept alive."""
    reader, writer = stream
    writer.write(f"GET {target} HTTP/1.1\r\nHost: notifier\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in head[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(head[0].split()[1]), headers, body


async def keep_alive_connections(port: int, n: int, source: str) -> list[tuple[int, Stream]]:
    """`n` connections from `source`, one after another, each with one request answered:
    (status, connection). Those answered 200 stay open, idle, as a keep-alive client keeps
    them."""
    out = []
    for _ in range(n):
        stream = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        status, _, _ = await request(stream)
        out.append((status, stream))
    return out


def close_all(streams: list[tuple[int, Stream]]) -> None:
    for _, (_, writer) in streams:
        writer.close()


async def send_alarm(client: httpx.AsyncClient, url: str, n: int) -> int:
    response = await client.post(
        f"{url}/alarm",
        content=f"type=alarm&code=0x0001000{n}&severity=Major&host=gw&msg=relay+{n}".encode(),
    )
    return response.status_code


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


async def test_a_device_keeps_getting_200_while_another_address_holds_hundreds_of_connections() -> (
    None
):
    async with running_receiver(server_options=CONNECTION_LIMITS) as rx:
        with capture_logs() as logs:
            held = await keep_alive_connections(rx.server.port, 150, ATTACKER)
        try:
            async with httpx.AsyncClient() as device:
                assert [await send_alarm(device, rx.url, n) for n in range(5)] == [200] * 5
                metrics = (await device.get(f"{rx.url}/metrics")).text
            assert len(rx.spool.history(10)) == 5
            assert [status for status, _ in held] == [200] * 64 + [503] * 86
            assert (
                'notifier_ingest_rejected_total{reason="too_many_connections_per_peer",'
                'receiver="http"} 86.0'
            ) in metrics
            # 86 refusals, a few log lines: the rest are counted in the next line logged.
            refusals = [e for e in logs if e.get("reason") == "too_many_connections_per_peer"]
            assert 1 <= len(refusals) <= 5
            # The 64 the attacker keeps are still served: nothing of theirs was closed.
            assert [(await request(stream))[0] for _, stream in held[:64]] == [200] * 64
        finally:
            close_all(held)


async def test_a_peer_over_its_limit_gets_503_with_retry_after_and_a_reason() -> None:
    async with running_receiver(server_options={"max_connections_per_peer": 2}) as rx:
        held = await keep_alive_connections(rx.server.port, 2, ATTACKER)
        third = await asyncio.open_connection("127.0.0.1", rx.server.port, local_addr=(ATTACKER, 0))
        try:
            status, headers, body = await request(third, "/alarm?type=alarm&code=0x1")
            assert status == 503
            assert headers["retry-after"] == "5"
            assert headers["connection"] == "close"
            assert json.loads(body)["error"] == "too_many_connections_per_peer"
            assert "127.0.0.2 holds 2 connections" in json.loads(body)["detail"]
            assert await third[0].read() == b""  # and closed
            assert rx.spool.history(10) == []
            assert (
                rx.counter("rejected", receiver="http", reason="too_many_connections_per_peer") == 1
            )
        finally:
            close_all(held)
            third[1].close()


async def test_at_the_connection_limit_the_connection_idle_longest_is_closed_for_a_new_one() -> (
    None
):
    async with running_receiver(server_options=CONNECTION_LIMITS) as rx:
        first = await keep_alive_connections(rx.server.port, 60, ATTACKER)
        second = await keep_alive_connections(rx.server.port, 60, "127.0.0.3")
        try:
            assert {status for status, _ in first + second} == {200}
            async with httpx.AsyncClient() as device:
                assert await send_alarm(device, rx.url, 1) == 200
            # 120 connections and the device's: the 21 idle longest made room, oldest first.
            for _, (reader, _) in first[:21]:
                assert await reader.read() == b""
            assert [(await request(s))[0] for _, s in first[21:] + second] == [200] * 99
            assert rx.counter("rejected", receiver="http", reason="idle_closed_for_room") == 21
        finally:
            close_all(first + second)


async def test_when_every_connection_is_busy_a_new_one_gets_503() -> None:
    async with running_receiver(server_options={"max_connections": 2}) as rx:
        busy = []
        for _ in range(2):  # request heads begun, not finished: busy, not idle
            _, writer = await asyncio.open_connection("127.0.0.1", rx.server.port)
            writer.write(b"GET /log?msg=slow HTTP/1.1\r\n")
            await writer.drain()
            busy.append(writer)
        gauge = rx.metrics.registry.get_sample_value
        await eventually(
            lambda: gauge("notifier_ingest_connections", {"receiver": "http"}) == 2, "2 busy"
        )
        try:
            stream = await asyncio.open_connection("127.0.0.1", rx.server.port)
            status, headers, body = await request(stream, "/log?msg=x")
            assert (status, headers["retry-after"]) == (503, "5")
            assert json.loads(body)["error"] == "too_many_connections"
            assert rx.counter("rejected", receiver="http", reason="too_many_connections") == 1
            stream[1].close()
        finally:
            for writer in busy:
                writer.close()
