"""A bounded in-memory spool: what is held here is lost on a restart (log lines by default)."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from notifier.records import Kind, Record
from notifier.spool.base import DropNotice, Lease, Overflow, SpoolFull, SpoolStats


@dataclass(slots=True)
class _Delivery:
    record: Record
    ready_at: float = 0.0
    attempts: int = 0
    leased_until: float = 0.0
    dead: bool = False
    last_error: str = ""


@dataclass(slots=True)
class _Consumer:
    deliveries: dict[str, _Delivery] = field(default_factory=dict)  # insertion = arrival order
    drops: Counter[Kind] = field(default_factory=Counter)
    drops_since: float = 0.0


class MemorySpool:
    """Holds up to `max_entries` records not yet delivered to every consumer."""

    def __init__(
        self,
        consumers: Sequence[str],
        max_entries: int = 10_000,
        overflow: Overflow = Overflow.REJECT,
        history_entries: int = 1000,
    ) -> None:
        self._consumers = {name: _Consumer() for name in consumers}
        self._max = max_entries
        self._overflow = overflow
        self._history: deque[Record] = deque(maxlen=history_entries)
        # record id -> number of consumers still owing a delivery
        self._pending: dict[str, tuple[Record, int]] = {}
        self._dropped: Counter[str] = Counter()
        self._rejected = 0
        self._closed = False
        self._wakeup = asyncio.Event()

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    @property
    def entries(self) -> int:
        return len(self._pending)

    async def put(self, records: Sequence[Record]) -> None:
        self.put_nowait(records)

    def put_nowait(self, records: Sequence[Record]) -> None:
        if self._closed:
            raise SpoolFull("spool is closed", retry_after_s=10)
        free = self._max - len(self._pending)
        if len(records) > free and self._consumers:
            if self._overflow is Overflow.REJECT:
                self._rejected += len(records)
                raise SpoolFull(
                    f"memory queue full ({self._max} entries): retry later", retry_after_s=5
                )
            self._drop_lowest(len(records) - free, incoming=records)
        for record in records:
            self._history.append(record)
            if not self._consumers:
                continue
            self._pending[record.id] = (record, len(self._consumers))
            for consumer in self._consumers.values():
                consumer.deliveries[record.id] = _Delivery(record)
        self._wakeup.set()

    def _drop_lowest(self, count: int, incoming: Sequence[Record]) -> None:
        """Drop `count` held records, lowest kind first and oldest within a kind."""
        victims = heapq.nsmallest(
            count,
            ((r.kind.rank, r.received_at, rid) for rid, (r, _) in self._pending.items()),
        )
        for _, _, rid in victims:
            record, _ = self._pending.pop(rid)
            self._dropped[f"queue_full_{record.kind.value}"] += 1
            for consumer in self._consumers.values():
                if consumer.deliveries.pop(rid, None) is not None:
                    if not consumer.drops:
                        consumer.drops_since = time.time()
                    consumer.drops[record.kind] += 1
        # Still not enough room (fewer held than incoming): drop the lowest incoming too.
        overflow = len(self._pending) + len(incoming) - self._max
        if overflow > 0:
            raise SpoolFull(f"batch of {len(incoming)} is larger than the memory queue")

    def _settle(self, consumer: _Consumer, record_id: str) -> None:
        delivery = consumer.deliveries.pop(record_id, None)
        if delivery is None:
            return
        record, owing = self._pending.get(record_id, (delivery.record, 1))
        if owing <= 1:
            self._pending.pop(record_id, None)
        else:
            self._pending[record_id] = (record, owing - 1)

    async def lease(self, consumer: str, limit: int, visibility_s: float) -> list[Lease]:
        now = time.monotonic()
        out: list[Lease] = []
        for delivery in self._consumers[consumer].deliveries.values():
            if len(out) >= limit:
                break
            if delivery.dead or delivery.ready_at > now or delivery.leased_until > now:
                continue
            delivery.leased_until = now + visibility_s
            out.append(Lease(delivery.record, consumer, delivery.attempts, delivery.last_error))
            delivery.attempts += 1
        if not out:
            self._wakeup.clear()
        return out

    async def wait(self, timeout: float) -> None:
        """Sleep until something is put, at most `timeout` seconds."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            pass

    async def extend(self, consumer: str, record_ids: Sequence[str], visibility_s: float) -> None:
        until = time.monotonic() + visibility_s
        deliveries = self._consumers[consumer].deliveries
        for rid in record_ids:
            if (d := deliveries.get(rid)) is not None:
                d.leased_until = until

    async def ack(self, consumer: str, record_ids: Sequence[str]) -> None:
        c = self._consumers[consumer]
        for rid in record_ids:
            self._settle(c, rid)

    async def nack(
        self, consumer: str, record_ids: Sequence[str], *, error: str, retry_in_s: float | None
    ) -> None:
        deliveries = self._consumers[consumer].deliveries
        now = time.monotonic()
        for rid in record_ids:
            if (d := deliveries.get(rid)) is None:
                continue
            d.last_error = error
            d.leased_until = 0.0
            if retry_in_s is None:
                d.dead = True
            else:
                d.ready_at = now + retry_in_s
        self._wakeup.set()

    def history(self, limit: int) -> list[Record]:
        if limit <= 0:
            return []
        return list(reversed(self._history))[:limit]

    def take_drop_notice(self, consumer: str) -> DropNotice | None:
        c = self._consumers[consumer]
        if not c.drops:
            return None
        notice = DropNotice(dict(c.drops), c.drops_since)
        c.drops.clear()
        return notice

    def stats(self) -> SpoolStats:
        stats = SpoolStats(memory_entries=len(self._pending), rejected=self._rejected)
        stats.dropped = dict(self._dropped)
        now = time.monotonic()
        for name, c in self._consumers.items():
            counts: Counter[str] = Counter()
            for d in c.deliveries.values():
                state = "dead" if d.dead else "leased" if d.leased_until > now else "ready"
                counts[state] += 1
            for state, n in counts.items():
                stats.depth[(name, state)] = n
        return stats
