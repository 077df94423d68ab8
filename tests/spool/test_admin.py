"""`notifier spool ...` functions, working on the file while a spool runs on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from notifier.records import Kind
from notifier.spool import DeliveryState, SqliteSpool, admin
from notifier.spool.schema import spool_path
from tests.spool.helpers import rec, texts


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[SqliteSpool]:
    """A running spool with one dead letter ("bounced"), one ready and one delivered record."""
    s = SqliteSpool(spool_path(tmp_path), ["mail"], history_entries=10)
    await s.start()
    await s.put([rec(Kind.ALARM, "bounced"), rec(Kind.EVENT, "waiting"), rec(Kind.CLEAR, "sent")])
    bounced, _, sent = await s.lease("mail", 3, 30)
    await s.nack("mail", [bounced.record.id], error="550 5.1.1 no such user", retry_in_s=None)
    await s.ack("mail", [sent.record.id])
    await s.nack("mail", [_.record.id], error="421 busy", retry_in_s=0)
    yield s
    await s.close()


def dead_id(data_dir: Path) -> str:
    (row,) = admin.list_records(data_dir, state="dead")
    return row.id


async def test_show_gives_the_servers_reply_and_attempts(spool: SqliteSpool) -> None:
    detail = admin.show(spool.path.parent, dead_id(spool.path.parent))

    (delivery,) = detail.deliveries
    assert (delivery.state, delivery.attempts) == (DeliveryState.DEAD, 1)
    assert delivery.last_error == "550 5.1.1 no such user"
    assert "550 5.1.1 no such user" in admin.render(detail)
    assert detail.record["text"] == "bounced"


async def test_list_filters_by_state_newest_first(spool: SqliteSpool) -> None:
    data_dir = spool.path.parent

    assert [r.text for r in admin.list_records(data_dir)] == ["sent", "waiting", "bounced"]
    assert [r.text for r in admin.list_records(data_dir, state="done")] == ["sent"]
    assert [r.text for r in admin.list_records(data_dir, state="ready")] == ["waiting"]
    assert [r.text for r in admin.list_records(data_dir, limit=1)] == ["sent"]
    assert "mail:dead" in admin.render(admin.list_records(data_dir))


async def test_stats_count_each_state(spool: SqliteSpool) -> None:
    stats = admin.stats(spool.path.parent)

    (mail,) = stats.consumers
    assert (mail.ready, mail.leased, mail.retry, mail.dead) == (1, 0, 0, 1)
    assert (stats.pending, stats.stored) == (2, 3)
    assert "1 ready" in admin.render(stats)
    assert json.loads(admin.render(stats, as_json=True))["pending"] == 2


async def test_retry_while_the_service_runs_redelivers_the_dead_letter(
    spool: SqliteSpool,
) -> None:
    assert texts(await spool.lease("mail", 10, 30)) == ["waiting"]
    assert await spool.lease("mail", 10, 30) == []

    changed = admin.retry(spool.path.parent, record_id=dead_id(spool.path.parent))

    assert changed.deliveries == 1
    await asyncio.wait_for(spool.wait(60, "mail"), 10)  # the service notices the change
    (lease,) = await spool.lease("mail", 10, 30)
    assert (lease.record.text, lease.attempts) == ("bounced", 0)


async def test_purge_dead_removes_dead_letters_and_frees_the_queue(spool: SqliteSpool) -> None:
    changed = admin.purge_dead(spool.path.parent)

    assert (changed.deliveries, changed.records_deleted) == (1, 1)
    assert admin.list_records(spool.path.parent, state="dead") == []
    # The service counts again before its next operation once it sees the file changed.
    assert (await spool.refresh_stats()).persistent_entries == 1


async def test_retry_all_dead(spool: SqliteSpool) -> None:
    assert admin.retry(spool.path.parent, dead=True).deliveries == 1
    assert admin.list_records(spool.path.parent, state="dead") == []


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(admin.AdminError, match="has not run"):
        admin.stats(tmp_path)


async def test_an_unknown_id_is_explained(spool: SqliteSpool) -> None:
    with pytest.raises(admin.AdminError, match="spool list"):
        admin.show(spool.path.parent, "nope")


async def test_deliveries_for_a_removed_destination_can_be_purged(tmp_path: Path) -> None:
    old = SqliteSpool(spool_path(tmp_path), ["mail", "old-forwarder"])
    await old.start()
    await old.put([rec(text="x")])
    await old.ack("mail", [lease.record.id for lease in await old.lease("mail", 10, 30)])
    await old.close()
    spool = SqliteSpool(spool_path(tmp_path), ["mail"])
    with capture_logs() as logs:
        await spool.start()
    try:
        assert any(e.get("consumer") == "old-forwarder" for e in logs)
        assert spool.stats().persistent_entries == 1  # still owed to the old destination

        changed = admin.purge_consumer(tmp_path, "old-forwarder")

        assert (changed.deliveries, changed.records_deleted) == (1, 1)
        assert (await spool.refresh_stats()).persistent_entries == 0
    finally:
        await spool.close()
