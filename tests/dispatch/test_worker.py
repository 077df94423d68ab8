"""The route worker through its public parts: a spool, the alarm store and a transport that
misbehaves the way a bug would (the outbox, but raising once)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from structlog.testing import capture_logs

from notifier.config import MatchSettings, RouteSettings
from notifier.dispatch.rules import compile_match
from notifier.dispatch.worker import FORGET_CLEARED_AFTER_S, RouteTarget, RouteWorker, keep_stepping
from notifier.mail.compose import Envelope
from notifier.mail.outbox import Outbox
from notifier.mail.transport import DeliveryError, Outgoing, SendResult
from notifier.metrics import Metrics
from notifier.records import Kind, Record, Severity
from notifier.spool import MemorySpool
from notifier.spool.base import SpoolError
from notifier.spool.sqlite_state import SqliteStateStore
from notifier.spool.state import AlarmState, Key


class BrokenOnce(Outbox):
    """The outbox, except that the first send raises as an unexpected bug would."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.raised = False

    async def send(
        self, messages: Sequence[EmailMessage | Outgoing]
    ) -> list[SendResult | DeliveryError]:
        if not self.raised:
            self.raised = True
            raise RuntimeError("unexpected bug in a transport")
        return await super().send(messages)


def alarm(kind: Kind = Kind.ALARM, at: float = 1000.0, code: str = "0x00010002") -> Record:
    return Record(
        kind=kind,
        received_at=at,
        sender="192.0.2.1",
        receiver="json",
        raw=b"",
        device="gw01",
        code=code,
        source="RELAY/RECH",
        severity=Severity.MAJOR,
        text="Registration down",
    )


