"""The durable spool: SQLite in WAL mode, one writer thread, group commit.

One thread owns the write connection (sqlite3 blocks; the event loop must not). Callers enqueue
operations; the thread takes everything waiting, runs it as one transaction (a savepoint per
operation, so one failing operation does not undo the others), commits once and then resolves
every caller. Many concurrent puts therefore share one fsync.

Leases are written without an fsync: a lease lost in a crash only means the record is ready
again, which is what a crash means anyway. Puts, acks and nacks are fsynced before they return
(synchronous=FULL by default; NORMAL survives a process crash but not a power cut).

Times in the file are unix seconds, so a lease or retry time survives a restart. A restart voids
the leases of the previous process at once (only one process may own the spool: a lock file).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import math
import os
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from notifier.log import get_logger
from notifier.metrics import Metrics
from notifier.records import Kind, Record
from notifier.spool import schema
from notifier.spool.base import (
    DropNotice,
    Lease,
    Overflow,
    SpoolError,
    SpoolFull,
    SpoolStats,
)
from notifier.spool.drops import DropLedger
from notifier.spool.policy import SpoolPolicy, as_policy, drop_order
from notifier.spool.schema import DEAD, QUEUED, ROW_OVERHEAD
from notifier.spool.wake import Waker

log = get_logger("notifier.spool")

_KIND_BY_RANK = {kind.rank: kind for kind in Kind}
_MAX_OPS_PER_COMMIT = 2000
_CHUNK = 500  # ids per IN (...) query
_MAX_ERROR_CHARS = 2000


@dataclass(slots=True)
class _Counts:
    """What the writer keeps in memory instead of counting rows on every put."""

    next_seq: int = 1
    held: int = 0  # records some consumer is still owed (the persistent_queue_entries limit)
    rows: int = 0  # records stored, history included
    bytes: int = 0  # sum(size) + rows * ROW_OVERHEAD (the max_disk_bytes limit)
    floor: int = 0  # delivered records with seq <= floor are outside the history window
    queued: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)

    def copy(self) -> _Counts:
        return replace(self, queued=self.queued.copy(), dead=self.dead.copy())


@dataclass(slots=True)
class _Txn:
    counts: _Counts
    now: float
    after: list[Callable[[], None]] = field(default_factory=list)  # run once committed
    inserted: int = 0
    notify: bool = False


@dataclass(slots=True)
class _Op:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any] | None
    durable: bool


@dataclass(slots=True)
class _Snapshot:
    depth: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_ready_age_s: dict[str, float] = field(default_factory=dict)
    disk_bytes: int = 0
    taken_at: float = 0.0


@dataclass(slots=True)
class _Staged:
    """Rows of accepted puts, written with one statement per table."""

    records: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)


def _fresh(records: Sequence[Record], stored: Container[str]) -> list[Record]:
    """The records not stored yet, each id once: a retried put stores nothing twice."""
    return [r for rid, r in {r.id: r for r in records}.items() if rid not in stored]


_STOP = object()
_Result = tuple["asyncio.Future[Any] | None", Any, "BaseException | None"]


class SqliteSpool:
    """Durable queues in one SQLite file; see the module docstring.

    `max_entries` bounds records not yet delivered to every consumer (dead letters included),
    `max_disk_bytes` the bytes of stored records (an estimate: the file also holds free pages
    SQLite reuses and a WAL of a few MB). `overflow` is one policy, or a `SpoolPolicy` whose
    per-receiver overrides apply. `history_entries` delivered records stay readable.
    """

    def __init__(
        self,
        path: str | Path,
        consumers: Sequence[str],
        max_entries: int = 100_000,
        max_disk_bytes: int = 1 << 30,
        overflow: Overflow | SpoolPolicy = Overflow.REJECT,
        history_entries: int = 1000,
        *,
        metrics: Metrics | None = None,
        waker: Waker | None = None,
        synchronous: str = "FULL",
        stats_interval_s: float = 2.0,
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous={synchronous!r}: use FULL, NORMAL or EXTRA")
        self.path = Path(path)
        self._wal = Path(f"{self.path}-wal")
        self._consumers = list(dict.fromkeys(consumers))
        self._max_entries = max_entries
        self._max_bytes = max_disk_bytes
        self._policy = as_policy(overflow)
        self._history_entries = max(0, history_entries)
        self._metrics = metrics
        self._waker = waker or Waker()
        self._sync = synchronous.upper()
        self._stats_interval = stats_interval_s
        self._drops = DropLedger(self._consumers, "disk", metrics)
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._counts = _Counts()
        self._snapshot = _Snapshot()
        self._rejected = 0
        self._commits = 0
        self._fsyncs = 0
        self._records_committed = 0
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open = False
        self._data_version = 0
        self._sync_now = ""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (creating) the file and recover: every record not acked is queued again."""
        if self._open:
            return
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.path)
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="spool-writer", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except BaseException:
            self._unlock()
            raise
        reader = schema.connect(self.path, check_same_thread=False)
        reader.execute("PRAGMA query_only = ON")
        self._reader = reader
        self._open = True
        self._waker.notify()

    async def close(self) -> None:
        """Finish what was enqueued, close the file; puts after this raise `SpoolFull`."""
        if not self._open:
            return
        self._open = False
        assert self._loop is not None and self._thread is not None
        done: asyncio.Future[None] = self._loop.create_future()
        self._queue.put(_Op(lambda _txn: None, (), done, durable=True))
        self._queue.put(_STOP)
        with contextlib.suppress(SpoolError):
            await done
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the public operations ---------------------------------------------------------------

    async def put(self, records: Sequence[Record]) -> None:
        """Store `records`; returns once they are committed and fsynced.

        A record whose id is already stored is not stored again (a retried put is harmless).
        Raises `SpoolFull` when a limit is reached under `reject` (nothing is stored then), or
        when the disk write failed (the sender should retry later).
        """
        if not records:
            return
        if not self._open:
            raise SpoolFull("spool is closed", retry_after_s=10)
        await self._submit(self._op_put, (list(records),), durable=True)

    async def lease(self, consumer: str, limit: int, visibility_s: float) -> list[Lease]:
        """Up to `limit` ready records, in the order they became ready (arrival, retry time or
        lease expiry), then arrival; hidden from further leases for `visibility_s`."""
        self._check_consumer(consumer)
        leases, next_due = await self._submit(
            self._op_lease, (consumer, limit, visibility_s), durable=False
        )
        if leases:
            self._waker.due_in(consumer, visibility_s)
        else:
            self._waker.idle(consumer, None if next_due is None else next_due - time.time())
        return list(leases)

    async def wait(self, timeout: float, consumer: str | None = None) -> None:
        await self._waker.wait(timeout, consumer)

    async def extend(self, consumer: str, record_ids: Sequence[str], visibility_s: float) -> None:
        self._check_consumer(consumer)
        await self._submit(self._op_extend, (consumer, list(record_ids), visibility_s), False)

    async def ack(self, consumer: str, record_ids: Sequence[str]) -> None:
        """Delivered: committed and fsynced when this returns; never leased to `consumer` again."""
        self._check_consumer(consumer)
        await self._submit(self._op_ack, (consumer, list(record_ids)), durable=True)

    async def nack(
        self, consumer: str, record_ids: Sequence[str], *, error: str, retry_in_s: float | None
    ) -> None:
        """Not delivered: ready again in `retry_in_s`, or a dead letter (with `error`) if None."""
        self._check_consumer(consumer)
        await self._submit(
            self._op_nack, (consumer, list(record_ids), error, retry_in_s), durable=True
        )
        if retry_in_s is not None:
            self._waker.due_in(consumer, retry_in_s)

    def history(self, limit: int) -> list[Record]:
        """The newest records (at most `history_entries`), newest first; read from disk."""
        limit = min(limit, max(self._history_entries, 0))
        if limit <= 0:
            return []
        with self._reader_lock:
            if self._reader is None:
                return []
            rows = self._reader.execute(
                "SELECT data, raw FROM records ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [schema.decode(data, raw) for data, raw in rows]

    def take_drop_notice(self, consumer: str) -> DropNotice | None:
        return self._drops.take(consumer)

    def stats(self) -> SpoolStats:
        """Counters are live; depths and ages are at most `stats_interval_s` old."""
        snap = self._snapshot
        return SpoolStats(
            depth=dict(snap.depth),
            oldest_ready_age_s=dict(snap.oldest_ready_age_s),
            persistent_entries=self._counts.held,
            disk_bytes=snap.disk_bytes,
            dropped=self._drops.totals(),
            rejected=self._rejected,
            commits=self._commits,
            fsyncs=self._fsyncs,
            records_committed=self._records_committed,
        )

    async def refresh_stats(self) -> SpoolStats:
        """`stats()` with depths counted now."""
        await self._submit(self._op_snapshot, (), durable=False)
        return self.stats()

    # -- plumbing between the loop and the writer --------------------------------------------

    def _check_consumer(self, consumer: str) -> None:
        if consumer not in self._consumers:
            raise ValueError(
                f"unknown spool consumer {consumer!r}: the spool was opened for "
                f"{', '.join(map(repr, self._consumers)) or 'no consumers'}"
            )

    async def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], durable: bool) -> Any:
        if not self._open or self._loop is None:
            raise SpoolError(f"spool {self.path} is not open")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put(_Op(fn, args, future, durable))
        return await future

    def _resolve(
        self,
        results: list[_Result],
        notify: bool,
    ) -> None:
        """On the loop: hand each caller its result."""
        for future, result, error in results:
            if future is None or future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        if notify:
            self._waker.notify()

    def _post(
        self,
        results: list[_Result],
        notify: bool,
    ) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self._loop.call_soon_threadsafe(self._resolve, results, notify)

    # -- the writer thread ---------------------------------------------------------------

    def _run(self, ready: asyncio.Future[None]) -> None:
        try:
            self._conn = schema.connect(self.path)
            schema.create(self._conn)
            self._recover()
        except Exception as e:
            if self._conn is not None:
                self._conn.close()
            self._post([(ready, None, SpoolError(f"cannot open spool {self.path}: {e}"))], False)
            return
        self._post([(ready, None, None)], False)
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._idle()
                continue
            ops: list[_Op] = []
            item: _Op | object = first
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Op):
                    ops.append(item)
                if len(ops) >= _MAX_OPS_PER_COMMIT:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if ops:
                self._process(ops)
            if time.time() - self._snapshot.taken_at >= self._stats_interval:
                self._guarded(self._take_snapshot)
        self._conn.close()
        # Anything enqueued after the stop (a race with close) must not hang its caller.
        leftover: list[_Result] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Op):
                leftover.append((item.future, None, SpoolError("spool is closed")))
        if leftover:
            self._post(leftover, False)

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except sqlite3.Error as e:
            log.error("spool housekeeping failed", path=str(self.path), error=str(e))

    def _idle(self) -> None:
        self._guarded(self._check_external_change)
        if time.time() - self._snapshot.taken_at >= self._stats_interval:
            self._guarded(self._take_snapshot)

    def _process(self, ops: list[_Op]) -> None:
        conn = self._conn
        assert conn is not None
        durable = any(op.durable for op in ops)
        results: list[_Result] = []
        try:
            self._check_external_change()
            want = self._sync if durable else "OFF"
            if want != self._sync_now:
                conn.execute(f"PRAGMA synchronous = {want}")
                self._sync_now = want
            txn = _Txn(self._counts.copy(), time.time())
            conn.execute("BEGIN IMMEDIATE")
            for is_put, run in itertools.groupby(ops, key=lambda op: op.fn == self._op_put):
                if is_put:
                    results += self._put_group(txn, list(run))
                else:
                    results += [self._run_op(txn, op) for op in run]
            self._leave_history(txn.counts)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            log.error("spool commit failed", path=str(self.path), error=str(e))
            failed: list[_Result] = [(op.future, None, _storage_error(op, e)) for op in ops]
            self._post(failed, False)
            return
        self._counts = txn.counts
        self._commits += 1
        if durable:
            self._fsyncs += 1
        self._records_committed += txn.inserted
        if self._metrics is not None:
            if durable:
                self._metrics.spool_fsyncs.inc()
            if txn.inserted:
                self._metrics.spool_records_per_commit.observe(txn.inserted)
        for action in txn.after:
            action()
        self._post(results, txn.notify)
        if durable and _size(self._wal) > schema.WAL_CHECKPOINT_BYTES:
            self._guarded(self._checkpoint)

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file; runs with synchronous FULL (or NORMAL), so
        the file is synced before the WAL is reused."""
        assert self._conn is not None
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _run_op(self, txn: _Txn, op: _Op) -> _Result:
        conn = self._conn
        assert conn is not None
        counts, n_after, inserted, notify = (
            txn.counts.copy(),
            len(txn.after),
            txn.inserted,
            txn.notify,
        )
        conn.execute("SAVEPOINT op")
        try:
            result = op.fn(txn, *op.args)
        except Exception as e:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            txn.counts, txn.inserted, txn.notify = counts, inserted, notify
            del txn.after[n_after:]
            if isinstance(e, sqlite3.Error):
                e = _storage_error(op, e)
            return op.future, None, e
        conn.execute("RELEASE op")
        return op.future, result, None

    # -- recovery and housekeeping (writer thread) ---------------------------------------------

    def _recover(self) -> None:
        """Void the previous process's leases and count what the file holds."""
        conn = self._conn
        assert conn is not None
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        for consumer in self._consumers:
            # Ready at time 0: first in line again, as they were when leased.
            conn.execute(
                "UPDATE deliveries SET leased = 0, ready_at = 0 "
                "WHERE consumer = ? AND state = ? AND ready_at > ? AND leased = 1",
                (consumer, QUEUED, now),
            )
        self._counts = self._count()
        self._prune_range(self._counts, 0, self._counts.floor)
        known = sorted({*self._consumers, *self._counts.queued, *self._counts.dead})
        conn.execute(
            "INSERT INTO meta VALUES ('consumers', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (json.dumps(known),),
        )
        conn.execute("COMMIT")
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        strangers = {c for c in (*self._counts.queued, *self._counts.dead)} - set(self._consumers)
        for stranger in sorted(strangers):
            log.warning(
                "spool holds deliveries for a consumer that is not configured",
                consumer=stranger,
                queued=self._counts.queued[stranger],
                dead=self._counts.dead[stranger],
                hint="they count against the queue limit: configure the destination again, "
                "or drop them with `notifier spool purge --consumer NAME`",
            )
        log.info(
            "spool open",
            path=str(self.path),
            pending=self._counts.held,
            stored=self._counts.rows,
            synchronous=self._sync,
        )

    def _count(self) -> _Counts:
        conn = self._conn
        assert conn is not None
        c = _Counts()
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

    def _check_external_change(self) -> None:
        """Another process (the CLI) committed: count again and wake the consumers."""
        conn = self._conn
        assert conn is not None
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        self._data_version = version
        self._counts = self._count()
        self._post([], True)

    def _take_snapshot(self) -> None:
        conn = self._conn
        assert conn is not None
        now = time.time()
        snap = _Snapshot(taken_at=now)
        for consumer in sorted({*self._consumers, *self._counts.queued, *self._counts.dead}):
            waiting = dict.fromkeys((0, 1), 0)
            for leased, n in conn.execute(
                "SELECT leased, COUNT(*) FROM deliveries "
                "WHERE consumer = ? AND state = ? AND ready_at > ? GROUP BY leased",
                (consumer, QUEUED, now),
            ):
                waiting[leased] = n
            snap.depth[(consumer, "ready")] = self._counts.queued[consumer] - sum(waiting.values())
            snap.depth[(consumer, "leased")] = waiting[1]
            snap.depth[(consumer, "retry")] = waiting[0]
            snap.depth[(consumer, "dead")] = self._counts.dead[consumer]
            head = conn.execute(
                "SELECT r.received_at FROM deliveries d JOIN records r ON r.seq = d.seq "
                "WHERE d.consumer = ? AND d.state = ? AND d.ready_at <= ? "
                "ORDER BY d.ready_at LIMIT 1",
                (consumer, QUEUED, now),
            ).fetchone()
            if head is not None:
                snap.oldest_ready_age_s[consumer] = max(0.0, now - head[0])
        snap.disk_bytes = sum(
            _size(Path(f"{self.path}{suffix}")) for suffix in ("", "-wal", "-shm")
        )
        self._snapshot = snap

    def _op_snapshot(self, txn: _Txn) -> None:
        txn.after.append(self._take_snapshot)  # once committed, so the counts are current

    # -- operations (writer thread, inside a transaction) --------------------------------------

    def _seqs(self, record_ids: Iterable[str]) -> dict[str, int]:
        conn = self._conn
        assert conn is not None
        out: dict[str, int] = {}
        ids = list(dict.fromkeys(record_ids))
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            out.update(conn.execute(f"SELECT id, seq FROM records WHERE id IN ({marks})", chunk))
        return out

    def _put_group(self, txn: _Txn, ops: list[_Op]) -> list[_Result]:
        """Consecutive puts as one set of statements: the common case, far from any limit.

        A put that would reach a limit takes the general path (`_op_put`, in a savepoint)
        after what is staged so far is written, so it sees the queue as it is.
        """
        c = txn.counts
        stored: set[str] = set(self._seqs(r.id for op in ops for r in op.args[0]))
        staged = _Staged()
        results: list[_Result] = []
        for op in ops:
            fresh = _fresh(op.args[0], stored)
            encoded = [schema.encode(r) for r in fresh]
            sizes = [len(data) + len(raw) for data, raw in encoded]
            over_entries, over_bytes = self._over(c, fresh, sizes)
            if over_entries > 0 or over_bytes > 0:
                self._write(txn, staged)
                staged = _Staged()
                result = self._run_op(txn, op)
                if result[2] is None:
                    stored.update(r.id for r in op.args[0])
                results.append(result)
                continue
            self._stage(c, fresh, encoded, sizes, staged, txn.now)
            stored.update(r.id for r in fresh)
            results.append((op.future, len(fresh), None))
        self._write(txn, staged)
        return results

    def _op_put(self, txn: _Txn, records: list[Record]) -> int:
        """One put near a limit: reject it, or drop to make room (see `_make_room`)."""
        c = txn.counts
        fresh = _fresh(records, self._seqs(r.id for r in records))
        if not fresh:
            return 0
        encoded = [schema.encode(r) for r in fresh]
        sizes = [len(data) + len(raw) for data, raw in encoded]
        over_entries, over_bytes = self._over(c, fresh, sizes)
        if over_entries > 0 or over_bytes > 0:
            cause = "queue_full" if over_entries > 0 else "disk_full"
            if self._policy.overflow_for(fresh) is Overflow.REJECT:
                self._rejected += len(fresh)
                raise SpoolFull(_full_message(cause, self._max_entries, self._max_bytes))
            dropped = self._make_room(txn, cause, fresh, sizes, over_entries, over_bytes)
            keep = [i for i in range(len(fresh)) if i not in dropped]
            fresh = [fresh[i] for i in keep]
            encoded = [encoded[i] for i in keep]
            sizes = [sizes[i] for i in keep]
        staged = _Staged()
        self._stage(c, fresh, encoded, sizes, staged, txn.now)
        self._write(txn, staged)
        return len(fresh)

    def _over(self, c: _Counts, fresh: list[Record], sizes: list[int]) -> tuple[int, int]:
        """By how many entries and bytes `fresh` would exceed the limits (<= 0: it fits)."""
        entries = c.held + len(fresh) - self._max_entries if self._consumers else 0
        return entries, c.bytes + sum(sizes) + len(fresh) * ROW_OVERHEAD - self._max_bytes

    def _stage(
        self,
        c: _Counts,
        fresh: list[Record],
        encoded: list[tuple[str, bytes]],
        sizes: list[int],
        staged: _Staged,
        now: float,
    ) -> None:
        owed = len(self._consumers)
        for r, (data, raw), size in zip(fresh, encoded, sizes, strict=True):
            staged.records.append(
                (c.next_seq, r.id, r.kind.rank, r.received_at, owed, size, data, raw)
            )
            staged.deliveries += [
                (consumer, c.next_seq, QUEUED, now) for consumer in self._consumers
            ]
            c.next_seq += 1
        n = len(fresh)
        c.rows += n
        c.bytes += sum(sizes) + n * ROW_OVERHEAD
        if owed:
            c.held += n
            for consumer in self._consumers:
                c.queued[consumer] += n

    def _write(self, txn: _Txn, staged: _Staged) -> None:
        if not staged.records:
            return
        conn = self._conn
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
        txn.notify = True

    def _leave_history(self, c: _Counts) -> None:
        """Delete delivered records that the newest `history_entries` pushed out."""
        new_floor = c.next_seq - 1 - self._history_entries
        if new_floor > c.floor:
            self._prune_range(c, c.floor, new_floor)
            c.floor = new_floor

    def _make_room(
        self,
        txn: _Txn,
        cause: str,
        incoming: list[Record],
        sizes: list[int],
        over_entries: int,
        over_bytes: int,
    ) -> set[int]:
        """Drop held and incoming records, lowest kind and oldest first, until both limits
        hold; returns the indexes of `incoming` that were dropped."""
        conn = self._conn
        assert conn is not None
        cursor = conn.execute(
            "SELECT kind, seq, size FROM records WHERE pending > 0 ORDER BY kind, seq"
        )
        held = ((kind, (seq, size)) for kind, seq, size in cursor)
        victims: list[int] = []
        dropped: set[int] = set()
        for key, index in drop_order(held, incoming):
            if over_entries <= 0 and over_bytes <= 0:
                break
            if key is not None:
                victims.append(key[0])
                over_bytes -= key[1] + ROW_OVERHEAD
            elif index is not None:
                dropped.add(index)
                over_bytes -= sizes[index] + ROW_OVERHEAD
            over_entries -= 1
        cursor.close()
        if over_entries > 0 or over_bytes > 0:
            raise SpoolFull(
                f"a batch of {len(incoming)} records does not fit in the spool at all: "
                "send smaller batches or raise the spool limits"
            )
        kinds: Counter[Kind] = Counter(incoming[i].kind for i in dropped)
        owed: dict[str, Counter[Kind]] = {
            consumer: Counter(incoming[i].kind for i in dropped) for consumer in self._consumers
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

    def _op_lease(
        self, txn: _Txn, consumer: str, limit: int, visibility_s: float
    ) -> tuple[list[Lease], float | None]:
        conn = self._conn
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
        ], None

    def _op_extend(
        self, txn: _Txn, consumer: str, record_ids: list[str], visibility_s: float
    ) -> None:
        conn = self._conn
        assert conn is not None
        until = txn.now + visibility_s
        conn.executemany(
            "UPDATE deliveries SET ready_at = ? "
            "WHERE consumer = ? AND seq = ? AND state = ? AND leased = 1",
            [(until, consumer, seq, QUEUED) for seq in self._seqs(record_ids).values()],
        )

    def _op_ack(self, txn: _Txn, consumer: str, record_ids: list[str]) -> None:
        conn = self._conn
        assert conn is not None
        c = txn.counts
        settled: list[int] = []
        for seq in self._seqs(record_ids).values():
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

    def _op_nack(
        self,
        txn: _Txn,
        consumer: str,
        record_ids: list[str],
        error: str,
        retry_in_s: float | None,
    ) -> None:
        conn = self._conn
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

    def _delete(self, c: _Counts, seqs: list[int], *, only_outside_history: bool) -> None:
        """Delete settled records (pending = 0), keeping the history window if asked."""
        conn = self._conn
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

    def _prune_range(self, c: _Counts, after: int, upto: int) -> None:
        """Delete delivered records with after < seq <= upto: they left the history window."""
        if upto <= after:
            return
        conn = self._conn
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


def _storage_error(op: _Op, error: sqlite3.Error) -> Exception:
    detail = f"spool storage failed ({error}): check the disk under the data directory"
    # A receiver answers SpoolFull with 503 + Retry-After: the right answer to a sender when
    # the disk is failing, too.
    return (
        SpoolFull(detail, retry_after_s=30) if op.fn.__name__ == "_op_put" else SpoolError(detail)
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _lock(path: Path) -> int:
    """Hold an exclusive lock beside the file: two services on one spool would steal leases."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolError(
            f"another notifier process is using the spool {path}: stop it, "
            "or give this one another data_dir"
        ) from None
    return fd
