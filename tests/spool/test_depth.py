"""One queue depth: what the status page shows (the running spool's stats) and what `notifier
spool stats` prints are counted by the same query, so they agree."""

from __future__ import annotations

from pathlib import Path

from notifier.records import Kind
from notifier.spool import SqliteSpool, admin
from notifier.spool.schema import spool_path
from tests.spool.helpers import rec


async def test_status_page_and_spool_stats_agree_on_every_state(tmp_path: Path) -> None:
    spool = SqliteSpool(spool_path(tmp_path), ["route:ops", "route:pbx"], history_entries=10)
    await spool.start()
    try:
        await spool.put([rec(Kind.ALARM, f"alarm {i}") for i in range(6)])
        dead, retry, _leased, *_ = await spool.lease("route:ops", 3, 60)
        await spool.nack("route:ops", [dead.record.id], error="550 no such user", retry_in_s=None)
        await spool.nack("route:ops", [retry.record.id], error="421 busy", retry_in_s=600)
        await spool.lease("route:pbx", 1, 60)
        page = (await spool.refresh_stats()).depth
        cli = admin.stats(tmp_path)
    finally:
        await spool.close()
    shown: dict[tuple[str, str], int] = {}
    for c in cli.consumers:
        shown |= {(c.consumer, "ready"): c.ready, (c.consumer, "leased"): c.leased}
        shown |= {(c.consumer, "retry"): c.retry, (c.consumer, "dead"): c.dead}
    assert shown == page
    assert page[("route:ops", "ready")] == 3 and page[("route:ops", "leased")] == 1
    assert page[("route:ops", "retry")] == 1 and page[("route:ops", "dead")] == 1
    assert page[("route:pbx", "ready")] == 5 and page[("route:pbx", "leased")] == 1
