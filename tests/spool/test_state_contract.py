"""The shared state's contract (`StateStore`), run against every backend: SQLite and PostgreSQL.

Each test is written once; `open_state` opens the backend under test (`alarms.sqlite` in
tmp_path, or a fresh database on the throwaway PostgreSQL server the test run starts).
Reopening means a new store on the same file or database, as a restarted service opens it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from notifier.records import Severity
from notifier.spool.pg.state import PostgresStateStore
from notifier.spool.sqlite_state import SqliteStateStore, state_path
from notifier.spool.state import Ack, AlarmState, Silence, StateStore, silence_matchers
from tests.spool.helpers import closing_all

Opener = Callable[[], Awaitable[StateStore]]
ROUTE = "route:ops"
T0 = 1_800_000_000.0


@pytest.fixture(params=("sqlite", "postgresql"))
async def open_state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Open (and at the end close) state stores on one file or database."""
    if request.param == "postgresql":
        dsn = str(request.getfixturevalue("pg_dsn"))

        def make() -> StateStore:
            return PostgresStateStore(dsn)

    else:

        def make() -> StateStore:
            return SqliteStateStore(state_path(tmp_path))

    async with closing_all() as start:

        async def _open() -> StateStore:
            return await start(make())

        yield _open


def alarm(code: str = "0x00010002", **kw: object) -> AlarmState:
    fields: dict[str, object] = {
        "device": "gw01",
        "code": code,
        "source": "RELAY/RECH",
        "active": True,
        "first_set": T0,
        "last_seen": T0 + 60,
        "count": 3,
        "last_notified": T0 + 1,
    }
    return AlarmState(**(fields | kw))  # type: ignore[arg-type]


def silence(sid: str = "s1", starts: float = T0, ends: float = T0 + 3600) -> Silence:
    return Silence(
        sid,
        silence_matchers({"devices": ["gw01*"], "codes": ["0x0001*", "0x0002"], "kinds": []}),
        starts,
        ends,
        "firmware update",
        "alice",
        T0 - 5,
    )


async def test_an_alarm_state_comes_back_with_every_field_after_a_reopen(
    open_state: Opener,
) -> None:
    full = alarm(
        active=False,
        cleared_at=T0 + 120.5,
        severity=Severity.CRITICAL,
        message_id="<20261130.abc@notifier.example>",
        silenced="s1",
    )
    bare = alarm("0x00000001")  # no severity, no Message-ID, not silenced
    store = await open_state()
    await store.save_alarms(ROUTE, [full, bare])
    await store.save_alarms("route:other", [alarm("0x00000009")])
    await store.close()

    loaded = await (await open_state()).load_alarms(ROUTE)

    assert loaded == {full.key: full, bare.key: bare}


async def test_a_save_replaces_changed_states_and_deletes_forgotten_ones_of_that_route_only(
    open_state: Opener,
) -> None:
    store = await open_state()
    kept, gone = alarm("0x1"), alarm("0x2")
    await store.save_alarms(ROUTE, [kept, gone])
    await store.save_alarms("route:other", [gone])
    changed = alarm("0x1", count=4, severity=Severity.MINOR, message_id="<m@x>")

    await store.save_alarms(ROUTE, [changed], forget=[gone.key])

    assert await store.load_alarms(ROUTE) == {changed.key: changed}
    assert await store.load_alarms("route:other") == {gone.key: gone}
    assert store.unsaved == 0


async def test_silences_are_listed_by_start_and_ended_after_leaves_out_the_ended_ones(
    open_state: Opener,
) -> None:
    store = await open_state()
    later = silence("later", starts=T0 + 100, ends=T0 + 200)
    first = silence("first", starts=T0, ends=T0 + 50)
    await store.add_silence(later)
    await store.add_silence(first)

    assert await store.silences() == [first, later]
    assert await store.silences(ended_after=T0 + 50) == [later]
    assert await store.silences(ended_after=T0 + 200) == []


async def test_an_expired_silence_ends_then_and_cannot_be_expired_twice(
    open_state: Opener,
) -> None:
    store = await open_state()
    await store.add_silence(silence("s1"))
    await store.add_silence(silence("s2", ends=T0 + 10))

    assert await store.expire_silence("s1", T0 + 30)
    assert not await store.expire_silence("s1", T0 + 40)  # already ended
    assert not await store.expire_silence("s2", T0 + 30)  # ended by itself
    assert not await store.expire_silence("nope", T0 + 30)
    await store.close()

    (expired, _) = await (await open_state()).silences()
    assert expired.expired_at == T0 + 30
    assert expired.ended(T0 + 30) and not expired.ended(T0 + 29)
    assert dict(expired.matchers) == {"codes": ("0x0001*", "0x0002"), "devices": ("gw01*",)}


async def test_an_ack_is_stored_replaced_and_forgotten(open_state: Opener) -> None:
    store = await open_state()
    key = alarm().key
    other = alarm("0x9").key
    await store.ack(Ack(key, "alice", "looking", T0))
    await store.ack(Ack(other, "bob", "", T0 + 1))
    replaced = Ack(key, "carol", "vendor called", T0 + 5)
    await store.ack(replaced)
    await store.close()

    store = await open_state()
    assert await store.acks() == {key: replaced, other: Ack(other, "bob", "", T0 + 1)}
    await store.forget_acks([other])
    assert await store.acks() == {key: replaced}
