"""The spool's tables: what put, lease, ack, nack and the limits do to them.

Used by the writer thread of `SqliteSpool` only, inside the transaction it opened; nothing
here commits except recovery at open. The counters kept in `Counts` spare a COUNT(*) on every
put; a transaction works on a copy that replaces them only once committed.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from notifier.log import get_logger
from notifier.records import Kind, Record
from notifier.spool import schema
from notifier.spool.base import Lease, Overflow, SpoolFull
from notifier.spool.diskspace import is_disk_full
from notifier.spool.drops import DropLedger
from notifier.spool.held import ACKED, COLUMNS, Held, HeldDelivery, pick
from notifier.spool.policy import SpoolPolicy, make_room
from notifier.spool.schema import DEAD, QUEUED, ROW_OVERHEAD

log = get_logger("notifier.spool")

_KIND_BY_RANK = {kind.rank: kind for kind in Kind}
_CHUNK = 500  # ids per IN (...) query
_MAX_ERROR_CHARS = 2000

Outcome = tuple[Any, Exception | None]  # (result, error) of one operation


@dataclass(slots=True)
class Counts:
    """What the writer keeps in memory instead of counting rows on every put."""

    next_seq: int = 1
    held: int = 0  # records some consumer is still owed (the persistent_queue_entries limit)
    rows: int = 0  # records stored, history included
    bytes: int = 0  # sum(size) + rows * ROW_OVERHEAD (the max_disk_bytes limit)
    floor: int = 0  # delivered records with seq <= floor are outside the history window
    queued: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)

    def copy(self) -> Counts:
        return replace(self, queued=self.queued.copy(), dead=self.dead.copy())


@dataclass(slots=True)
class Txn:
    counts: Counts
    now: float
    after: list[Callable[[], None]] = field(default_factory=list)  # run once committed
    inserted: int = 0
    inserted_bytes: int = 0  # what the records take, for the checkpoint schedule
    notify: bool = False


@dataclass(slots=True)
class Snapshot:
    depth: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_ready_age_s: dict[str, float] = field(default_factory=dict)
    disk_bytes: int = 0
    taken_at: float = 0.0


@dataclass(slots=True)
class _Staged:
    """Rows of accepted puts, written with one statement per table."""

    records: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)


# A put's records encoded for their row (`schema.encode`), by record id.
Encodings = Mapping[str, tuple[str, bytes]]


def encodings(records: Sequence[Record]) -> Encodings:
    return {r.id: schema.encode(r) for r in records}


def _fresh(records: Sequence[Record], stored: Container[str]) -> list[Record]:
    """The records not stored yet, each id once: a retried put stores nothing twice."""
    return [r for rid, r in {r.id: r for r in records}.items() if rid not in stored]


class Store:
    """The spool's tables on the writer's connection, with the counters that bound them."""

    def __init__(
        self,
        path: Path,
        consumers: list[str],
        max_entries: int,
        max_bytes: int,
        policy: SpoolPolicy,
        history_entries: int,
        drops: DropLedger,
    ) -> None:
        self.path = path
        self._consumers = consumers
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._policy = policy
        self._history_entries = history_entries
        self._drops = drops
        self.conn: sqlite3.Connection | None = None
        self.counts = Counts()
        self.snapshot = Snapshot()
        self.rejected = 0
        self._data_version = 0
        self.held = Held()  # deliveries changed while the disk was full, not written yet

    def open(self) -> None:
        """Connect (on the writer thread), create the tables, recover."""
        self.conn = schema.connect(self.path)
        try:
            schema.create(self.conn)
            self._recover()
        except BaseException:
            self.conn.close()
            raise

    def begin(self, now: float) -> Txn:
        return Txn(self.counts.copy(), now)

    def run(self, txn: Txn, fn: Callable[..., Any], args: tuple[Any, ...]) -> Outcome:
        """One operation in a savepoint: if it fails, it alone is undone."""
        conn = self.conn
        assert conn is not None
        counts, n_after = txn.counts.copy(), len(txn.after)
        inserted, inserted_bytes, notify = txn.inserted, txn.inserted_bytes, txn.notify
        conn.execute("SAVEPOINT op")
        try:
            result = fn(txn, *args)
        except Exception as e:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            txn.counts, txn.inserted, txn.notify = counts, inserted, notify
            txn.inserted_bytes = inserted_bytes
            del txn.after[n_after:]
            return None, e
        conn.execute("RELEASE op")
        return result, None

    def _recover(self) -> None:
        """Void the previous process's leases and count what the file holds."""
        conn = self.conn
        assert conn is not None
        now = time.time()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for consumer in self._consumers:
                # Ready at time 0: first in line again, as they were when leased.
                conn.execute(
                    "UPDATE deliveries SET leased = 0, ready_at = 0 "
                    "WHERE consumer = ? AND state = ? AND ready_at > ? AND leased = 1",
                    (consumer, QUEUED, now),
                )
            self.counts = self._count()
            self._prune_range(self.counts, 0, self.counts.floor)
            known = sorted({*self._consumers, *self.counts.queued, *self.counts.dead})
            conn.execute(
                "INSERT INTO meta VALUES ('consumers', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (json.dumps(known),),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            schema.rollback(conn)
            if not is_disk_full(e):
                raise
            self._recover_held(now)
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        strangers = {c for c in (*self.counts.queued, *self.counts.dead)} - set(self._consumers)
        for stranger in sorted(strangers):
            log.warning(
                "spool holds deliveries for a consumer that is not configured",
                consumer=stranger,
                queued=self.counts.queued[stranger],
                dead=self.counts.dead[stranger],
                hint="they count against the queue limit: configure the destination again, "
                "or drop them with `notifier spool purge --consumer NAME`",
            )

    def _recover_held(self, now: float) -> None:
        """`_recover` on a full disk: the leases are voided in memory (held), so what the
        file holds is delivered all the same; they are written once there is room."""
        conn = self.conn
        assert conn is not None
        for consumer in self._consumers:
            held = self.held.of(consumer)
            for row in conn.execute(
                f"SELECT {COLUMNS} FROM deliveries "
                "WHERE consumer = ? AND state = ? AND ready_at > ? AND leased = 1",
                (consumer, QUEUED, now),
            ):
                delivery = held[row[0]] = HeldDelivery.of_row(row)
                delivery.leased, delivery.ready_at = False, 0.0
        self.counts = self._count()

    def _count(self) -> Counts:
        conn = self.conn
        assert conn is not None
        c = Counts()
        for consumer, state, n in conn.execute(
            "SELECT consumer, state, COUNT(*) FROM deliveries GROUP BY consumer, state"
        ):
            (c.dead if state == DEAD else c.queued)[consumer] = n
        c.held = conn.execute("SELECT COUNT(*) FROM records WHERE pending > 0").fetchone()[0]
        rows, size, max_seq = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(seq), 0) FROM records"
        ).fetchone()
        c.rows, c.bytes, c.next_seq = rows, size + rows * ROW_OVERHEAD, max_seq + 1
        c.floor = max_seq - self._history_entries
        return c

    def changed_elsewhere(self) -> bool:
        """Whether another process (the CLI) committed since we looked; counts again if so."""
        conn = self.conn
        assert conn is not None
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return False
        self._data_version = version
        self.counts = self._count()
        return True

    def take_snapshot(self) -> None:
        conn = self.conn
        assert conn is not None
        now = time.time()
        snap = Snapshot(taken_at=now)
        for consumer in sorted({*self._consumers, *self.counts.queued, *self.counts.dead}):
            totals = self.counts.queued[consumer], self.counts.dead[consumer]
            d = schema.consumer_depth(conn, consumer, now, totals)
            snap.depth.update(
                {
                    (consumer, "ready"): d.ready,
                    (consumer, "leased"): d.leased,
                    (consumer, "retry"): d.retry,
                    (consumer, "dead"): d.dead,
                }
            )
            if d.oldest_ready_age_s is not None:
                snap.oldest_ready_age_s[consumer] = d.oldest_ready_age_s
        snap.disk_bytes = schema.spool_bytes(self.path)
        self.snapshot = snap

    def snapshot_after(self, txn: Txn) -> None:
        txn.after.append(self.take_snapshot)  # once committed, so the counts are current

    # -- operations (writer thread, inside a transaction) --------------------------------------

    def _seqs(self, record_ids: Iterable[str]) -> dict[str, int]:
        conn = self.conn
        assert conn is not None
        out: dict[str, int] = {}
        ids = list(dict.fromkeys(record_ids))
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            out.update(conn.execute(f"SELECT id, seq FROM records WHERE id IN ({marks})", chunk))
        return out

    def put_group(self, txn: Txn, puts: list[tuple[list[Record], Encodings]]) -> list[Outcome]:
        """Consecutive puts as one set of statements: the common case, far from any limit.

        Each put is its records and their encodings (`schema.encode`, by record id), made on
        the caller's thread so the writer holds the interpreter lock for less. A put that
        would reach a limit takes the general path (`put`, in a savepoint) after what is
        staged so far is written, so it sees the queue as it is.
        """
        c = txn.counts
        stored: set[str] = set(self._seqs(r.id for batch, _ in puts for r in batch))
        staged = _Staged()
        results: list[Outcome] = []
        for batch, encoded_by_id in puts:
            fresh = _fresh(batch, stored)
            owes, encoded, sizes = self._rows_of(fresh, encoded_by_id)
            over_entries, over_bytes = self._over(c, owes, sizes)
            if over_entries > 0 or over_bytes > 0:
                self._write(txn, staged)
                staged = _Staged()
                result = self.run(txn, self.put, (batch, encoded_by_id))
                if result[1] is None:
                    stored.update(r.id for r in batch)
                results.append(result)
                continue
            self._stage(c, fresh, owes, encoded, sizes, staged, txn.now)
            stored.update(r.id for r in fresh)
            results.append((len(fresh), None))
        self._write(txn, staged)
        return results

    def put(self, txn: Txn, records: list[Record], encoded_by_id: Encodings) -> int:
        """One put near a limit: reject it, or drop to make room (see `_make_room`)."""
        c = txn.counts
        fresh = _fresh(records, self._seqs(r.id for r in records))
        if not fresh:
            return 0
        owes, encoded, sizes = self._rows_of(fresh, encoded_by_id)
        over_entries, over_bytes = self._over(c, owes, sizes)
        if over_entries > 0 or over_bytes > 0:
            cause = "queue_full" if over_entries > 0 else "disk_full"
            if self._policy.overflow_for(fresh) is Overflow.REJECT:
                self.rejected += len(fresh)
                raise SpoolFull(_full_message(cause, self._max_entries, self._max_bytes))
            dropped = self._make_room(txn, cause, fresh, owes, sizes, over_entries, over_bytes)
            txn.notify = True  # a drop notice may be due
            keep = [i for i in range(len(fresh)) if i not in dropped]
            fresh = [fresh[i] for i in keep]
            owes = [owes[i] for i in keep]
            encoded = [encoded[i] for i in keep]
            sizes = [sizes[i] for i in keep]
        staged = _Staged()
        self._stage(c, fresh, owes, encoded, sizes, staged, txn.now)
        self._write(txn, staged)
        return len(fresh)

    def _rows_of(
        self, fresh: list[Record], encoded_by_id: Encodings
    ) -> tuple[list[bool], list[tuple[str, bytes]], list[int]]:
        """For each record: whether some consumer wants it, its row's (data, raw), its size."""
        encoded = [encoded_by_id[r.id] for r in fresh]
        return self._policy.owes(fresh), encoded, [len(data) + len(raw) for data, raw in encoded]

    def _over(self, c: Counts, owes: list[bool], sizes: list[int]) -> tuple[int, int]:
        """By how many entries and bytes records of `sizes` would exceed the limits (<= 0:
        it fits). Entries are what some consumer is owed (`owes`, per record); a history-only
        record takes bytes only."""
        owed = sum(owes) if self._consumers else 0
        entries = c.held + owed - self._max_entries if owed else 0
        return entries, c.bytes + sum(sizes) + len(sizes) * ROW_OVERHEAD - self._max_bytes

    def _stage(
        self,
        c: Counts,
        fresh: list[Record],
        owes: list[bool],
        encoded: list[tuple[str, bytes]],
        sizes: list[int],
        staged: _Staged,
        now: float,
    ) -> None:
        consumers = len(self._consumers)
        held = 0
        for r, wanted, (data, raw), size in zip(fresh, owes, encoded, sizes, strict=True):
            # A record nobody wants is history only: no delivery (`SpoolPolicy.wanted`).
            owed = consumers if wanted else 0
            staged.records.append(
                (c.next_seq, r.id, r.kind.rank, r.received_at, owed, size, data, raw)
            )
            if owed:
                staged.deliveries += [
                    (consumer, c.next_seq, QUEUED, now) for consumer in self._consumers
                ]
                held += 1
            c.next_seq += 1
        n = len(fresh)
        c.rows += n
        c.bytes += sum(sizes) + n * ROW_OVERHEAD
        if held:
            c.held += held
            for consumer in self._consumers:
                c.queued[consumer] += held

    def _write(self, txn: Txn, staged: _Staged) -> None:
        if not staged.records:
            return
        conn = self.conn
        assert conn is not None
        conn.executemany(
            "INSERT INTO records (seq, id, kind, received_at, pending, size, data, raw) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            staged.records,
        )
        conn.executemany(
            "INSERT INTO deliveries (consumer, seq, state, ready_at) VALUES (?, ?, ?, ?)",
            staged.deliveries,
        )
        txn.inserted += len(staged.records)
        txn.inserted_bytes += sum(row[5] for row in staged.records) + ROW_OVERHEAD * len(
            staged.records
        )
        # Consumers wake for what they are owed: records nobody wants (history only) wake
        # nobody, or every put would cost each route an empty lease.
        txn.notify = txn.notify or bool(staged.deliveries)

    def leave_history(self, c: Counts) -> None:
        """Delete delivered records that the newest `history_entries` pushed out."""
        new_floor = c.next_seq - 1 - self._history_entries
        if new_floor > c.floor:
            self._prune_range(c, c.floor, new_floor)
            c.floor = new_floor

    def _make_room(
        self,
        txn: Txn,
        cause: str,
        incoming: list[Record],
        owes: list[bool],
        sizes: list[int],
        over_entries: int,
        over_bytes: int,
    ) -> set[int]:
        """Drop held and incoming records, lowest kind and oldest first, until both limits
        hold; returns the indexes of `incoming` that were dropped."""
        conn = self.conn
        assert conn is not None
        cursor = conn.execute(
            "SELECT kind, seq, size FROM records WHERE pending > 0 ORDER BY kind, seq"
        )
        held = ((kind, (seq, size)) for kind, seq, size in cursor)
        room = make_room(held, incoming, owes, sizes, over_entries, over_bytes, ROW_OVERHEAD)
        cursor.close()
        if room is None:
            raise SpoolFull(
                f"a batch of {len(incoming)} records does not fit in the spool at all: "
                "send smaller batches or raise the spool limits"
            )
        victims, dropped = room
        kinds: Counter[Kind] = Counter(incoming[i].kind for i in dropped)
        lost = self._policy.owed(incoming[i] for i in sorted(dropped))  # what consumers miss
        owed: dict[str, Counter[Kind]] = {
            consumer: Counter(r.kind for r in lost) for consumer in self._consumers
        }
        c = txn.counts
        for seq in victims:
            kind = _KIND_BY_RANK[
                conn.execute("SELECT kind FROM records WHERE seq = ?", (seq,)).fetchone()[0]
            ]
            kinds[kind] += 1
            for consumer in list(self._consumers) + [
                s for s in (*c.queued, *c.dead) if s not in self._consumers
            ]:
                row = conn.execute(
                    "DELETE FROM deliveries WHERE consumer = ? AND seq = ? RETURNING state",
                    (consumer, seq),
                ).fetchone()
                if row is None:
                    continue
                (c.dead if row[0] == DEAD else c.queued)[consumer] -= 1
                owed.setdefault(consumer, Counter())[kind] += 1
            conn.execute("UPDATE records SET pending = 0 WHERE seq = ?", (seq,))
            c.held -= 1
        # Dropped records leave at once: the space is what was asked for.
        self._delete(c, victims, only_outside_history=False)
        reasons = Counter({f"{cause}_{kind.value}": n for kind, n in kinds.items()})
        conn.executemany(
            "INSERT INTO drops (reason, n) VALUES (?, ?) "
            "ON CONFLICT (reason) DO UPDATE SET n = n + excluded.n",
            list(reasons.items()),
        )
        txn.after.append(lambda: self._drops.dropped(cause, kinds, owed))
        return dropped

    def lease(
        self, txn: Txn, consumer: str, limit: int, visibility_s: float
    ) -> tuple[list[Lease], float | None]:
        conn = self.conn
        assert conn is not None
        rows = conn.execute(
            "SELECT seq, attempts, last_error FROM deliveries "
            "WHERE consumer = ? AND state = ? AND ready_at <= ? ORDER BY ready_at, seq LIMIT ?",
            (consumer, QUEUED, txn.now, max(limit, 0)),
        ).fetchall()
        if not rows:
            (next_due,) = conn.execute(
                "SELECT MIN(ready_at) FROM deliveries WHERE consumer = ? AND state = ?",
                (consumer, QUEUED),
            ).fetchone()
            return [], next_due
        until = txn.now + visibility_s
        conn.executemany(
            "UPDATE deliveries SET leased = 1, ready_at = ?, attempts = attempts + 1 "
            "WHERE consumer = ? AND seq = ?",
            [(until, consumer, seq) for seq, _, _ in rows],
        )
        return self._leases(consumer, rows), None

    def _leases(self, consumer: str, rows: list[tuple[int, int, str]]) -> list[Lease]:
        """Leases of (seq, attempts before this lease, last error), their records read."""
        conn = self.conn
        assert conn is not None
        records: dict[int, Record] = {}
        for start in range(0, len(rows), _CHUNK):
            chunk = [seq for seq, _, _ in rows[start : start + _CHUNK]]
            marks = ",".join("?" * len(chunk))
            for seq, data, raw in conn.execute(
                f"SELECT seq, data, raw FROM records WHERE seq IN ({marks})", chunk
            ):
                records[seq] = schema.decode(data, raw)
        return [
            Lease(records[seq], consumer, attempts, last_error)
            for seq, attempts, last_error in rows
        ]

    def extend(self, txn: Txn, consumer: str, record_ids: list[str], visibility_s: float) -> None:
        conn = self.conn
        assert conn is not None
        until = txn.now + visibility_s
        conn.executemany(
            "UPDATE deliveries SET ready_at = ? "
            "WHERE consumer = ? AND seq = ? AND state = ? AND leased = 1",
            [(until, consumer, seq, QUEUED) for seq in self._seqs(record_ids).values()],
        )

    def ack(self, txn: Txn, consumer: str, record_ids: list[str]) -> None:
        self._ack_seqs(txn, consumer, self._seqs(record_ids).values())

    def _ack_seqs(self, txn: Txn, consumer: str, seqs: Iterable[int]) -> None:
        conn = self.conn
        assert conn is not None
        c = txn.counts
        settled: list[int] = []
        for seq in seqs:
            row = conn.execute(
                "DELETE FROM deliveries WHERE consumer = ? AND seq = ? RETURNING state",
                (consumer, seq),
            ).fetchone()
            if row is None:
                continue  # acked before, or dropped
            (c.dead if row[0] == DEAD else c.queued)[consumer] -= 1
            (pending,) = conn.execute(
                "UPDATE records SET pending = pending - 1 WHERE seq = ? RETURNING pending", (seq,)
            ).fetchone()
            if pending == 0:
                c.held -= 1
                settled.append(seq)
        self._delete(c, settled, only_outside_history=True)

    def nack(
        self,
        txn: Txn,
        consumer: str,
        record_ids: list[str],
        error: str,
        retry_in_s: float | None,
    ) -> None:
        conn = self.conn
        assert conn is not None
        c = txn.counts
        state = DEAD if retry_in_s is None else QUEUED
        ready_at = txn.now + (retry_in_s or 0.0)
        for seq in self._seqs(record_ids).values():
            row = conn.execute(
                "UPDATE deliveries SET leased = 0, state = ?, ready_at = ?, last_error = ? "
                "WHERE consumer = ? AND seq = ? AND state = ? RETURNING 1",
                (state, ready_at, error[:_MAX_ERROR_CHARS], consumer, seq, QUEUED),
            ).fetchone()
            if row is not None and state == DEAD:
                c.queued[consumer] -= 1
                c.dead[consumer] += 1

    def retry_now(self, txn: Txn, consumer: str) -> int:
        """Deliveries of `consumer` waiting for a later retry become ready now; returns how many."""
        conn = self.conn
        assert conn is not None
        cursor = conn.execute(
            "UPDATE deliveries SET ready_at = ? "
            "WHERE consumer = ? AND state = ? AND leased = 0 AND ready_at > ?",
            (txn.now, consumer, QUEUED, txn.now),
        )
        return int(cursor.rowcount)

    # -- while the disk is full: read the rows, hold the changes (see held.py) -----------------

    def held_lease(
        self, txn: Txn, consumer: str, limit: int, visibility_s: float
    ) -> tuple[list[Lease], float | None]:
        """`lease` without a write: the lease is held in memory."""
        conn = self.conn
        assert conn is not None
        held = self.held.of(consumer)
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM deliveries "
            "WHERE consumer = ? AND state = ? AND ready_at <= ? ORDER BY ready_at, seq LIMIT ?",
            (consumer, QUEUED, txn.now, max(limit, 0) + len(held)),
        ).fetchall()
        picked = pick(rows, held, txn.now, limit)
        if not picked:
            return [], self._held_next_due(consumer, held)
        leased: list[tuple[int, int, str]] = []
        for seq, delivery in picked:
            leased.append((seq, delivery.attempts, delivery.last_error))
            delivery.leased, delivery.ready_at = True, txn.now + visibility_s
            delivery.attempts += 1
            held[seq] = delivery
        return self._leases(consumer, leased), None

    def _held_next_due(self, consumer: str, held: dict[int, HeldDelivery]) -> float | None:
        conn = self.conn
        assert conn is not None
        rows = conn.execute(
            "SELECT seq, ready_at FROM deliveries WHERE consumer = ? AND state = ? "
            "ORDER BY ready_at LIMIT ?",
            (consumer, QUEUED, len(held) + 1),
        )
        due = [ready_at for seq, ready_at in rows if seq not in held]
        due += [d.ready_at for d in held.values() if d.state == QUEUED]
        return min(due, default=None)

    def _held_delivery(self, consumer: str, seq: int) -> HeldDelivery | None:
        held = self.held.of(consumer)
        delivery = held.get(seq)
        if delivery is None:
            conn = self.conn
            assert conn is not None
            row = conn.execute(
                f"SELECT {COLUMNS} FROM deliveries WHERE consumer = ? AND seq = ?",
                (consumer, seq),
            ).fetchone()
            if row is None:
                return None
            delivery = held[seq] = HeldDelivery.of_row(row)
        return delivery

    def _held_deliveries(self, consumer: str, record_ids: list[str]) -> list[HeldDelivery]:
        found = (self._held_delivery(consumer, seq) for seq in self._seqs(record_ids).values())
        return [d for d in found if d is not None and d.state == QUEUED]

    def held_extend(
        self, txn: Txn, consumer: str, record_ids: list[str], visibility_s: float
    ) -> None:
        for delivery in self._held_deliveries(consumer, record_ids):
            if delivery.leased:
                delivery.ready_at = txn.now + visibility_s

    def held_ack(self, txn: Txn, consumer: str, record_ids: list[str]) -> None:
        for delivery in self._held_deliveries(consumer, record_ids):
            delivery.state = ACKED

    def held_nack(
        self,
        txn: Txn,
        consumer: str,
        record_ids: list[str],
        error: str,
        retry_in_s: float | None,
    ) -> None:
        for delivery in self._held_deliveries(consumer, record_ids):
            delivery.leased = False
            delivery.ready_at = txn.now + (retry_in_s or 0.0)
            delivery.last_error = error[:_MAX_ERROR_CHARS]
            if retry_in_s is None:
                delivery.state = DEAD

    def held_retry_now(self, txn: Txn, consumer: str) -> int:
        conn = self.conn
        assert conn is not None
        waiting = conn.execute(
            "SELECT seq FROM deliveries "
            "WHERE consumer = ? AND state = ? AND leased = 0 AND ready_at > ?",
            (consumer, QUEUED, txn.now),
        ).fetchall()
        for (seq,) in waiting:
            self._held_delivery(consumer, seq)
        count = 0
        for delivery in self.held.of(consumer).values():
            if delivery.state == QUEUED and not delivery.leased and delivery.ready_at > txn.now:
                delivery.ready_at = txn.now
                count += 1
        return count

    def write_held(self, txn: Txn) -> int:
        """Write the held changes (space is back); returns how many. `held` is cleared once
        the transaction is committed."""
        conn = self.conn
        assert conn is not None
        c = txn.counts
        for consumer, held in self.held.by_consumer.items():
            self._ack_seqs(txn, consumer, [seq for seq, d in held.items() if d.state == ACKED])
            for seq, d in held.items():
                if d.state == ACKED:
                    continue
                values = (d.state, d.ready_at, int(d.leased), d.attempts, d.last_error)
                row = conn.execute(
                    "UPDATE deliveries SET state = ?, ready_at = ?, leased = ?, attempts = ?, "
                    "last_error = ? WHERE consumer = ? AND seq = ? AND state = ? RETURNING 1",
                    (*values, consumer, seq, QUEUED),
                ).fetchone()
                if row is not None and d.state == DEAD:
                    c.queued[consumer] -= 1
                    c.dead[consumer] += 1
        txn.after.append(self.held.clear)
        return len(self.held)

    def prune_delivered(self, txn: Txn) -> int:
        """Delete every delivered record, history included: room for alarms matters more than
        the history page when the disk is full. Returns how many."""
        conn = self.conn
        assert conn is not None
        c = txn.counts
        sizes = conn.execute("DELETE FROM records WHERE pending = 0 RETURNING size").fetchall()
        c.rows -= len(sizes)
        c.bytes -= sum(size for (size,) in sizes) + len(sizes) * ROW_OVERHEAD
        return len(sizes)

    def _delete(self, c: Counts, seqs: list[int], *, only_outside_history: bool) -> None:
        """Delete settled records (pending = 0), keeping the history window if asked."""
        conn = self.conn
        assert conn is not None
        limit = c.floor if only_outside_history else math.inf
        for seq in seqs:
            if seq > limit:
                continue
            row = conn.execute(
                "DELETE FROM records WHERE seq = ? AND pending = 0 RETURNING size", (seq,)
            ).fetchone()
            if row is not None:
                c.rows -= 1
                c.bytes -= row[0] + ROW_OVERHEAD

    def _prune_range(self, c: Counts, after: int, upto: int) -> None:
        """Delete delivered records with after < seq <= upto: they left the history window."""
        if upto <= after:
            return
        conn = self.conn
        assert conn is not None
        sizes = conn.execute(
            "DELETE FROM records WHERE seq > ? AND seq <= ? AND pending = 0 RETURNING size",
            (after, upto),
        ).fetchall()
        c.rows -= len(sizes)
        c.bytes -= sum(size for (size,) in sizes) + len(sizes) * ROW_OVERHEAD


def _full_message(cause: str, max_entries: int, max_bytes: int) -> str:
    if cause == "queue_full":
        return (
            f"persistent queue full ({max_entries} entries): retry later "
            "(or raise spool.persistent_queue_entries)"
        )
    return f"spool disk limit reached ({max_bytes} bytes): retry later (or raise max_disk_bytes)"
