"""Wake-ups for consumers: sleep until something is put or a retry or lease comes due."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time


class Waker:
    """Per-consumer wake-ups; used on the event loop's thread only.

    A consumer calls `wait(timeout, consumer)` after a lease found nothing. It wakes when a put
    lands (`notify`), when the earliest retry or lease expiry the spool reported (`idle`,
    `due_in`) passes, or after `timeout`. Waking early is harmless (the next lease finds nothing
    and reports the next due time); waking late would delay mail, so every path that makes a
    record ready later tells the waker when.
    """

    def __init__(self) -> None:
        # The None key serves callers that do not name a consumer: woken by anything.
        self._events: dict[str | None, asyncio.Event] = {}
        self._due: dict[str | None, float] = {}  # monotonic time
        # Counts wake-ups; a lease that ran while one happened must not go idle on its result.
        self.generation = 0

    def _event(self, consumer: str | None) -> asyncio.Event:
        event = self._events.get(consumer)
        if event is None:
            event = self._events[consumer] = asyncio.Event()
            event.set()  # a new waiter leases first, then sleeps
        return event

    def notify(self) -> None:
        """New records are ready for every consumer."""
        self.generation += 1
        for event in self._events.values():
            event.set()

    def due_in(self, consumer: str, delay_s: float) -> None:
        """A record of `consumer` becomes ready in `delay_s` seconds."""
        if delay_s <= 0:
            self.generation += 1
            self._event(consumer).set()
            self._event(None).set()
            return
        at = time.monotonic() + delay_s
        for key in (consumer, None):
            self._due[key] = min(self._due.get(key, math.inf), at)

    def idle(self, consumer: str, next_due_in_s: float | None, seen: int | None = None) -> None:
        """A lease for `consumer` found nothing; the next record is due in so many seconds.

        `seen`: `generation` read before the lease started. If a put landed meanwhile (the lease
        may have missed it), the consumer stays awake instead of sleeping on a ready record.
        """
        at = math.inf if next_due_in_s is None else time.monotonic() + max(next_due_in_s, 0.0)
        if seen is None or seen == self.generation:
            self._event(consumer).clear()
            self._event(None).clear()
        self._due[consumer] = at
        self._due[None] = min((due for key, due in self._due.items() if key is not None))

    async def wait(self, timeout: float, consumer: str | None = None) -> None:
        """Return when something is put or comes due for `consumer`, at most `timeout` s."""
        event = self._event(consumer)
        if event.is_set():
            return
        due = self._due.get(consumer, math.inf)
        sleep = min(timeout, due - time.monotonic())
        if sleep > 0:
            # Not asyncio.wait_for: on Python 3.11 it returns, instead of raising, when it is
            # cancelled just as the event is set, and a worker cancelled because another
            # instance took its route over would then go on dispatching it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep):
                    await event.wait()
        if self._due.get(consumer, math.inf) <= time.monotonic():
            # Reached: wake once for it. The caller leases next, and the spool reports the
            # next due time; a due time left in the past would make every wait return at once.
            self._due[consumer] = math.inf
