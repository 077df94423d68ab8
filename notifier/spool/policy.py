"""Which records are durable and what happens when a queue is full: pure decisions."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

from notifier.records import Kind, Record
from notifier.spool.base import Overflow

K = TypeVar("K")

DEFAULT_DURABLE_KINDS: frozenset[Kind] = frozenset({Kind.ALARM, Kind.CLEAR, Kind.EVENT})


@dataclass(frozen=True, slots=True)
class ReceiverPolicy:
    """Overrides for records from one receiver (`Record.receiver`); None keeps the default."""

    durable_kinds: frozenset[Kind] | None = None
    overflow: Overflow | None = None


@dataclass(frozen=True, slots=True)
class SpoolPolicy:
    """The spool-wide defaults plus per-receiver overrides."""

    durable_kinds: frozenset[Kind] = DEFAULT_DURABLE_KINDS
    overflow: Overflow = Overflow.REJECT
    receivers: Mapping[str, ReceiverPolicy] = field(default_factory=lambda: MappingProxyType({}))
    # Does some consumer want this record (its route's or forward's match)? None: every record
    # is owed to every consumer. A record nobody wants is kept as history only: no delivery,
    # so nobody leases and acks it (decided once, when it is put).
    wanted: Callable[[Record], bool] | None = None

    @classmethod
    def of(
        cls,
        durable_kinds: Collection[Kind | str] = DEFAULT_DURABLE_KINDS,
        overflow: Overflow | str = Overflow.REJECT,
        receivers: Mapping[str, ReceiverPolicy] | None = None,
        wanted: Callable[[Record], bool] | None = None,
    ) -> SpoolPolicy:
        """Build from config values (strings are accepted for kinds and the overflow policy)."""
        return cls(
            frozenset(Kind(k) for k in durable_kinds),
            Overflow(overflow),
            MappingProxyType(dict(receivers or {})),
            wanted,
        )

    def volatile_kinds(self) -> frozenset[Kind]:
        """Kinds that can end up in the memory tier (for some receiver)."""
        always_durable = set(self.durable_kinds)
        for override in self.receivers.values():
            if override.durable_kinds is not None:
                always_durable &= override.durable_kinds
        return frozenset(Kind) - always_durable

    def durable_also(self, kinds: Collection[Kind]) -> SpoolPolicy:
        """This policy with `kinds` durable for every receiver too."""
        receivers = {
            name: replace(r, durable_kinds=r.durable_kinds | frozenset(kinds))
            if r.durable_kinds is not None
            else r
            for name, r in self.receivers.items()
        }
        return replace(
            self,
            durable_kinds=self.durable_kinds | frozenset(kinds),
            receivers=MappingProxyType(receivers),
        )

    def owed(self, records: Iterable[Record]) -> list[Record]:
        """The records some consumer wants, in order (see `wanted`)."""
        wanted = self.wanted
        return list(records) if wanted is None else [r for r in records if wanted(r)]

    def owes(self, records: Sequence[Record]) -> list[bool]:
        """For each record, whether some consumer wants it: asked once per record put, and
        the answer carried through the limits check and the write."""
        wanted = self.wanted
        return [True] * len(records) if wanted is None else [wanted(r) for r in records]

    def is_durable(self, record: Record) -> bool:
        return record.kind in self.durable_kinds_of(record.receiver)

    def durable_kinds_of(self, receiver: str) -> frozenset[Kind]:
        override = self.receivers.get(receiver)
        if override is not None and override.durable_kinds is not None:
            return override.durable_kinds
        return self.durable_kinds

    def split(self, records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
        """(the durable records, the volatile ones), each in the order given.

        Per batch, not per record: a receiver's batch has one receiver and mostly one kind, and
        this runs for every line received."""
        receivers = {r.receiver for r in records}
        if len(receivers) == 1:
            kinds = self.durable_kinds_of(receivers.pop())
            durable = [r for r in records if r.kind in kinds]
            if not durable:
                return durable, list(records)
            return durable, [r for r in records if r.kind not in kinds]
        mixed: tuple[list[Record], list[Record]] = ([], [])
        for r in records:
            mixed[0 if self.is_durable(r) else 1].append(r)
        return mixed

    def overflow_for(self, records: Iterable[Record]) -> Overflow:
        """The policy for a batch: `reject` when any of its receivers says so.

        A mixed batch is refused whole rather than half dropped, so a rejecting sender never
        loses part of what it sent without being told.
        """
        for record in records:
            override = self.receivers.get(record.receiver)
            policy = self.overflow
            if override is not None and override.overflow is not None:
                policy = override.overflow
            if policy is Overflow.REJECT:
                return Overflow.REJECT
        return Overflow.DROP_OLDEST


def as_policy(overflow: Overflow | SpoolPolicy) -> SpoolPolicy:
    return overflow if isinstance(overflow, SpoolPolicy) else SpoolPolicy(overflow=overflow)


def drop_order(
    held: Iterable[tuple[int, K]], incoming: Sequence[Record]
) -> Iterator[tuple[K, None] | tuple[None, int]]:
    """Records in the order `drop_oldest` drops them: lowest kind first, oldest first.

    `held` yields (kind rank, key) already in that order; it is consumed lazily, so a caller
    may pass a database cursor and stop when it has made room. Yields (key, None) for a held
    record and (None, index) for a record of `incoming`. An incoming record is newer than every
    held one, so it goes only when nothing held is of a lower or equal kind: an incoming log
    line never pushes out a stored alarm.
    """
    order = sorted(range(len(incoming)), key=lambda i: (incoming[i].kind.rank, i))
    held_it = iter(held)
    next_held = next(held_it, None)
    pos = 0
    while pos < len(order) or next_held is not None:
        if pos < len(order) and (
            next_held is None or incoming[order[pos]].kind.rank < next_held[0]
        ):
            yield None, order[pos]
            pos += 1
        elif next_held is not None:
            yield next_held[1], None
            next_held = next(held_it, None)


def make_room(
    held: Iterable[tuple[int, tuple[K, int]]],
    incoming: Sequence[Record],
    owes: Sequence[bool],
    sizes: Sequence[int],
    over_entries: int,
    over_bytes: int,
    row_overhead: int,
) -> tuple[list[K], set[int]] | None:
    """What `drop_oldest` drops so that both limits hold: the keys of held records and the
    indexes of `incoming`, in `drop_order`; None if dropping everything would not do.

    `held` yields (kind rank, (key, size)) of records some consumer is owed, in that order;
    `owes` and `sizes` are per incoming record. A held record frees an entry and its bytes.
    An incoming record frees its bytes, and an entry only if some consumer is owed it: one
    nobody wants (history only) takes no entry, so it is dropped only while bytes are needed.
    """
    victims: list[K] = []
    dropped: set[int] = set()
    for key, index in drop_order(held, incoming):
        if over_entries <= 0 and over_bytes <= 0:
            break
        if key is not None:
            victims.append(key[0])
            over_entries -= 1
            over_bytes -= key[1] + row_overhead
        elif index is not None:
            if owes[index]:
                over_entries -= 1
            elif over_bytes <= 0:
                continue  # it would make no room
            dropped.add(index)
            over_bytes -= sizes[index] + row_overhead
    if over_entries > 0 or over_bytes > 0:
        return None
    return victims, dropped


def lowest_first(items: Iterable[tuple[int, int, K]], count: int) -> list[tuple[int, K]]:
    """The `count` smallest (rank, age, key) as (rank, key), for in-memory candidates."""
    return [(rank, key) for rank, _, key in heapq.nsmallest(count, items)]
