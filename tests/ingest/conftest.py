"""Fixtures for the syslog / raw TCP receiver tests: metrics, a memory spool, started receivers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import pytest

from notifier.metrics import Metrics
from notifier.records import Record
from notifier.spool import MemorySpool
from notifier.spool.base import SpoolError, SpoolUnavailable


class _Closable(Protocol):
    async def close(self) -> None: ...


class StorageDown(MemorySpool):
    """A spool whose storage has failed while `down` is set (PostgreSQL stopped, a failing
    disk): each put raises `error`, by default what the PostgreSQL and SQLite spools raise
    then, after `delay_s` (a failing database takes its time to say so). `puts`: the size of
    each refused put."""

    def __init__(
        self,
        consumers: Sequence[str] = ("test",),
        *,
        error: SpoolError | None = None,
        delay_s: float = 0.0,
    ) -> None:
        super().__init__(consumers=list(consumers))
        self.down = True
        self.error = error or SpoolUnavailable(
            "PostgreSQL at 127.0.0.1:5432 is unreachable: connection refused", retry_after_s=30
        )
        self.delay_s = delay_s
        self.puts: list[int] = []

    async def put(self, records: Sequence[Record]) -> None:
        if not self.down:
            return await super().put(records)
        self.puts.append(len(records))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        raise self.error


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def spool() -> MemorySpool:
    return MemorySpool(consumers=["test"])


@pytest.fixture
async def receivers() -> AsyncIterator[list[_Closable]]:
    """Append started receivers; they are closed after the test."""
    started: list[_Closable] = []
    yield started
    for receiver in started:
        await receiver.close()


def count(metrics: Metrics, name: str, **labels: str) -> float:
    """A notifier counter's value (0 when never incremented), e.g. count(m, "ingest_rejected")."""
    return metrics.registry.get_sample_value(f"notifier_{name}_total", labels) or 0.0


async def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    """Wait until `check()` is truthy; fail naming `what` (a liveness guard, not a speed test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


async def arrived(spool: MemorySpool, n: int = 1) -> list[Record]:
    """The first `n` records the spool holds, oldest first, once they are there."""
    await eventually(lambda: len(spool.history(n)) >= n, f"{n} record(s) in the spool")
    return list(reversed(spool.history(1000)))[:n]


async def run(*argv: str) -> None:
    """Run a client program (logger) to completion; fail with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, f"{argv[0]} failed: {err.decode(errors='replace')}"
