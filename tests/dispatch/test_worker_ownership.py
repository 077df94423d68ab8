"""A route worker run only while its instance owns the route (several instances)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from notifier.config import MatchSettings, RouteSettings
from notifier.dispatch.rules import compile_match
from notifier.dispatch.worker import RouteTarget, RouteWorker
from notifier.mail.compose import Envelope
from notifier.mail.outbox import Outbox
from notifier.metrics import Metrics
from notifier.records import Kind
from notifier.spool import MemorySpool
from notifier.spool.cluster import Member, while_owned
from notifier.spool.state import Silence, silence_matchers
from tests.dispatch.test_worker import T0, FakeClock, alarm, opened, until


class Switch(Member):
    """Ownership of route:ops, switched by the test."""

    def __init__(self) -> None:
        super().__init__("a", ["route:ops"])

    def set(self, owned: bool) -> None:
        (self._ownership.gain if owned else self._ownership.lose)("route:ops")


def worker(tmp_path: Path, name: str, store: object) -> tuple[RouteWorker, MemorySpool, Path]:
    outbox = tmp_path / name
    spool = MemorySpool(["route:ops"])
    target = RouteTarget(
        "ops",
        Outbox(outbox),
        Envelope("n@example.test", "n", ("ops@example.test",)),
        asyncio.Lock(),
    )
    route = RouteSettings(name="ops", group_wait_s=0, group_interval_s=0)
    w = RouteWorker(
        route,
        compile_match(MatchSettings()),
        spool,
        store,  # type: ignore[arg-type]
        target,
        Metrics(),
        clock=FakeClock(T0),
    )
    return w, spool, outbox


def mails(outbox: Path) -> int:
    return len(list(outbox.glob("*.eml")))


async def test_a_worker_that_gains_its_route_again_decides_from_the_state_stored_meanwhile(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)  # shared by both "instances"
    a, spool_a, outbox_a = worker(tmp_path, "a", store)
    b, spool_b, outbox_b = worker(tmp_path, "b", store)
    switch, stopping = Switch(), asyncio.Event()
    task = asyncio.create_task(while_owned(switch, "route:ops", a.run, stopping))
    try:
        switch.set(True)
        await spool_a.put([alarm(Kind.ALARM, T0)])
        # Mailed and recorded (a loss between the two would leave the record leased, for the
        # next owner to release: a spool of the test's own has none).
        await until(lambda: mails(outbox_a) == 1 and spool_a.entries == 0)
        switch.set(False)  # a loses the route; b owns it and takes the alarm's clear
        async with asyncio.timeout(30):
            b_task = asyncio.create_task(b.run())
            await spool_b.put([alarm(Kind.CLEAR, T0 + 1)])
            await until(lambda: mails(outbox_b) == 1)
            b.stop()
            await b_task

        switch.set(True)  # a owns it again; the device sets the alarm once more
        await spool_a.put([alarm(Kind.ALARM, T0 + 2)])

        # A set of a cleared alarm is news (a that remembered it active would stay silent).
        await until(lambda: mails(outbox_a) == 2, timeout=30)
    finally:
        a.stop()
        stopping.set()
        await task
        await store.close()


async def test_a_worker_that_gains_its_route_again_reads_the_silences_at_once(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    a, spool, outbox = worker(tmp_path, "a", store)
    switch, stopping = Switch(), asyncio.Event()
    task = asyncio.create_task(while_owned(switch, "route:ops", a.run, stopping))
    try:
        switch.set(True)
        await spool.put([alarm(Kind.ALARM, T0, code="0x00010001")])
        await until(lambda: mails(outbox) == 1 and spool.entries == 0)  # mailed and recorded
        switch.set(False)
        # Meanwhile, on the instance that owns the route now, an operator silences the device.
        await store.add_silence(
            Silence(
                "s1",
                silence_matchers({"devices": ["gw01"]}),
                T0 - 60,
                T0 + 3600,
                "firmware update",
                "alice",
                T0 - 60,
            )
        )
        switch.set(True)
        await spool.put([alarm(Kind.ALARM, T0, code="0x00010002")])

        await until(lambda: spool.entries == 0, timeout=30)
        assert mails(outbox) == 1  # silenced: the worker did not decide with what it read before
    finally:
        a.stop()
        stopping.set()
        await task
        await store.close()