class FakeClock:
    """Unix time the test sets: days pass at once."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


T0 = 1_800_000_000.0  # the fake clock's start (unix time)


@dataclass
class Rig:
    """A route worker with a memory spool, the alarm store, metrics and a fake clock."""

    spool: MemorySpool
    store: SqliteStateStore
    metrics: Metrics
    clock: FakeClock
    worker: RouteWorker


async def rig(
    tmp_path: Path,
    max_alarm_states: int = 10_000,
    spool_entries: int = 10_000,
    spool: MemorySpool | None = None,
) -> Rig:
    route = RouteSettings(
        name="ops",
        group_wait_s=0,
        group_interval_s=0,
        max_mails_per_minute=100_000,
        max_alarm_states=max_alarm_states,
    )
    target = RouteTarget(
        "ops",
        Outbox(tmp_path / "outbox"),
        Envelope("n@example.test", "n", ("ops@example.test",)),
        asyncio.Lock(),
    )
    spool = spool or MemorySpool(["route:ops"], max_entries=spool_entries)
    store = await opened(tmp_path)
    metrics = Metrics()
    clock = FakeClock(T0)
    worker = RouteWorker(
        route, compile_match(MatchSettings()), spool, store, target, metrics, clock=clock
    )
    return Rig(spool, store, metrics, clock, worker)


async def opened(tmp_path: Path) -> SqliteStateStore:
    """The alarm state in tmp_path, started."""
    store = SqliteStateStore(tmp_path / "alarms.sqlite")
    await store.start()
    return store


async def stored_alarms(tmp_path: Path) -> dict[Key, AlarmState]:
    """What a restarted service would load for the route."""
    store = await opened(tmp_path)
    try:
        return await store.load_alarms("route:ops")
    finally:
        await store.close()


@asynccontextmanager
async def running(worker: RouteWorker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        await task


async def until(done: Callable[[], bool], timeout: float = 120) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.05)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def delivered(spool: MemorySpool) -> bool:
    return spool.entries == 0


async def test_a_send_that_raises_retries_the_alarm_instead_of_suppressing_it(
    tmp_path: Path,
) -> None:
    route = RouteSettings(name="ops", group_wait_s=0, group_interval_s=0)
    spool = MemorySpool(["route:ops"])
    store = await opened(tmp_path)
    transport = BrokenOnce(tmp_path / "outbox")
    target = RouteTarget(
        "ops", transport, Envelope("n@example.test", "n", ("ops@example.test",)), asyncio.Lock()
    )
    worker = RouteWorker(
        route,
        compile_match(MatchSettings()),
        spool,
        store,
        target,
        Metrics(),
        retry_base_s=0.05,
        retry_max_s=0.1,
    )
    await spool.put([alarm()])
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(20):
            while not list((tmp_path / "outbox").glob("*.eml")):
                await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await task
        await store.close()
    (mail,) = (tmp_path / "outbox").glob("*.eml")
    assert transport.raised
    assert "[ALARM Major] gw01" in mail.read_text()
    assert spool.stats().depth.get(("route:ops", "ready"), 0) == 0


FORGOTTEN = "notifier_dispatch_alarm_states_forgotten_total"


async def test_alarm_states_stay_bounded_over_ever_new_keys(tmp_path: Path) -> None:
    """20,000 alarms set and cleared, each with a new code: the route remembers at most
    max_alarm_states (10,000 by default), in memory and in alarms.sqlite, and counts the rest."""
    keys = 20_000
    r = await rig(tmp_path, spool_entries=2 * keys)
    bound = r.worker.route.max_alarm_states
    for i in range(keys):
        code = f"0x{i:08x}"
        await r.spool.put([alarm(Kind.ALARM, T0 + i, code), alarm(Kind.CLEAR, T0 + i + 0.5, code)])
    r.clock.now = T0 + keys
    try:
        async with running(r.worker):
            await until(lambda: delivered(r.spool))
    finally:
        await r.store.close()
    assert bound == 10_000
    assert sample(r.metrics, "notifier_dispatch_alarm_states", route="ops") == bound
    assert sample(r.metrics, FORGOTTEN, route="ops", reason="bound_cleared") == keys - bound
    assert sample(r.metrics, FORGOTTEN, route="ops", reason="bound_active") == 0
    kept = await stored_alarms(tmp_path)
    assert len(kept) == bound
    # The newest are the ones kept: a late clear of those is still recognised.
    assert min(s.last_seen for s in kept.values()) == T0 + (keys - bound) + 0.5


async def test_cleared_alarms_are_forgotten_after_a_week_without_any_new_record(
    tmp_path: Path,
) -> None:
    r = await rig(tmp_path)
    for i in range(300):
        code = f"0x{i:08x}"
        await r.spool.put([alarm(Kind.ALARM, T0, code), alarm(Kind.CLEAR, T0 + 1, code)])
    await r.spool.put([alarm(Kind.ALARM, T0, "still-active")])
    try:
        async with running(r.worker):
            await until(lambda: delivered(r.spool))
            assert sample(r.metrics, "notifier_dispatch_alarm_states", route="ops") == 301
            # A week and a bit passes with no record at all: the periodic sweep forgets.
            r.clock.now = T0 + FORGET_CLEARED_AFTER_S + 3600
            await until(lambda: sample(r.metrics, FORGOTTEN, route="ops", reason="expired") == 300)
    finally:
        await r.store.close()
    assert sample(r.metrics, "notifier_dispatch_alarm_states", route="ops") == 1
    assert r.worker.status()["active_alarms"] == 1
    assert list(await stored_alarms(tmp_path)) == [("gw01", "still-active", "RELAY/RECH")]


async def test_an_active_alarm_forgotten_over_the_bound_has_its_clear_mailed_as_unknown(
    tmp_path: Path,
) -> None:
    r = await rig(tmp_path, max_alarm_states=2)
    for i, code in enumerate(("0x00000001", "0x00000002", "0x00000003")):
        await r.spool.put([alarm(Kind.ALARM, T0 + i, code)])
    try:
        async with running(r.worker):
            await until(
                lambda: sample(r.metrics, FORGOTTEN, route="ops", reason="bound_active") == 1
            )
            await r.spool.put([alarm(Kind.CLEAR, T0 + 10, "0x00000001")])
            await until(lambda: delivered(r.spool))
    finally:
        await r.store.close()
    assert sample(r.metrics, "notifier_dispatch_decisions_total", reason="clear_unknown") == 1
    mails = sorted((tmp_path / "outbox").glob("*.eml"), key=lambda p: p.stat().st_mtime)
    assert "alarm cleared (notifier had not seen it set)" in mails[-1].read_text()


async def test_a_spool_that_fails_every_step_is_one_warning_without_a_traceback() -> None:
    stopping = asyncio.Event()
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            stopping.set()
        raise SpoolError("spool lease failed on PostgreSQL at db:5432/notifier: check the server")

    with capture_logs() as logs:
        await keep_stepping(step, stopping, route="ops")

    assert calls == 3
    (line,) = [e for e in logs if e["log_level"] in ("warning", "error")]
    assert line["event"] == "dispatch paused: the spool failed"
    assert "db:5432" in line["error"] and "resumes by itself" in line["hint"]
    assert "exc_info" not in line


class AckFailsOnce(MemorySpool):
    """A memory spool whose first ack fails, as a database hiccup would."""

    def __init__(self, consumers: Sequence[str]) -> None:
        super().__init__(consumers)
        self.failed = False

    async def ack(self, consumer: str, record_ids: Sequence[str]) -> None:
        if not self.failed:
            self.failed = True
            raise SpoolError("spool ack failed on PostgreSQL at db:5432/notifier: deadlock")
        await super().ack(consumer, record_ids)


async def test_a_mail_whose_ack_failed_is_acked_on_the_next_step_not_mailed_again(
    tmp_path: Path,
) -> None:
    """The mail went out, then its ack failed: the records are acked a second later. (Left
    leased, they came back when the lease ended, or at once after another instance took
    over the route, and the same mail went out twice.)"""
    spool = AckFailsOnce(["route:ops"])
    r = await rig(tmp_path, spool=spool)
    await spool.put([alarm()])
    try:
        async with running(r.worker):
            await until(lambda: spool.failed and delivered(spool), timeout=10)
    finally:
        await r.store.close()
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    assert (await stored_alarms(tmp_path))[("gw01", "0x00010002", "RELAY/RECH")].message_id
