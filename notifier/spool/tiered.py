"""The spool the service runs: durable kinds in SQLite, the rest in memory, one interface."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import Counter
from collections.abc import Sequence

from notifier.metrics import Metrics
from notifier.records import Kind, Record
from notifier.spool.base import DropNotice, Lease, SpoolStats
from notifier.spool.memory import MemorySpool
from notifier.spool.policy import SpoolPolicy
from notifier.spool.sqlite import SqliteSpool

STATES = ("ready", "leased", "retry", "dead")


class TieredSpool:
    """Routes each record by `policy.is_durable` (per receiver and kind) to one of two tiers.

    Leases take durable records first, then fill up from memory: alarms and events are not
    kept waiting behind a flood of log lines, and a consumer that wants strict time order sorts
    by `received_at` (each lease batch is returned sorted that way).
    """

    def __init__(
        self,
        durable: SqliteSpool,
        memory: MemorySpool,
        policy: SpoolPolicy,
        *,
        metrics: Metrics | None = None,
        gauge_interval_s: float = 5.0,
    ) -> None:
        self.durable = durable
        self.memory = memory
        self._policy = policy
        self._metrics = metrics
        self._gauge_interval = gauge_interval_s
        self._gauges: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.durable.start()
        await self.memory.start()
        if self._metrics is not None and self._gauges is None:
            self._gauges = asyncio.create_task(self._publish_gauges(), name="spool-gauges")

    async def close(self) -> None:
        if self._gauges is not None:
            self._gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauges
            self._gauges = None
        await self.memory.close()
        await self.durable.close()

    async def put(self, records: Sequence[Record]) -> None:
        """Durable records are committed and fsynced when this returns; raises `SpoolFull`
        with nothing of the batch held when either tier refuses."""
        durable, volatile = self._policy.split(records)
        # Memory first: it refuses synchronously, so a refusal there costs no disk write, and a
        # refusal of the disk tier is undone in memory before the sender hears of it.
        self.memory.put_nowait(volatile)
        try:
            await self.durable.put(durable)
        except BaseException:
            self.memory.discard([r.id for r in volatile])
            raise

    def _in_memory_tier(self, consumer: str) -> bool:
        """Consumers that want no volatile kind have no deliveries in memory at all."""
        return consumer in self.memory.consumers

    async def lease(self, consumer: str, limit: int, visibility_s: float) -> list[Lease]:
        leases = await self.durable.lease(consumer, limit, visibility_s)
        if len(leases) < limit and self._in_memory_tier(consumer):
            leases += await self.memory.lease(consumer, limit - len(leases), visibility_s)
        leases.sort(key=lambda lease: lease.record.received_at)
        return leases

    async def wait(self, timeout: float, consumer: str | None = None) -> None:
        waits = [asyncio.ensure_future(self.durable.wait(timeout, consumer))]
        if consumer is None or self._in_memory_tier(consumer):
            waits.append(asyncio.ensure_future(self.memory.wait(timeout, consumer)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _split(self, consumer: str, record_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        if not self._in_memory_tier(consumer):
            return list(record_ids), []
        in_memory = [rid for rid in record_ids if self.memory.holds(consumer, rid)]
        held = set(in_memory)
        return [rid for rid in record_ids if rid not in held], in_memory

    async def extend(self, consumer: str, record_ids: Sequence[str], visibility_s: float) -> None:
        on_disk, in_memory = self._split(consumer, record_ids)
        if in_memory:
            await self.memory.extend(consumer, in_memory, visibility_s)
        if on_disk:
            await self.durable.extend(consumer, on_disk, visibility_s)

    async def ack(self, consumer: str, record_ids: Sequence[str]) -> None:
        on_disk, in_memory = self._split(consumer, record_ids)
        if in_memory:
            await self.memory.ack(consumer, in_memory)
        if on_disk:
            await self.durable.ack(consumer, on_disk)

    async def nack(
        self, consumer: str, record_ids: Sequence[str], *, error: str, retry_in_s: float | None
    ) -> None:
        on_disk, in_memory = self._split(consumer, record_ids)
        if in_memory:
            await self.memory.nack(consumer, in_memory, error=error, retry_in_s=retry_in_s)
        if on_disk:
            await self.durable.nack(consumer, on_disk, error=error, retry_in_s=retry_in_s)

    async def retry_now(self, consumer: str) -> int:
        """What waits for a later retry for `consumer` is ready now, in both tiers."""
        count = await self.durable.retry_now(consumer)
        if self._in_memory_tier(consumer):
            count += await self.memory.retry_now(consumer)
        return count

    def history(self, limit: int) -> list[Record]:
        """Both tiers' recent records, newest first by `received_at`."""
        merged = heapq.merge(
            self.durable.history(limit),
            self.memory.history(limit),
            key=lambda r: -r.received_at,
        )
        return list(itertools.islice(merged, max(limit, 0)))

    def take_drop_notice(self, consumer: str) -> DropNotice | None:
        notices = [
            n
            for n in (
                self.durable.take_drop_notice(consumer),
                self.memory.take_drop_notice(consumer) if self._in_memory_tier(consumer) else None,
            )
            if n is not None
        ]
        if not notices:
            return None
        counts: Counter[Kind] = Counter()
        for n in notices:
            counts.update(n.counts)
        return DropNotice(dict(counts), min(n.since for n in notices))

    def stats(self) -> SpoolStats:
        disk, mem = self.durable.stats(), self.memory.stats()
        depth = Counter(disk.depth)
        depth.update(mem.depth)
        ages = dict(disk.oldest_ready_age_s)
        for consumer, age in mem.oldest_ready_age_s.items():
            ages[consumer] = max(age, ages.get(consumer, 0.0))
        dropped = Counter(disk.dropped)
        dropped.update(mem.dropped)
        return SpoolStats(
            depth=dict(depth),
            oldest_ready_age_s=ages,
            memory_entries=mem.memory_entries,
            persistent_entries=disk.persistent_entries,
            disk_bytes=disk.disk_bytes,
            dropped=dict(dropped),
            rejected=disk.rejected + mem.rejected,
            commits=disk.commits,
            fsyncs=disk.fsyncs,
            records_committed=disk.records_committed,
        )

    async def _publish_gauges(self) -> None:
        assert self._metrics is not None
        while True:
            publish_gauges(self._metrics, self.stats())
            await asyncio.sleep(self._gauge_interval)


def publish_gauges(metrics: Metrics, stats: SpoolStats) -> None:
    """Set the depth and age gauges from `stats` (every known state, zeros included)."""
    consumers = {consumer for consumer, _ in stats.depth}
    for consumer in consumers:
        for state in STATES:
            metrics.spool_depth.labels(consumer=consumer, state=state).set(
                stats.depth.get((consumer, state), 0)
            )
        metrics.spool_oldest_ready_age.labels(consumer=consumer).set(
            stats.oldest_ready_age_s.get(consumer, 0.0)
        )
