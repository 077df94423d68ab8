"""A group that waits keeps its records leased; when extending the leases fails, the log says
so (the extension runs as a task nobody awaits)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from structlog.testing import capture_logs

from notifier.config import MatchSettings, RouteSettings
from notifier.dispatch.rules import compile_match
from notifier.dispatch.worker import RouteTarget, RouteWorker
from notifier.mail.compose import Envelope
from notifier.mail.outbox import Outbox
from notifier.metrics import Metrics
from notifier.spool import MemorySpool, SpoolError
from tests.dispatch.test_worker import alarm, opened


class ExtendFails(MemorySpool):
    async def extend(self, consumer: str, record_ids: Sequence[str], visibility_s: float) -> None:
        raise SpoolError("disk I/O error")


async def test_a_failed_lease_extension_is_logged_with_the_route(tmp_path: Path) -> None:
    route = RouteSettings(name="ops", group_wait_s=30, group_interval_s=0)
    spool = ExtendFails(["route:ops"])
    store = await opened(tmp_path)
    target = RouteTarget(
        "ops",
        Outbox(tmp_path / "outbox"),
        Envelope("n@example.test", "n", ("ops@example.test",)),
        asyncio.Lock(),
    )
    worker = RouteWorker(route, compile_match(MatchSettings()), spool, store, target, Metrics())
    await spool.put([alarm()])
    with capture_logs() as logs:
        task = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(20):
                while not any(e["event"] == "lease extension failed" for e in logs):
                    await asyncio.sleep(0.05)
        finally:
            worker.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await store.close()
    (failed,) = [e for e in logs if e["event"] == "lease extension failed"]
    assert failed["route"] == "ops" and failed["error"] == "disk I/O error"
