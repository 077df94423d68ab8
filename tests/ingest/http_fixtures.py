"""A real HTTP receiver on loopback for the tests: HttpServer + the ingest app + a memory spool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from notifier.ingest.http import build_ingest_app
from notifier.ingest.httpserver import HttpServer
from notifier.metrics import Metrics
from notifier.spool import MemorySpool


@dataclass
class Receiver:
    spool: MemorySpool
    metrics: Metrics
    server: HttpServer
    url: str

    def counter(self, name: str, **labels: str) -> float:
        """The value of a notifier counter (0 when never incremented)."""
        value = self.metrics.registry.get_sample_value(f"notifier_ingest_{name}_total", labels)
        return value or 0.0


@asynccontextmanager
async def running_receiver(
    *, spool: MemorySpool | None = None, server_options: dict[str, Any] | None = None, **app: Any
) -> AsyncIterator[Receiver]:
    """The ingest app served on 127.0.0.1 on a free port; stopped on exit."""
    spool = spool or MemorySpool(consumers=["test"])
    metrics = Metrics()
    server = HttpServer(
        build_ingest_app(spool=spool, metrics=metrics, **app),
        "127.0.0.1",
        0,
        metrics=metrics,
        **(server_options or {}),
    )
    await server.start()
    try:
        yield Receiver(spool, metrics, server, f"{server.scheme}://127.0.0.1:{server.port}")
    finally:
        await server.stop()


async def run_curl(*args: str) -> tuple[int, str, str]:
    """curl with `args` (-s, status on the last line); (status, body, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-s",
        "-S",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    body, _, status = out.decode("utf-8", "replace").rpartition("\n")
    return int(status or 0), body, err.decode("utf-8", "replace")


def only(predicate: Callable[[Any], bool], items: list[Any]) -> Any:
    matching = [item for item in items if predicate(item)]
    assert len(matching) == 1, matching
    return matching[0]
