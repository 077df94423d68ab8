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

A full disk under data_dir stops new records, never delivery. New records are refused (the
sender hears 503 / SpoolFull) once they would eat into the room kept for delivery (see
`diskspace.py`); if a write fails for lack of space all the same, leases, acks and nacks are
held in memory (`held.py`) and written as soon as there is room again. While records are
refused, delivered records (the history) are deleted and the WAL and the freed pages are given
back to the file system, so a spool that filled the disk itself accepts again once it has
delivered, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier.log import RateLimiter, get_logger
from notifier.metrics import Metrics
from notifier.records import Record
from notifier.spool import diskspace, schema
from notifier.spool.base import (
    DropNotice,
    Lease,
    Overflow,
    SpoolError,
    SpoolFull,
    SpoolStats,
    SpoolUnavailable,
)
from notifier.spool.drops import DropLedger
from notifier.spool.policy import SpoolPolicy, as_policy
from notifier.spool.store import Store, encodings
from notifier.spool.wake import Waker

log = get_logger("notifier.spool")

_MAX_OPS_PER_COMMIT = 2000

# While the disk is full: how often delivered records are pruned and space handed back.
_RECLAIM_INTERVAL_S = 1.0

# What a sender refused for lack of disk space is told to wait before it tries again.
_DISK_FULL_RETRY_AFTER_S = 10

# While this much room is left, the space under data_dir is looked at before a commit of new
# records at most every _MEASURE_INTERVAL_S (the spool cannot write that much in between).
_PLENTY_BYTES = 256 << 20
_MEASURE_INTERVAL_S = 0.1


