"""Records and spools for the spool tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from notifier.records import Kind, Record
from notifier.spool import Lease
from notifier.spool.policy import SpoolPolicy

T = TypeVar("T")


def rec(kind: Kind = Kind.ALARM, text: str = "", receiver: str = "http", **kw: object) -> Record:
    return Record(
        kind=kind,
        received_at=float(kw.pop("received_at", time.time())),  # type: ignore[arg-type]
        sender="192.0.2.7:5060",
        receiver=receiver,
        raw=f"raw {kind.value} {text}".encode() + b"\xff\x00",  # not UTF-8: stored losslessly
        text=text,
        device="gw01",
        code="NO_LINK",
        **kw,  # type: ignore[arg-type]
    )


def texts(leases: Sequence[Lease]) -> list[str]:
    return [lease.record.text for lease in leases]


@contextlib.asynccontextmanager
async def closing_all() -> AsyncIterator[Callable[[T], Awaitable[T]]]:
    """`start(spool)` starts a spool and returns it; every spool started is closed at the end."""
    started: list[Any] = []

    async def start(spool: T) -> T:
        await spool.start()  # type: ignore[attr-defined]
        started.append(spool)
        return spool

    yield start
    for spool in started:
        await spool.close()


def nobody_wants_text(text: str) -> SpoolPolicy:
    """A policy whose consumers want every record but those with `text`."""
    return SpoolPolicy(wanted=lambda record: record.text != text)


async def wakes_only_for_what_it_is_owed(putter: Any, waiter: Any, quiet_s: float) -> None:
    """`waiter`'s consumer "mail", asleep, stays asleep for `quiet_s` after `putter` stores a
    record it is not owed, wakes when `putter` stores one it is owed, and leases just that.
    Both spools run `nobody_wants_text("unwanted")`."""
    assert await waiter.lease("mail", 10, 30) == []  # nothing yet: the consumer may sleep
    waiting = asyncio.create_task(waiter.wait(60, "mail"))
    await asyncio.sleep(0.1)

    await putter.put([rec(text="unwanted")])
    await asyncio.sleep(quiet_s)
    assert not waiting.done()

    await putter.put([rec(text="wanted")])
    await asyncio.wait_for(waiting, 10)
    assert texts(await waiter.lease("mail", 10, 30)) == ["wanted"]
