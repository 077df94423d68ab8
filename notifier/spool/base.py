"""The spool interface: what receivers hand records to and what the dispatcher leases from.

Receivers call `put` and acknowledge their sender only after it returns. The dispatcher and
forwarders are *consumers*: every record put is delivered once to each consumer named when the
spool was opened, through `lease` → `ack` / `nack`. A lease that is neither acked nor nacked
before its visibility timeout returns to ready: a crash mid-delivery means redelivery, never loss.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from notifier.records import Kind, Record


class Overflow(enum.StrEnum):
    REJECT = "reject"
    DROP_OLDEST = "drop_oldest"


class SpoolError(Exception):
    """The spool could not do what was asked (storage failed, or it is not open); the root of
    the spool package's errors."""


class SpoolFull(SpoolError):
    """The queue is full and the policy is `reject`: the sender should retry later."""

    reason = "spool_full"  # what the receivers' refusals and their metric call it

    def __init__(self, detail: str, retry_after_s: int = 5) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class SpoolUnavailable(SpoolFull):
    """The storage failed (the database is down, the disk is failing), not a limit: the
    sender should retry later all the same, and no record of the put could be stored."""

    reason = "spool_unavailable"


class DeliveryState(enum.StrEnum):
    READY = "ready"
    LEASED = "leased"
    RETRY = "retry"  # nacked, waiting for its retry time
    DEAD = "dead"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Lease:
    """One record handed to one consumer. `attempts` counts earlier leases of it."""

    record: Record
    consumer: str
    attempts: int
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class DropNotice:
    """Records dropped because a queue was full, by kind, since the last notice was taken."""

    counts: dict[Kind, int]
    since: float


@dataclass(slots=True)
class SpoolStats:
    depth: dict[tuple[str, str], int] = field(default_factory=dict)  # (consumer, state) -> n
    oldest_ready_age_s: dict[str, float] = field(default_factory=dict)  # consumer -> age
    memory_entries: int = 0
    persistent_entries: int = 0
    disk_bytes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> n
    rejected: int = 0
    commits: int = 0
    fsyncs: int = 0
    records_committed: int = 0


class Spool(Protocol):
    """Bounded queues; see the module docstring for the contract."""

    async def start(self) -> None:
        """Open storage and recover what was not acked."""

    async def close(self) -> None:
        """Flush and close; puts after this raise."""

    async def put(self, records: Sequence[Record]) -> None:
        """Hold `records`; when it returns, durable kinds are committed and fsynced.

        Raises `SpoolFull` when a limit is reached and the overflow policy is `reject`
        (nothing of the batch is held then).
        """

    async def lease(self, consumer: str, limit: int, visibility_s: float) -> list[Lease]:
        """Up to `limit` ready records for `consumer`, oldest first, hidden for `visibility_s`."""

    async def wait(self, timeout: float, consumer: str | None = None) -> None:
        """Sleep until records are put or come due for `consumer`, at most `timeout` seconds.

        Call it after a lease returned nothing; pass the consumer name so a retry time of
        another consumer does not wake this one.
        """

    async def extend(self, consumer: str, record_ids: Sequence[str], visibility_s: float) -> None:
        """Keep leased records hidden for `visibility_s` more (a digest still collecting)."""

    async def ack(self, consumer: str, record_ids: Sequence[str]) -> None:
        """Delivered: never handed to `consumer` again."""

    async def nack(
        self, consumer: str, record_ids: Sequence[str], *, error: str, retry_in_s: float | None
    ) -> None:
        """Not delivered: ready again after `retry_in_s`, or dead-lettered when it is None."""

    async def retry_now(self, consumer: str) -> int:
        """Deliveries of `consumer` waiting for a later retry become ready now (an account was
        fixed); returns how many."""

    def history(self, limit: int) -> list[Record]:
        """The most recent records received, newest first (kept after delivery)."""

    def take_drop_notice(self, consumer: str) -> DropNotice | None:
        """Drops since the last call for this consumer, or None; for "N records were dropped"."""

    def stats(self) -> SpoolStats: ...
