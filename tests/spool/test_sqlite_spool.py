"""What only the SQLite spool has: fsync grouping, the lock file, the WAL checkpoint.

The behaviour every backend shares is in `test_contract.py`, run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from notifier.metrics import Metrics
from notifier.spool import SpoolError, SqliteSpool
from tests.spool.helpers import rec

Opener = Callable[..., Any]


@pytest.fixture
async def open_spool(tmp_path: Path) -> AsyncIterator[Opener]:
    """Open (and at the end close) SqliteSpools on one file, consumer "mail" by default."""
    opened: list[SqliteSpool] = []

    async def _open(consumers: tuple[str, ...] = ("mail",), **kw: Any) -> SqliteSpool:
        spool = SqliteSpool(tmp_path / "spool.sqlite3", list(consumers), **kw)
        await spool.start()
        opened.append(spool)
        return spool

    yield _open
    for spool in opened:
        await spool.close()


async def test_concurrent_puts_share_fsynced_commits(open_spool: Opener) -> None:
    metrics = Metrics()
    spool = await open_spool(metrics=metrics)

    await asyncio.gather(*(spool.put([rec(text=str(i))]) for i in range(200)))

    stats = spool.stats()
    assert stats.records_committed == 200
    assert stats.fsyncs < 200
    assert metrics.spool_fsyncs._value.get() == stats.fsyncs
    assert len(await spool.lease("mail", 500, 30)) == 200


async def test_a_second_service_on_the_same_spool_is_refused(open_spool: Opener) -> None:
    spool = await open_spool()

    with pytest.raises(SpoolError, match="another notifier process"):
        await SqliteSpool(spool.path, ["mail"]).start()


async def test_the_wal_is_checkpointed_and_stays_small(open_spool: Opener) -> None:
    spool = await open_spool()
    page = "x" * 4000

    for _ in range(30):  # about 12 MB of records, well past one checkpoint's worth of WAL
        await spool.put([rec(text=page) for _ in range(100)])

    wal = Path(f"{spool.path}-wal").stat().st_size
    assert wal < 8 << 20
    assert Path(spool.path).stat().st_size > 8 << 20  # the records reached the database file
