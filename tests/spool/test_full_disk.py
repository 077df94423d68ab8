"""A full disk under the spool: new records are refused, delivery goes on, space comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from notifier.metrics import Metrics
from notifier.records import Kind, Record, Severity
from notifier.spool import SpoolFull, SqliteSpool
from notifier.spool.schema import spool_bytes
from tests.smallfs import fill, small_filesystem

ROUTE = "route:ops"


def alarm(n: int, size: int = 100) -> Record:
    return Record(
        kind=Kind.ALARM,
        received_at=time.time(),
        sender="192.0.2.1",
        receiver="json",
        raw=b"x" * size,
        device="gw01",
        code=f"0x{n:08x}",
        source="RELAY/RECH",
        severity=Severity.MAJOR,
        text=f"alarm {n}",
    )


def gauge(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def put_until_accepted(spool: SqliteSpool, record: Record, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await spool.put([record])
            except SpoolFull:
                await asyncio.sleep(0.1)


async def fill_with_records(spool: SqliteSpool) -> int:
    """Put records until the spool refuses them for lack of space; returns how many it took."""
    accepted = 0
    with pytest.raises(SpoolFull, match="disk full under data_dir"):
        while True:
            await spool.put([alarm(accepted, size=20_000)])
            accepted += 1
    assert accepted >= 20, "too few records to fill the disk: the test proves nothing"
    return accepted


@asynccontextmanager
async def spool_that_filled_the_disk(
    tmp_path: Path,
) -> AsyncIterator[tuple[SqliteSpool, Path, int]]:
    """A spool on a 4 MiB file system that its own records filled; and how many it took."""
    with small_filesystem(tmp_path / "fs") as fs:
        spool = SqliteSpool(fs / "spool.sqlite3", [ROUTE], history_entries=1000)
        await spool.start()
        try:
            yield spool, fs, await fill_with_records(spool)
        finally:
            await spool.close()


async def accepted_again(spool: SqliteSpool) -> None:
    """A new record is taken within 20 s, and it is the only one owed."""
    await put_until_accepted(spool, alarm(10_000))
    assert [lease.record.code for lease in await spool.lease(ROUTE, 1000, 60)] == [
        f"0x{10_000:08x}"
    ]


async def test_full_disk_holds_leases_and_acks_in_memory_and_writes_them_when_space_returns(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "fs") as fs:
        metrics = Metrics()
        spool = SqliteSpool(fs / "spool.sqlite3", [ROUTE], metrics=metrics)
        await spool.start()
        try:
            await spool.put([alarm(n) for n in range(15)])
            filler = fill(fs)

            with pytest.raises(SpoolFull, match="disk full under data_dir") as refused:
                await spool.put([alarm(99)])
            assert refused.value.retry_after_s >= 1
            assert gauge(metrics, "notifier_spool_disk_full") == 1
            assert gauge(metrics, "notifier_spool_disk_full_refused_total") == 1

            # Delivery goes on: leases, nacks and acks while not a byte is free.
            leases = await spool.lease(ROUTE, 100, 60)
            assert sorted(lease.record.code for lease in leases) == [
                f"0x{n:08x}" for n in range(15)
            ]
            ids = [lease.record.id for lease in leases]
            await spool.ack(ROUTE, ids[:10])
            await spool.nack(ROUTE, ids[10:], error="451 try later", retry_in_s=0)
            again = await spool.lease(ROUTE, 100, 60)
            assert sorted(lease.record.id for lease in again) == sorted(ids[10:])
            assert {lease.attempts for lease in again} == {1}
            assert {lease.last_error for lease in again} == {"451 try later"}
            await spool.ack(ROUTE, ids[10:])
            assert await spool.lease(ROUTE, 100, 60) == []

            filler.unlink()
            await spool.put([alarm(100)])  # at once: the first put after space returned
            assert gauge(metrics, "notifier_spool_disk_full") == 0
        finally:
            await spool.close()

        # What was held in memory was written: after a restart only the new record is owed.
        reopened = SqliteSpool(fs / "spool.sqlite3", [ROUTE])
        await reopened.start()
        try:
            leases = await reopened.lease(ROUTE, 100, 60)
            assert [lease.record.code for lease in leases] == [f"0x{100:08x}"]
        finally:
            await reopened.close()


async def test_a_spool_that_filled_the_disk_itself_accepts_again_once_it_has_delivered(
    tmp_path: Path,
) -> None:
    async with spool_that_filled_the_disk(tmp_path) as (spool, fs, accepted):
        full_size = spool_bytes(fs / "spool.sqlite3")

        leases = await spool.lease(ROUTE, 1000, 60)
        assert len(leases) == accepted
        await spool.ack(ROUTE, [lease.record.id for lease in leases])

        # Delivered (and kept as history) they made room again, without a restart: the WAL
        # is truncated, and the history pruned if that is not enough.
        await accepted_again(spool)
        assert spool_bytes(fs / "spool.sqlite3") < full_size


async def test_retry_now_and_lease_extension_work_while_the_disk_is_full(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs") as fs:
        spool = SqliteSpool(fs / "spool.sqlite3", [ROUTE])
        await spool.start()
        try:
            await spool.put([alarm(1), alarm(2)])
            fill(fs)
            first, second = await spool.lease(ROUTE, 10, 60)
            await spool.nack(ROUTE, [first.record.id], error="account broken", retry_in_s=3600)
            await spool.extend(ROUTE, [second.record.id], 0)  # its lease ends now
            (again,) = await spool.lease(ROUTE, 10, 60)
            assert again.record.id == second.record.id
            assert await spool.retry_now(ROUTE) == 1  # the account was fixed
            (retried,) = await spool.lease(ROUTE, 10, 60)
            assert retried.record.id == first.record.id
        finally:
            await spool.close()


async def test_the_spool_opens_on_a_full_disk_and_delivers_what_it_holds(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs") as fs:
        spool = SqliteSpool(fs / "spool.sqlite3", [ROUTE])
        await spool.start()
        await spool.put([alarm(n) for n in range(3)])
        await spool.lease(ROUTE, 1, 600)  # leased when the process stops
        filler = fill(fs)
        await spool.close()

        metrics = Metrics()
        reopened = SqliteSpool(fs / "spool.sqlite3", [ROUTE], metrics=metrics)
        await reopened.start()  # voiding the old lease is a write: held in memory instead
        try:
            assert gauge(metrics, "notifier_spool_disk_full") == 1
            leases = await reopened.lease(ROUTE, 10, 60)
            assert sorted(lease.record.code for lease in leases) == [f"0x{n:08x}" for n in range(3)]
            with pytest.raises(SpoolFull):
                await reopened.put([alarm(3)])
            await reopened.ack(ROUTE, [lease.record.id for lease in leases])
            filler.unlink()
            await reopened.put([alarm(4)])
            (last,) = await reopened.lease(ROUTE, 10, 60)
            assert last.record.code == f"0x{4:08x}"
        finally:
            await reopened.close()


async def test_deliveries_while_the_disk_is_full_leave_room_to_give_the_space_back(
    tmp_path: Path,
) -> None:
    # Retries of a failing account write leases and nacks while new records are refused; those
    # writes once grew the WAL until the checkpoint that gives space back could not run (#8).
    async with spool_that_filled_the_disk(tmp_path) as (spool, _, accepted):
        ids = [lease.record.id for lease in await spool.lease(ROUTE, 1000, 60)]
        for _ in range(400):  # the mail server refuses every attempt for a while
            await spool.nack(ROUTE, ids, error="451 try later", retry_in_s=0)
            assert len(await spool.lease(ROUTE, 1000, 60)) == accepted
        await spool.ack(ROUTE, ids)

        await accepted_again(spool)