@dataclass(slots=True)
class _Op:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any] | None
    durable: bool


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
        self._consumers = list(dict.fromkeys(consumers))
        self._history_entries = max(0, history_entries)
        self._metrics = metrics
        self._waker = waker or Waker()
        self._sync = synchronous.upper()
        self._stats_interval = stats_interval_s
        self._drops = DropLedger(self._consumers, "disk", metrics)
        self._store = Store(
            self.path,
            self._consumers,
            max_entries,
            max_disk_bytes,
            as_policy(overflow),
            self._history_entries,
            self._drops,
        )
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._commits = 0
        self._fsyncs = 0
        self._records_committed = 0
        self._unchecked_commits = 0  # fsynced commits since the last checkpoint
        self._unchecked_bytes = 0
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open = False
        self._sync_now = ""
        self._disk_full = False  # new records refused for lack of space under data_dir
        self._space: diskspace.DiskSpace | None = None
        self._measured_at = 0.0  # monotonic
        self._reclaimed_at = 0.0
        self._refused_in_episode = 0
        self._full_log = RateLimiter(burst=3, period_s=300.0)
        store = self._store
        # What an operation does instead while its writes are held in memory.
        self._held_ops: dict[Callable[..., Any], Callable[..., Any]] = {
            store.lease: store.held_lease,
            store.extend: store.held_extend,
            store.ack: store.held_ack,
            store.nack: store.held_nack,
            store.retry_now: store.held_retry_now,
        }

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
        records = list(records)
        await self._submit(self._store.put, (records, encodings(records)), durable=True)

    async def lease(self, consumer: str, limit: int, visibility_s: float) -> list[Lease]:
        """Up to `limit` ready records, in the order they became ready (arrival, retry time or
        lease expiry), then arrival; hidden from further leases for `visibility_s`."""
        self._check_consumer(consumer)
        seen = self._waker.generation
        leases, next_due = await self._submit(
            self._store.lease, (consumer, limit, visibility_s), durable=False
        )
        if leases:
            self._waker.due_in(consumer, visibility_s)
        else:
            due_in = None if next_due is None else next_due - time.time()
            self._waker.idle(consumer, due_in, seen)
        return list(leases)

    async def wait(self, timeout: float, consumer: str | None = None) -> None:
        await self._waker.wait(timeout, consumer)

    async def extend(self, consumer: str, record_ids: Sequence[str], visibility_s: float) -> None:
        self._check_consumer(consumer)
        await self._submit(self._store.extend, (consumer, list(record_ids), visibility_s), False)

    async def ack(self, consumer: str, record_ids: Sequence[str]) -> None:
        """Delivered: committed and fsynced when this returns; never leased to `consumer` again."""
        self._check_consumer(consumer)
        await self._submit(self._store.ack, (consumer, list(record_ids)), durable=True)

    async def nack(
        self, consumer: str, record_ids: Sequence[str], *, error: str, retry_in_s: float | None
    ) -> None:
        """Not delivered: ready again in `retry_in_s`, or a dead letter (with `error`) if None."""
        self._check_consumer(consumer)
        await self._submit(
            self._store.nack, (consumer, list(record_ids), error, retry_in_s), durable=True
        )
        if retry_in_s is not None:
            self._waker.due_in(consumer, retry_in_s)

    async def retry_now(self, consumer: str) -> int:
        """What waits for a later retry for `consumer` is ready now (the account was fixed)."""
        self._check_consumer(consumer)
        count = await self._submit(self._store.retry_now, (consumer,), durable=False)
        self._waker.due_in(consumer, 0.0)
        return int(count)

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
        snap = self._store.snapshot
        return SpoolStats(
            depth=dict(snap.depth),
            oldest_ready_age_s=dict(snap.oldest_ready_age_s),
            persistent_entries=self._store.counts.held,
            disk_bytes=snap.disk_bytes,
            dropped=self._drops.totals(),
            rejected=self._store.rejected,
            commits=self._commits,
            fsyncs=self._fsyncs,
            records_committed=self._records_committed,
        )

    async def refresh_stats(self) -> SpoolStats:
        """`stats()` with depths counted now."""
        await self._submit(self._store.snapshot_after, (), durable=False)
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
            self._store.open()
            log.info(
                "spool open",
                path=str(self.path),
                pending=self._store.counts.held,
                stored=self._store.counts.rows,
                synchronous=self._sync,
            )
        except Exception as e:
            error = SpoolError(f"cannot open spool {self.path}: {e}")
            error.__cause__ = e  # a damaged file gets its own hint at start
            self._post([(ready, None, error)], False)
            return
        if self._store.held:  # opened on a full disk: deliver, refuse new records
            self._disk_check()
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
            if time.time() - self._store.snapshot.taken_at >= self._stats_interval:
                self._guarded(self._store.take_snapshot)
        assert self._store.conn is not None
        self._store.conn.close()
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
        if self._disk_full:
            self._disk_check()
        if time.time() - self._store.snapshot.taken_at >= self._stats_interval:
            self._guarded(self._store.take_snapshot)

    def _check_external_change(self) -> None:
        if self._store.changed_elsewhere():
            self._post([], True)  # e.g. `notifier spool retry`: wake the consumers

    def _process(self, ops: list[_Op]) -> None:
        store = self._store
        results: list[_Result] = []
        puts = [op for op in ops if op.fn == store.put]
        if (puts or self._disk_full) and self._refusing_puts():
            # New records are refused while the disk is full; everything else goes on.
            results = [(op.future, None, self._refuse(op)) for op in puts]
            ops = [op for op in ops if op.fn != store.put]
        if store.held:
            self._post(results + self._run_held(ops), False)
            return
        if ops:
            self._commit(ops, results)
        else:
            self._post(results, False)

    def _commit(self, ops: list[_Op], results: list[_Result]) -> None:
        """Run `ops` as one transaction and hand each caller its result."""
        store = self._store
        conn = store.conn
        assert conn is not None
        durable = any(op.durable for op in ops)
        try:
            self._check_external_change()
            want = self._sync if durable else "OFF"
            if want != self._sync_now:
                conn.execute(f"PRAGMA synchronous = {want}")
                self._sync_now = want
            txn = store.begin(time.time())
            conn.execute("BEGIN IMMEDIATE")
            for is_put, run in itertools.groupby(ops, key=lambda op: op.fn == store.put):
                batch = list(run)
                if is_put:
                    outcomes = store.put_group(txn, [op.args for op in batch])
                else:
                    outcomes = [store.run(txn, op.fn, op.args) for op in batch]
                results += [
                    (op.future, result, error if error is None else _caller_error(op, error))
                    for op, (result, error) in zip(batch, outcomes, strict=True)
                ]
            store.leave_history(txn.counts)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            schema.rollback(conn)
            if diskspace.is_disk_full(e):
                # Nothing of it was written: hold the deliveries' changes, refuse the records.
                self._enter_disk_full()
                puts = [op for op in ops if op.fn == store.put]
                held = self._run_held([op for op in ops if op.fn != store.put])
                refused = [(op.future, None, self._refuse(op)) for op in puts]
                self._post(results + refused + held, False)
                return
            log.error("spool commit failed", path=str(self.path), error=str(e))
            failed: list[_Result] = [(op.future, None, _caller_error(op, e)) for op in ops]
            self._post(results + failed, False)
            return
        store.counts = txn.counts
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
        if self._disk_full:
            self._guarded(self._keep_wal_small)
        if durable:
            self._unchecked_commits += 1
            self._unchecked_bytes += txn.inserted_bytes
            if (
                self._unchecked_commits >= schema.CHECKPOINT_COMMITS
                or self._unchecked_bytes >= schema.CHECKPOINT_BYTES
            ):
                self._unchecked_commits = self._unchecked_bytes = 0
                self._guarded(self._checkpoint)

    # -- a full disk -----------------------------------------------------------------------

    def _run_held(self, ops: list[_Op]) -> list[_Result]:
        """Run `ops` without writing: leases, acks and nacks are held in memory."""
        txn = self._store.begin(time.time())
        results: list[_Result] = []
        for op in ops:
            try:
                result = self._held_ops.get(op.fn, op.fn)(txn, *op.args)
            except Exception as e:
                results.append((op.future, None, _caller_error(op, e)))
            else:
                results.append((op.future, result, None))
        for action in txn.after:
            action()
        return results

    def _refusing_puts(self) -> bool:
        plenty = self._space is not None and self._space.room > _PLENTY_BYTES
        if plenty and time.monotonic() - self._measured_at < _MEASURE_INTERVAL_S:
            return self._disk_full
        return self._disk_check()

    def _disk_check(self) -> bool:
        """Look at the space under data_dir, write held changes and give space back when it
        helps; returns whether new records are refused now."""
        space = self._measure()
        self._measured_at = time.monotonic()
        if space is None:  # cannot tell: let SQLite say when it is full
            return self._disk_full
        held = bool(self._store.held)
        # Held deliveries do not stop a reclaim: a truncated WAL may be what lets them be written.
        if space.room <= 0 and time.time() - self._reclaimed_at >= _RECLAIM_INTERVAL_S:
            self._reclaim(space)
            space = self._measure() or space
        if space.room > 0 and held:
            held = not self._write_held()
        self._space = space
        full = space.room <= 0 or held
        if full and not self._disk_full:
            self._enter_disk_full()
        elif not full and self._disk_full:
            self._leave_disk_full()
        return full

    def _measure(self) -> diskspace.DiskSpace | None:
        conn = self._store.conn
        assert conn is not None
        try:
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            (free_pages,) = conn.execute("PRAGMA freelist_count").fetchone()
            return diskspace.measure(self.path, page_size, free_pages)
        except (OSError, sqlite3.Error) as e:
            log.warning("cannot measure the space under data_dir", path=str(self.path), error=e)
            return None

    def _write_held(self) -> bool:
        """Write what was held while the disk was full; False if there is still no room."""
        store = self._store
        conn = store.conn
        assert conn is not None
        self._durable_sync(conn)
        txn = store.begin(time.time())
        try:
            conn.execute("BEGIN IMMEDIATE")
            n = store.write_held(txn)
            store.leave_history(txn.counts)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            schema.rollback(conn)
            if not diskspace.is_disk_full(e):
                log.error("spool: writing held deliveries failed", path=str(self.path), error=e)
            return False
        store.counts = txn.counts
        for action in txn.after:
            action()
        log.info("spool: deliveries held while the disk was full are written", deliveries=n)
        self._post([], True)  # acked records may have made room; nacked ones may be due
        return True

    def _reclaim(self, before: diskspace.DiskSpace) -> None:
        """Give space back: delete delivered records (the history), copy the WAL into the
        file and truncate it, and return the freed pages to the file system."""
        store = self._store
        conn = store.conn
        assert conn is not None
        self._reclaimed_at = time.time()
        self._durable_sync(conn)
        txn = store.begin(self._reclaimed_at)
        pruned = 0
        # Each step on its own: on a disk full to the last byte the delete may fail while a
        # checkpoint still gives the WAL back, or the other way round.
        try:
            conn.execute("BEGIN IMMEDIATE")
            pruned = store.prune_delivered(txn)
            conn.execute("COMMIT")
            store.counts = txn.counts
        except sqlite3.Error:
            schema.rollback(conn)
        for step in (
            "PRAGMA wal_checkpoint(TRUNCATE);",
            "PRAGMA incremental_vacuum;",  # as a script: it frees one page per step
            "PRAGMA wal_checkpoint(TRUNCATE);",
        ):
            with contextlib.suppress(sqlite3.Error):
                conn.executescript(step)
        after = self._measure()
        log.debug(
            "spool: reclaim",
            path=str(self.path),
            pruned=pruned,
            held=len(store.held),
            free_bytes=(before.free, after.free if after else None),
            wal_bytes=(before.wal, after.wal if after else None),
            free_pages_bytes=(before.reusable, after.reusable if after else None),
        )
        if pruned:
            log.info(
                "spool: delivered records deleted to make room (the history page shows fewer)",
                path=str(self.path),
                records=pruned,
            )

    def _durable_sync(self, conn: sqlite3.Connection) -> None:
        """A checkpoint or a held write must be synced like any durable commit."""
        if self._sync_now != self._sync:
            conn.execute(f"PRAGMA synchronous = {self._sync}")
            self._sync_now = self._sync

    def _enter_disk_full(self) -> None:
        if self._disk_full:
            return
        self._disk_full = True
        self._refused_in_episode = 0
        if self._metrics is not None:
            self._metrics.spool_disk_full.set(1)
        allowed, suppressed = self._full_log.allow("full")
        if allowed:
            space = self._space
            log.error(
                diskspace.full_message(self.path.parent),
                path=str(self.path),
                free_bytes=space.free if space else None,
                kept_for_delivery_bytes=space.headroom + space.wal if space else None,
                suppressed=suppressed,
                hint="delete or move files under data_dir (or grow the file system); "
                "the spool also gives back the space of what it delivers",
            )

    def _leave_disk_full(self) -> None:
        self._disk_full = False
        if self._metrics is not None:
            self._metrics.spool_disk_full.set(0)
        log.info(
            "disk space back under data_dir: new records accepted again",
            path=str(self.path),
            refused=self._refused_in_episode,
            free_bytes=self._space.free if self._space else None,
        )
        self._post([], True)

    def _refuse(self, op: _Op) -> SpoolFull:
        n = len(op.args[0])
        self._store.rejected += n
        self._refused_in_episode += n
        if self._metrics is not None:
            self._metrics.spool_disk_full_refused.inc(n)
        return SpoolFull(diskspace.REFUSAL, retry_after_s=_DISK_FULL_RETRY_AFTER_S)

    def _keep_wal_small(self) -> None:
        """While records are refused, truncate the WAL before delivery's writes (leases,
        retries, acks) let it grow past what a checkpoint could still copy into the file."""
        space = self._measure()
        if space is None or not space.wal_needs_checkpoint:
            return
        conn = self._store.conn
        assert conn is not None
        self._durable_sync(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._space = self._measure() or space

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file; runs with synchronous FULL (or NORMAL), so
        the file is synced before the WAL is reused."""
        assert self._store.conn is not None
        self._store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _caller_error(op: _Op, error: Exception) -> Exception:
    """What the caller of a failed operation sees: storage trouble named as such."""
    if not isinstance(error, sqlite3.Error):
        return error
    detail = f"spool storage failed ({error}): check the disk under the data directory"
    # A receiver answers SpoolFull with 503 + Retry-After: the right answer to a sender when
    # the disk is failing, too.
    if op.fn.__name__ == "put":
        return SpoolUnavailable(detail, retry_after_s=30)
    return SpoolError(detail)


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
