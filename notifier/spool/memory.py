"""A bounded in-memory spool: what is held here is lost on a restart (log lines by default)."""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from notifier.metrics import Metrics
from notifier.records import Kind, Record
from notifier.spool.base import DropNotice, Lease, Overflow, SpoolFull, SpoolStats
from notifier.spool.drops import DropLedger
from notifier.spool.policy import SpoolPolicy, as_policy, drop_order, lowest_first
from notifier.spool.wake import Waker


@dataclass(slots=True)
class _Delivery:
    record: Record
    ready_at: float = 0.0  # monotonic; a lease or a retry moves it forward
    attempts: int = 0
    leased: bool = False
    dead: bool = False
    last_error: str = ""


@dataclass(slots=True)
class _Consumer:
    deliveries: dict[str, _Delivery] = field(default_factory=dict)  # insertion = arrival order


class MemorySpool:
    """Holds up to `max_entries` records not yet delivered to every consumer.

    `overflow` is one policy for every record, or a `SpoolPolicy` with per-receiver overrides.
    """

    def __init__(
        self,
        consumers: Sequence[str],
        max_entries: int = 10_000,
        overflow: Overflow | SpoolPolicy = Overflow.REJECT,
        history_entries: int = 1000,
        *,
        metrics: Metrics | None = None,
        waker: Waker | None = None,
    ) -> None:
        self._consumers = {name: _Consumer() for name in consumers}
        self._max = max_entries
        self._policy = as_policy(overflow)
        self._history: deque[Record] = deque(maxlen=history_entries)
        # record id -> (record, number of consumers still owing a delivery)
        self._pending: dict[str, tuple[Record, int]] = {}
        self._drops = DropLedger(consumers, "memory", metrics)
        self._rejected = 0
        self._closed = False
        self._waker = waker or Waker()

    @property
    def consumers(self) -> frozenset[str]:
        return frozenset(self._consumers)

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
        """`put` without awaiting (nothing here blocks); raises `SpoolFull` like `put`."""
        if self._closed:
            raise SpoolFull("spool is closed", retry_after_s=10)
        unique = {r.id: r for r in records}.values()  # a record put twice is held once
        if not self._consumers:  # history only (log lines no route takes): the usual case
            self._history.extend(unique)
            if unique:
                self._waker.notify()
            return
        fresh = [r for r in unique if r.id not in self._pending]
        owed = self._policy.owed(fresh)  # the rest is history only: nobody will lease it
        over = len(self._pending) + len(owed) - self._max
        if over > 0:
            kept = self._make_room(over, owed)
            if len(kept) < len(owed):
                gone = {r.id for r in owed} - {r.id for r in kept}
                fresh = [r for r in fresh if r.id not in gone]
            owed = kept
        self._history.extend(fresh)
        consumers = len(self._consumers)
        for record in owed:
            self._pending[record.id] = (record, consumers)
            for consumer in self._consumers.values():
                consumer.deliveries[record.id] = _Delivery(record)
        if fresh:
            self._waker.notify()

    def _make_room(self, over: int, incoming: list[Record]) -> list[Record]:
        """Drop `over` records per the overflow policy; returns what of `incoming` is kept."""
        if self._policy.overflow_for(incoming) is Overflow.REJECT:
            self._rejected += len(incoming)
            raise SpoolFull(
                f"memory queue full ({self._max} entries): retry later "
                "(or raise spool.memory_queue_entries)",
                retry_after_s=5,
            )
        candidates = lowest_first(
            ((r.kind.rank, n, rid) for n, (rid, (r, _)) in enumerate(self._pending.items())),
            over,
        )
        kinds: Counter[Kind] = Counter()
        owed: dict[str, Counter[Kind]] = {name: Counter() for name in self._consumers}
        dropped: set[int] = set()
        for rid, index in itertools.islice(drop_order(candidates, incoming), over):
            if rid is not None:
                record, _ = self._pending.pop(rid)
                for name, consumer in self._consumers.items():
                    if consumer.deliveries.pop(rid, None) is not None:
                        owed[name][record.kind] += 1
            elif index is not None:
                record = incoming[index]
                dropped.add(index)
                for counts in owed.values():
                    counts[record.kind] += 1
            kinds[record.kind] += 1
        self._drops.dropped("queue_full", kinds, owed)
        return [r for i, r in enumerate(incoming) if i not in dropped]

    def _settle(self, consumer: _Consumer, record_id: str) -> None:
        delivery = consumer.deliveries.pop(record_id, None)
        if delivery is None:
            return
        record, owing = self._pending.get(record_id, (delivery.record, 1))
        if owing <= 1:
            self._pending.pop(record_id, None)
        else:
            self._pending[record_id] = (record, owing - 1)

    def holds(self, consumer: str, record_id: str) -> bool:
        """Whether `record_id` is still owed to `consumer` here (held, leased or dead)."""
        return record_id in self._consumers[consumer].deliveries

    def discard(self, record_ids: Sequence[str]) -> None:
        """Forget records without counting a drop (a batch its sender is told to retry)."""
        for rid in record_ids:
            if self._pending.pop(rid, None) is None:
                continue
            for consumer in self._consumers.values():
                consumer.deliveries.pop(rid, None)

    async def lease(self, consumer: str, limit: int, visibility_s: float) -> list[Lease]:
        now = time.monotonic()
        out: list[Lease] = []
        next_due = math.inf
        for delivery in self._consumers[consumer].deliveries.values():
            if delivery.dead:
                continue
            if delivery.ready_at > now:
                next_due = min(next_due, delivery.ready_at)
                continue
            if len(out) >= limit:
                break
            delivery.ready_at = now + visibility_s
            delivery.leased = True
            out.append(Lease(delivery.record, consumer, delivery.attempts, delivery.last_error))
            delivery.attempts += 1
        if out:
            self._waker.due_in(consumer, visibility_s)
        else:
            self._waker.idle(consumer, None if next_due == math.inf else next_due - now)
        return out

    async def wait(self, timeout: float, consumer: str | None = None) -> None:
        """Sleep until something is put or comes due, at most `timeout` seconds."""
        await self._waker.wait(timeout, consumer)

    async def extend(self, consumer: str, record_ids: Sequence[str], visibility_s: float) -> None:
        until = time.monotonic() + visibility_s
        deliveries = self._consumers[consumer].deliveries
        for rid in record_ids:
            if (d := deliveries.get(rid)) is not None and d.leased and not d.dead:
                d.ready_at = until

    async def ack(self, consumer: str, record_ids: Sequence[str]) -> None:
        c = self._consumers[consumer]
        for rid in record_ids:
            self._settle(c, rid)

    async def nack(
        self, consumer: str, record_ids: Sequence[str], *, error: str, retry_in_s: float | None
    ) -> None:
        c = self._consumers[consumer]
        now = time.monotonic()
        if retry_in_s is None:
            # A dead letter in memory could never be retried (`notifier spool` reaches the disk
            # tier only) and would hold a queue slot until a restart: count it and let it go.
            kinds: Counter[Kind] = Counter(
                c.deliveries[rid].record.kind for rid in record_ids if rid in c.deliveries
            )
            for rid in record_ids:
                self._settle(c, rid)
            if kinds:
                self._drops.dropped("dead_letter", kinds, {})
            return
        for rid in record_ids:
            if (d := c.deliveries.get(rid)) is None:
                continue
            d.last_error = error
            d.leased = False
            d.ready_at = now + retry_in_s
        self._waker.due_in(consumer, retry_in_s)

    async def retry_now(self, consumer: str) -> int:
        """What waits for a later retry for `consumer` is ready now; returns how many."""
        c = self._consumers.get(consumer)
        if c is None:
            return 0
        now = time.monotonic()
        count = 0
        for d in c.deliveries.values():
            if not d.dead and not d.leased and d.ready_at > now:
                d.ready_at = now
                count += 1
        if count:
            self._waker.notify()
        return count

    def history(self, limit: int) -> list[Record]:
        if limit <= 0:
            return []
        return list(reversed(self._history))[:limit]

    def take_drop_notice(self, consumer: str) -> DropNotice | None:
        return self._drops.take(consumer)

    def stats(self) -> SpoolStats:
        stats = SpoolStats(memory_entries=len(self._pending), rejected=self._rejected)
        stats.dropped = self._drops.totals()
        now = time.monotonic()
        for name, c in self._consumers.items():
            counts: Counter[str] = Counter()
            oldest = math.inf
            for d in c.deliveries.values():
                if d.dead:
                    state = "dead"
                elif d.ready_at > now:
                    state = "leased" if d.leased else "retry"
                else:
                    state = "ready"
                    oldest = min(oldest, d.record.received_at)
                counts[state] += 1
            for state, n in counts.items():
                stats.depth[(name, state)] = n
            if oldest != math.inf:
                stats.oldest_ready_age_s[name] = max(0.0, time.time() - oldest)
        return stats
