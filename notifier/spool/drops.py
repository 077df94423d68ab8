"""Counting what the spool drops: per reason for metrics and logs, per consumer for mails."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping

from notifier.log import RateLimiter, get_logger
from notifier.metrics import Metrics
from notifier.records import Kind
from notifier.spool.base import DropNotice

log = get_logger("notifier.spool")


class DropLedger:
    """Counts drops; thread-safe (the SQLite spool drops on its writer thread).

    Reasons read `<cause>_<kind>`, e.g. ``queue_full_log`` or ``disk_full_event``.
    """

    def __init__(self, consumers: Iterable[str], tier: str, metrics: Metrics | None) -> None:
        self._tier = tier
        self._metrics = metrics
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()
        self._pending: dict[str, Counter[Kind]] = {c: Counter() for c in consumers}
        self._since: dict[str, float] = {}
        self._log_limit = RateLimiter(burst=5, period_s=60.0)

    def dropped(
        self, cause: str, kinds: Counter[Kind], by_consumer: Mapping[str, Counter[Kind]]
    ) -> None:
        """Count records dropped for `cause`: `kinds` once per record, `by_consumer` for the
        consumers that still owed them (what their next drop notice reports)."""
        now = time.time()
        with self._lock:
            for consumer, counts in by_consumer.items():
                owed = self._pending.get(consumer)
                if owed is None:
                    continue
                if not owed:
                    self._since[consumer] = now
                owed.update(counts)
            reasons = Counter({f"{cause}_{kind.value}": n for kind, n in kinds.items()})
            self._totals.update(reasons)
        if self._metrics is not None:
            for reason, n in reasons.items():
                self._metrics.spool_dropped.labels(reason=reason).inc(n)
        allowed, suppressed = self._log_limit.allow(cause)
        if allowed and reasons:
            log.warning(
                "spool dropped records",
                tier=self._tier,
                cause=cause,
                dropped=dict(reasons),
                suppressed=suppressed,
                hint="the queue is full and overflow=drop_oldest: raise the limit or fix delivery",
            )

    def take(self, consumer: str) -> DropNotice | None:
        with self._lock:
            owed = self._pending.get(consumer)
            if not owed:
                return None
            notice = DropNotice(dict(owed), self._since.pop(consumer, time.time()))
            owed.clear()
            return notice

    def totals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)
