"""Deliveries changed while the disk was full: leases, acks and nacks held in memory.

Sending a mail needs no disk, so delivery goes on while the disk under data_dir is full: the
SQLite spool reads the deliveries it holds and keeps what changes here, over the rows, until a
write succeeds again (`Store.write_held`). A crash meanwhile loses only these changes: the
records come back and are delivered again (at least once); none is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from notifier.spool.schema import QUEUED

ACKED = -1  # a held state besides schema.QUEUED and schema.DEAD: delivered, row to delete

# The columns a held delivery is read from, in `HeldDelivery.of_row` order.
COLUMNS = "seq, state, ready_at, leased, attempts, last_error"


@dataclass(slots=True)
class HeldDelivery:
    """One delivery row as the held changes leave it."""

    state: int
    ready_at: float
    leased: bool
    attempts: int
    last_error: str

    @classmethod
    def of_row(cls, row: tuple[int, int, float, int, int, str]) -> HeldDelivery:
        _, state, ready_at, leased, attempts, last_error = row
        return cls(state, ready_at, bool(leased), attempts, last_error)

    def ready(self, now: float) -> bool:
        return self.state == QUEUED and self.ready_at <= now


class Held:
    """Held deliveries per consumer, by record seq."""

    def __init__(self) -> None:
        self.by_consumer: dict[str, dict[int, HeldDelivery]] = {}

    def of(self, consumer: str) -> dict[int, HeldDelivery]:
        return self.by_consumer.setdefault(consumer, {})

    def __len__(self) -> int:
        return sum(len(held) for held in self.by_consumer.values())

    def clear(self) -> None:
        self.by_consumer.clear()


def pick(
    rows: Iterable[tuple[int, int, float, int, int, str]],
    held: Mapping[int, HeldDelivery],
    now: float,
    limit: int,
) -> list[tuple[int, HeldDelivery]]:
    """The deliveries to lease now, oldest ready first; pure.

    `rows` are the file's ready rows (at least `limit + len(held)` of them when there are that
    many, so the held changes cannot hide the rest); a held change wins over its row, and held
    deliveries that became ready (a nack's retry time, an expired lease) count too.
    """
    seen: dict[int, HeldDelivery] = {}
    for row in rows:
        seen[row[0]] = held.get(row[0]) or HeldDelivery.of_row(row)
    for seq, delivery in held.items():
        seen.setdefault(seq, delivery)
    ready = sorted((d.ready_at, seq) for seq, d in seen.items() if d.ready(now))
    return [(seq, seen[seq]) for _, seq in ready[: max(limit, 0)]]
