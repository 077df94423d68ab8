"""The durable spool on PostgreSQL: one queue shared by every instance on the database.

Same contract as `SqliteSpool` (see `notifier.spool.base`), for several notifier processes at
once:

- `put` returns once the transaction holding the records has committed. Concurrent puts are
  grouped: one writer task takes every put waiting and commits them in one transaction (each
  put still succeeds or is refused on its own).
- `lease` takes rows with `SELECT … FOR UPDATE SKIP LOCKED`: two instances never lease the same
  delivery, and neither waits for the other. A lease is a time (`ready_at`) in the database's
  clock: when the instance holding it dies, the record becomes ready again on its own. Each
  lease names its instance (`lease_owner`), and an instance that starts again voids its own
  old leases at once, as the SQLite spool voids a dead process's leases.
- Consumers sleeping in `wait` are woken by LISTEN/NOTIFY on every instance (a put here wakes
  the consumers there); while the listening connection is down they poll instead, since a
  disconnected listener misses notifications.
- The limits (entries, bytes) count the whole database, kept in one row that every writing
  transaction locks first.

`history` and `stats` are synchronous in the interface, so they answer from what a background
task last read (every `stats_interval_s`) plus this instance's own puts.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from notifier.backoff import Backoff, Jitter
from notifier.log import RateLimiter, get_logger
from notifier.metrics import Metrics
from notifier.records import Kind, Record
from notifier.spool import schema as sqlite_schema
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
from notifier.spool.pg import dedupe, schema
from notifier.spool.pg.conninfo import describe, scrub
from notifier.spool.pg.pool import Unavailable, connect, open_pool, transaction
from notifier.spool.policy import SpoolPolicy, as_policy, make_room
from notifier.spool.schema import ROW_OVERHEAD, SchemaError
from notifier.spool.store import Snapshot, _fresh, _full_message
from notifier.spool.wake import Waker

log = get_logger("notifier.spool")

CHANNEL = "notifier_spool"
QUEUED, DEAD = 0, 1
_NOW = "extract(epoch FROM statement_timestamp())::float8"
_KIND_BY_RANK = {kind.rank: kind for kind in Kind}
_MAX_PUTS_PER_COMMIT = 2000
_MAX_ERROR_CHARS = 2000
# How long a transaction waits for a connection while the database is down (the pool keeps
# reconnecting meanwhile; the first one to get through ends the outage).
_WAIT_WHILE_DOWN_S = 1.0
# How long a put waits for a connection at most, the database not known to be down: a sender
# hears 503 with Retry-After rather than nothing until its own timeout (often 10 s). The first
# put after the server went away waits this long: the pool finds its idle connections dead and
# queues the put for a new one, which it cannot make.
_PUT_WAIT_S = 3.0
_VICTIM_CHUNK = 1000
_NO_TOTALS = "spool_totals has no row: the spool schema is damaged"


@dataclass(slots=True)
class _Put:
    records: list[Record]
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Staged:
    """Rows of accepted puts, written with one statement."""

    records: list[Record] = field(default_factory=list)
    owes: list[bool] = field(default_factory=list)  # some consumer wants it (else history only)
    encoded: list[tuple[str, bytes]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    @property
    def wanted(self) -> bool:
        """Some consumer is owed one of these records."""
        return any(self.owes)

    def add(
        self,
        records: list[Record],
        owes: list[bool],
        encoded: list[tuple[str, bytes]],
        sizes: list[int],
    ) -> None:
        self.records += records
        self.owes += owes
        self.encoded += encoded
        self.sizes += sizes


class PostgresSpool:
    """Durable queues in a PostgreSQL database; see the module docstring.

    `dsn` is a libpq URI or key=value string (TLS parameters pass through); it is a secret and
    never logged. `instance` names this process in leases: it must be unique among the
    instances on one database and stay the same across restarts (hostname:port). The limits
    and `overflow` mean what they mean for `SqliteSpool`, counted over the whole database.
    """

    def __init__(
        self,
        dsn: str,
        consumers: Sequence[str],
        max_entries: int = 100_000,
        max_disk_bytes: int = 1 << 30,
        overflow: Overflow | SpoolPolicy = Overflow.REJECT,
        history_entries: int = 1000,
        *,
        instance: str = "",
        metrics: Metrics | None = None,
        waker: Waker | None = None,
        stats_interval_s: float = 2.0,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
        poll_interval_s: float = 2.0,
        dedupe_window_s: float = 0.0,
    ) -> None:
        self._dsn = dsn
        self.target = describe(dsn)
        self._consumers = list(dict.fromkeys(consumers))
        self._max_entries = max_entries
        self._max_bytes = max_disk_bytes
        self._policy = as_policy(overflow)
        self._history_entries = max(0, history_entries)
        self._instance = instance
        self._origin = secrets.token_hex(6)
        self._metrics = metrics
        self._waker = waker or Waker()
        self._stats_interval = stats_interval_s
        self._pool_size = max(2, pool_size)
        self._connect_timeout = connect_timeout_s
        self._poll_interval = poll_interval_s
        self._dedupe_window = dedupe_window_s
        self._drops = DropLedger(self._consumers, "postgresql", metrics)
        self._pool: AsyncConnectionPool | None = None
        self._puts: list[_Put] = []
        self._writer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._open = False
        self._down = False  # the last transaction found the database unreachable
        self._recent: list[tuple[int, Record]] = []  # (seq, record), newest first
        self._top = 0  # the newest seq at the last refresh
        self._snapshot = Snapshot()
        self._held = 0  # records some consumer is owed, as of the snapshot
        self._log_limit = RateLimiter(burst=3, period_s=60.0)
        self.listening = False  # whether notifications arrive (else the consumers poll)
        self.rejected = 0
        self._commits = 0
        self._fsyncs = 0
        self._records_committed = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create or migrate the schema, void this instance's old leases.

        Raises `SpoolError` naming host:port/dbname (never the password) when the database
        cannot be reached or holds a schema newer than this code.
        """
        if self._open:
            return
        conn = await self._connect()
        try:
            found = await schema.migrate(conn)
            released = await self._recover(conn)
        except SchemaError as e:
            raise SpoolError(f"PostgreSQL at {self.target}: {e}") from None
        except psycopg.Error as e:
            raise SpoolError(
                f"PostgreSQL at {self.target}: cannot prepare the spool tables: "
                f"{scrub(str(e), self._dsn)}"
            ) from None
        finally:
            await conn.close()
        pool = await open_pool(self._dsn, "notifier-spool", self._pool_size, self._connect_timeout)
        self._pool = pool
        self._open = True
        try:
            self._listener = await self._subscribe()
            await self._refresh(force=True)
        except BaseException:
            await self.close()
            raise
        self._tasks = [
            asyncio.create_task(self._listen(), name="spool-pg-listen"),
            asyncio.create_task(self._housekeeping(), name="spool-pg-stats"),
        ]
        log.info(
            "spool open",
            backend="postgresql",
            database=self.target,
            instance=self._instance,
            schema_version=schema.LATEST,
            migrated_from=found,
            pending=self._held,
            leases_released=released,
        )
        self._waker.notify()

    async def close(self) -> None:
        """Commit the puts already handed over, then disconnect; puts after this raise."""
        if not self._open:
            return
        self._open = False
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a cancellation swallowed inside the driver must not hang the stop (the
            # loops also end by themselves once the spool is closed).
            await asyncio.wait(self._tasks, timeout=5.0)
        self._tasks = []
        if self._listener is not None:
            await self._listener.close()  # if the task was cancelled before it took it over
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await connect(self._dsn, self._connect_timeout)

    async def _recover(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Void the leases this instance held before it restarted: first in line again."""
        if not self._instance:
            return 0
        cur = await conn.execute(
            "UPDATE spool_deliveries SET leased = false, lease_owner = '', ready_at = 0 "
            "WHERE lease_owner = %s AND leased AND state = %s AND consumer = ANY(%s)",
            (self._instance, QUEUED, self._consumers),
        )
        if cur.rowcount:
            await self._notify(conn)
        return cur.rowcount

    @contextlib.asynccontextmanager
    async def _transaction(
        self, what: str, wait_s: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection inside a transaction; database trouble becomes `SpoolError`.
        `wait_s`: how long to wait for a connection (None: the connect timeout)."""
        if not self._open or self._pool is None:
            raise SpoolError(f"spool on {self.target} is not open")
        # While the database is known to be down, each caller waits a moment for a connection,
        # not the whole connect timeout: a sender hears 503 at once instead of timing out.
        if self._down:
            wait_s = _WAIT_WHILE_DOWN_S
        try:
            async with transaction(self._pool, self._dsn, f"spool {what}", wait_s) as conn:
                yield conn
        except Unavailable:
            self._down = True
            raise
        self._down = False

    @property
    def pool(self) -> AsyncConnectionPool | None:
        """The open connection pool, for the other users of this database in this process
        (the state store); None before `start` and after `close`."""
        return self._pool if self._open else None

    # -- put: grouped commits ---------------------------------------------------------------

    async def put(self, records: Sequence[Record]) -> None:
        """Store `records`; returns once they are committed.

        A record whose id is already stored is not stored again. Raises `SpoolFull` when a
        limit is reached under `reject` (nothing of this put is stored then), or when the
        database failed (the sender should retry later).
        """
        if not records:
            return
        if not self._open:
            raise SpoolFull("spool is closed", retry_after_s=10)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._puts.append(_Put(list(records), future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_puts(), name="spool-pg-writer")
        await future

    async def _write_puts(self) -> None:
        while self._puts:
            group = self._puts[:_MAX_PUTS_PER_COMMIT]
            del self._puts[: len(group)]
            try:
                outcomes = await self._commit_puts([p.records for p in group])
            except Exception as e:
                error = e if isinstance(e, SpoolFull) else _storage_full(e)
                outcomes = [error] * len(group)
            for put, outcome in zip(group, outcomes, strict=True):
                if put.future.done():
                    continue
                if outcome is None:
                    put.future.set_result(None)
                else:
                    put.future.set_exception(outcome)

    async def _commit_puts(self, batches: list[list[Record]]) -> list[Exception | None]:
        """One transaction for many puts; returns each put's outcome (None: stored)."""
        outcomes: list[Exception | None] = []
        kept: list[tuple[int, Record]] = []
        dropped_seqs: list[int] = []
        after: list[tuple[str, Counter[Kind], dict[str, Counter[Kind]]]] = []
        inserted = 0
        wanted = False  # some consumer is owed a record of this commit
        async with self._transaction("put", min(_PUT_WAIT_S, self._connect_timeout)) as conn:
            # The limits row, locked, and which ids are stored already: one round trip.
            cur = await conn.execute(
                "SELECT held, bytes, ARRAY(SELECT id FROM spool_records WHERE id = ANY(%s))"
                " FROM spool_totals WHERE id = 1 FOR UPDATE",
                ([r.id for batch in batches for r in batch],),
            )
            row = await cur.fetchone()
            if row is None:
                raise SpoolError(_NO_TOTALS)
            held, size, stored = int(row[0]), int(row[1]), set(row[2])
            copies = await self._claim(conn, batches, stored)
            staged = _Staged()
            for batch in batches:
                fresh, identical = copies.split(_fresh(batch, stored))
                if not fresh:
                    copies.took([], identical)
                    outcomes.append(None)  # all stored already: a retried put, or copies
                    continue
                owes = self._policy.owes(fresh)
                encoded = [sqlite_schema.encode(r) for r in fresh]
                sizes = [len(data) + len(raw) for data, raw in encoded]
                over_entries, over_bytes = self._over(held, size, owes, sizes)
                if over_entries > 0 or over_bytes > 0:
                    cause = "queue_full" if over_entries > 0 else "disk_full"
                    if self._policy.overflow_for(fresh) is Overflow.REJECT:
                        self.rejected += len(fresh)
                        outcomes.append(
                            SpoolFull(_full_message(cause, self._max_entries, self._max_bytes))
                        )
                        continue
                    wanted |= staged.wanted
                    kept += await self._insert(conn, staged)
                    staged = _Staged()
                    try:
                        room = await self._make_room(
                            conn, cause, fresh, owes, sizes, over_entries, over_bytes
                        )
                    except SpoolFull as e:
                        outcomes.append(e)
                        continue
                    dropped_seqs += room.victims
                    after.append((cause, room.kinds, room.owed))
                    held -= len(room.victims)
                    size -= room.freed
                    keep = [i for i in range(len(fresh)) if i not in room.dropped]
                    fresh = [fresh[i] for i in keep]
                    owes = [owes[i] for i in keep]
                    encoded = [encoded[i] for i in keep]
                    sizes = [sizes[i] for i in keep]
                staged.add(fresh, owes, encoded, sizes)
                stored.update(r.id for r in fresh)
                copies.took(fresh, identical)
                if self._consumers:
                    held += sum(owes)
                size += sum(sizes) + len(fresh) * ROW_OVERHEAD
                outcomes.append(None)
            wanted |= staged.wanted
            kept += await self._insert(conn, staged)
            inserted = len(kept)
            await dedupe.release(conn, copies.unused())
        self._committed(durable=True, inserted=inserted)
        if self._metrics is not None:
            for kind, n in copies.skipped.items():
                self._metrics.spool_deduplicated.labels(kind.value).inc(n)
        for cause, kinds, owed in after:
            self._drops.dropped(cause, kinds, owed)
        if dropped_seqs:
            gone = set(dropped_seqs)
            self._recent = [(s, r) for s, r in self._recent if s not in gone]
        self._remember(kept)
        # Consumers wake for what they are owed (or a drop notice): records nobody wants
        # (history only) wake nobody, or every put would cost each route an empty lease.
        if (inserted and wanted) or after:
            self._waker.notify()
        return outcomes

    async def _claim(
        self, conn: psycopg.AsyncConnection[Any], batches: list[list[Record]], stored: set[str]
    ) -> _Copies:
        """Claim the identical-record keys of what this commit may store (see dedupe.py)."""
        if self._dedupe_window <= 0:
            return _Copies(None)
        candidates = [r for batch in batches for r in _fresh(batch, stored)]
        return _Copies(await dedupe.claim(conn, candidates, self._dedupe_window))

    def _over(self, held: int, size: int, owes: list[bool], sizes: list[int]) -> tuple[int, int]:
        """By how many entries and bytes records of `sizes` would exceed the limits (<= 0: it
        fits). Entries are what some consumer is owed (`owes`); history only takes bytes."""
        owed = sum(owes) if self._consumers else 0
        entries = held + owed - self._max_entries if owed else 0
        return entries, size + sum(sizes) + len(sizes) * ROW_OVERHEAD - self._max_bytes

    async def _insert(
        self, conn: psycopg.AsyncConnection[Any], staged: _Staged
    ) -> list[tuple[int, Record]]:
        """Write the staged records and a delivery per consumer (none for a record nobody
        wants: history only), delete delivered records that the newest `history_entries`
        pushed out, and wake the other instances if some consumer is owed one: one
        statement. (The sub-statements share one snapshot: the delete cannot see the new
        records.)"""
        if not staged.records:
            return []
        consumers = len(self._consumers)
        owed = [consumers if wanted else 0 for wanted in staged.owes]
        # History-only records wake no instance (see _commit_puts).
        notify = ", (SELECT pg_notify(%(channel)s, %(wake)s)) n" if staged.wanted else ""
        cur = await conn.execute(
            "WITH r AS ("
            " INSERT INTO spool_records (id, kind, received_at, pending, size, data, raw)"
            " SELECT i, k, t, o, s, d, w"
            # %b: arrays go in binary; the text form escapes every byte of raw with a regex.
            " FROM unnest(%(ids)b::text[], %(kinds)b::smallint[], %(times)b::float8[],"
            "   %(owed)b::int[], %(sizes)b::int[], %(data)b::text[], %(raw)b::bytea[])"
            "   AS u(i, k, t, o, s, d, w)"
            " ON CONFLICT (id) DO NOTHING RETURNING seq, id, size, pending),"
            " d AS (INSERT INTO spool_deliveries (consumer, seq, state, ready_at)"
            f" SELECT c, r.seq, {QUEUED}, {_NOW}"
            " FROM r CROSS JOIN unnest(%(consumers)s::text[]) c WHERE r.pending > 0),"
            " g AS (DELETE FROM spool_records WHERE pending = 0 AND seq <="
            "  (SELECT COALESCE(max(seq), 0) FROM spool_records) - %(history)s RETURNING size),"
            " t AS (UPDATE spool_totals SET"
            "  held = held + (SELECT count(*) FROM r WHERE r.pending > 0),"
            f"  bytes = bytes + (SELECT COALESCE(sum(size), 0) + count(*) * {ROW_OVERHEAD} FROM r)"
            f"   - (SELECT COALESCE(sum(size), 0) + count(*) * {ROW_OVERHEAD} FROM g)"
            " WHERE id = 1)"
            f" SELECT r.seq, r.id FROM r{notify}",
            {
                "history": self._history_entries,
                "channel": CHANNEL,
                "wake": Wake(self._origin).payload(),
                "owed": owed,
                "ids": [r.id for r in staged.records],
                "kinds": [r.kind.rank for r in staged.records],
                "times": [r.received_at for r in staged.records],
                "sizes": staged.sizes,
                "data": [data for data, _ in staged.encoded],
                "raw": [raw for _, raw in staged.encoded],
                "consumers": self._consumers,
            },
        )
        seq_of = {rid: int(seq) for seq, rid in await cur.fetchall()}
        return [(seq_of[r.id], r) for r in staged.records if r.id in seq_of]

    async def _make_room(
        self,
        conn: psycopg.AsyncConnection[Any],
        cause: str,
        incoming: list[Record],
        owes: list[bool],
        sizes: list[int],
        over_entries: int,
        over_bytes: int,
    ) -> _Room:
        """Drop held and incoming records, lowest kind and oldest first, until both limits
        hold. Decides before it deletes: a batch that cannot fit changes nothing."""
        held: list[tuple[int, tuple[int, int]]] = []
        need_entries, need_bytes = over_entries, over_bytes
        last = (-1, 0)
        while need_entries > 0 or need_bytes > 0:
            cur = await conn.execute(
                "SELECT kind, seq, size FROM spool_records WHERE pending > 0"
                " AND (kind, seq) > (%s, %s) ORDER BY kind, seq LIMIT %s",
                (*last, _VICTIM_CHUNK),
            )
            rows = await cur.fetchall()
            for kind, seq, size in rows:
                held.append((kind, (seq, size)))
                need_entries -= 1
                need_bytes -= size + ROW_OVERHEAD
            if len(rows) < _VICTIM_CHUNK:
                break
            last = (rows[-1][0], rows[-1][1])
        chosen = make_room(held, incoming, owes, sizes, over_entries, over_bytes, ROW_OVERHEAD)
        if chosen is None:
            raise SpoolFull(
                f"a batch of {len(incoming)} records does not fit in the spool at all: "
                "send smaller batches or raise the spool limits"
            )
        victims, dropped = chosen
        size_of = dict(key for _, key in held)
        freed = sum(size_of[seq] + ROW_OVERHEAD for seq in victims)
        room = _Room(victims=victims, dropped=dropped, freed=freed)
        room.kinds.update(incoming[i].kind for i in room.dropped)
        lost = self._policy.owed(incoming[i] for i in sorted(room.dropped))  # consumers miss
        room.owed = {c: Counter(r.kind for r in lost) for c in self._consumers}
        if room.victims:
            cur = await conn.execute(
                "SELECT d.consumer, r.kind FROM spool_deliveries d"
                " JOIN spool_records r ON r.seq = d.seq WHERE d.seq = ANY(%s)",
                (room.victims,),
            )
            for consumer, rank in await cur.fetchall():
                room.owed.setdefault(consumer, Counter())[_KIND_BY_RANK[rank]] += 1
            await conn.execute("DELETE FROM spool_deliveries WHERE seq = ANY(%s)", (room.victims,))
            cur = await conn.execute(
                "DELETE FROM spool_records WHERE seq = ANY(%s) RETURNING kind, size",
                (room.victims,),
            )
            rows = await cur.fetchall()
            room.kinds.update(_KIND_BY_RANK[rank] for rank, _ in rows)
            await conn.execute(
                "UPDATE spool_totals SET held = held - %s, bytes = bytes - %s WHERE id = 1",
                (len(rows), sum(s for _, s in rows) + ROW_OVERHEAD * len(rows)),
            )
        reasons = Counter({f"{cause}_{kind.value}": n for kind, n in room.kinds.items()})
        await conn.execute(
            "INSERT INTO spool_drops (reason, n) SELECT * FROM unnest(%s::text[], %s::bigint[])"
            " ON CONFLICT (reason) DO UPDATE SET n = spool_drops.n + excluded.n",
            (list(reasons), list(reasons.values())),
        )
        return room

    # -- consumers ---------------------------------------------------------------------------

    async def lease(self, consumer: str, limit: int, visibility_s: float) -> list[Lease]:
        """Up to `limit` ready records, in the order they became ready, then arrival; hidden
        from every instance's leases for `visibility_s`."""
        self._check_consumer(consumer)
        seen = self._waker.generation
        async with self._transaction("lease") as conn:
            cur = await conn.execute(
                "WITH due AS ("
                " SELECT seq, ready_at FROM spool_deliveries"
                f" WHERE consumer = %(c)s AND state = {QUEUED} AND ready_at <= {_NOW}"
                " ORDER BY ready_at, seq LIMIT %(n)s FOR UPDATE SKIP LOCKED),"
                " leased AS (UPDATE spool_deliveries d SET leased = true,"
                f"  lease_owner = %(me)s, ready_at = {_NOW} + %(vis)s, attempts = d.attempts + 1"
                "  FROM due WHERE d.consumer = %(c)s AND d.seq = due.seq"
                "  RETURNING d.seq, d.attempts - 1 AS attempts, d.last_error, due.ready_at)"
                " SELECT l.attempts, l.last_error, r.data, r.raw FROM leased l"
                " JOIN spool_records r ON r.seq = l.seq ORDER BY l.ready_at, l.seq",
                {"c": consumer, "n": max(limit, 0), "me": self._instance, "vis": visibility_s},
            )
            rows = await cur.fetchall()
            next_due: float | None = None
            if not rows:
                cur = await conn.execute(
                    f"SELECT MIN(ready_at) - {_NOW} FROM spool_deliveries"
                    f" WHERE consumer = %s AND state = {QUEUED}",
                    (consumer,),
                )
                row = await cur.fetchone()
                next_due = None if row is None or row[0] is None else float(row[0])
        self._committed(durable=False)
        if rows:
            self._waker.due_in(consumer, visibility_s)
        else:
            self._waker.idle(consumer, next_due, seen)
        return [
            Lease(sqlite_schema.decode(data, raw), consumer, attempts, last_error)
            for attempts, last_error, data, raw in rows
        ]

    async def wait(self, timeout: float, consumer: str | None = None) -> None:
        await self._waker.wait(timeout, consumer)

    async def release_leases(self, consumer: str) -> int:
        """End every lease on `consumer` now, whichever instance holds it: the records are ready
        at once, first in line. For an instance that just took over `consumer`: its owner died
        holding leases that would otherwise hide those records for minutes. Returns how many."""
        self._check_consumer(consumer)
        async with self._transaction("release") as conn:
            cur = await conn.execute(
                "UPDATE spool_deliveries SET leased = false, lease_owner = '', ready_at = 0"
                f" WHERE consumer = %s AND state = {QUEUED} AND leased",
                (consumer,),
            )
            released = cur.rowcount
        self._committed(durable=True)
        if released:
            self._waker.due_in(consumer, 0.0)
        return released

    async def extend(self, consumer: str, record_ids: Sequence[str], visibility_s: float) -> None:
        """Keep this consumer's leased records hidden for `visibility_s` more."""
        self._check_consumer(consumer)
        async with self._transaction("extend") as conn:
            await conn.execute(
                f"UPDATE spool_deliveries SET ready_at = {_NOW} + %s"
                f" WHERE consumer = %s AND state = {QUEUED} AND leased AND seq IN"
                " (SELECT seq FROM spool_records WHERE id = ANY(%s))",
                (visibility_s, consumer, list(record_ids)),
            )
        self._committed(durable=False)

    async def ack(self, consumer: str, record_ids: Sequence[str]) -> None:
        """Delivered: committed when this returns; never leased to `consumer` again."""
        self._check_consumer(consumer)
        async with self._transaction("ack") as conn:
            await _lock_totals(conn)
            cur = await conn.execute(
                "WITH d AS (DELETE FROM spool_deliveries WHERE consumer = %s AND seq IN"
                " (SELECT seq FROM spool_records WHERE id = ANY(%s)) RETURNING seq)"
                " UPDATE spool_records r SET pending = r.pending - 1 FROM d"
                " WHERE r.seq = d.seq RETURNING r.seq, r.pending",
                (consumer, list(record_ids)),
            )
            settled = [seq for seq, pending in await cur.fetchall() if pending == 0]
            if settled:
                await conn.execute(
                    "WITH gone AS (DELETE FROM spool_records WHERE seq = ANY(%(s)s) AND seq <="
                    " (SELECT COALESCE(max(seq), 0) FROM spool_records) - %(h)s RETURNING size)"
                    " UPDATE spool_totals SET held = held - %(n)s, bytes = bytes -"
                    f" (SELECT COALESCE(sum(size), 0) + count(*) * {ROW_OVERHEAD} FROM gone)"
                    " WHERE id = 1",
                    {"s": settled, "h": self._history_entries, "n": len(settled)},
                )
        self._committed(durable=True)

    async def nack(
        self, consumer: str, record_ids: Sequence[str], *, error: str, retry_in_s: float | None
    ) -> None:
        """Not delivered: ready again in `retry_in_s`, or a dead letter (with `error`) if None."""
        self._check_consumer(consumer)
        state = DEAD if retry_in_s is None else QUEUED
        async with self._transaction("nack") as conn:
            await conn.execute(
                "UPDATE spool_deliveries SET leased = false, lease_owner = '', state = %s,"
                f" ready_at = {_NOW} + %s, last_error = %s"
                f" WHERE consumer = %s AND state = {QUEUED} AND seq IN"
                " (SELECT seq FROM spool_records WHERE id = ANY(%s))",
                (
                    state,
                    retry_in_s or 0.0,
                    _storable(error),
                    consumer,
                    list(record_ids),
                ),
            )
            if retry_in_s is not None:
                # Another instance's consumer may be the one to retry it, if this one dies.
                await self._notify(conn, consumer)
        self._committed(durable=True)
        if retry_in_s is not None:
            self._waker.due_in(consumer, retry_in_s)

    async def retry_now(self, consumer: str) -> int:
        """What waits for a later retry for `consumer` is ready now (the account was fixed)."""
        self._check_consumer(consumer)
        async with self._transaction("retry") as conn:
            cur = await conn.execute(
                f"UPDATE spool_deliveries SET ready_at = {_NOW}"
                f" WHERE consumer = %s AND state = {QUEUED} AND NOT leased AND ready_at > {_NOW}",
                (consumer,),
            )
            count = cur.rowcount
            if count:
                await self._notify(conn)
        self._committed(durable=True)
        self._waker.due_in(consumer, 0.0)
        return count

    def history(self, limit: int) -> list[Record]:
        """The newest records (at most `history_entries`), newest first: as read at the last
        refresh, with this instance's puts since."""
        limit = min(limit, self._history_entries)
        return [r for _, r in self._recent[: max(limit, 0)]]

    def take_drop_notice(self, consumer: str) -> DropNotice | None:
        return self._drops.take(consumer)

    def stats(self) -> SpoolStats:
        """Counters are live; depths and ages are at most `stats_interval_s` old."""
        snap = self._snapshot
        return SpoolStats(
            depth=dict(snap.depth),
            oldest_ready_age_s=dict(snap.oldest_ready_age_s),
            persistent_entries=self._held,
            disk_bytes=snap.disk_bytes,
            dropped=self._drops.totals(),
            rejected=self.rejected,
            commits=self._commits,
            fsyncs=self._fsyncs,
            records_committed=self._records_committed,
        )

    async def refresh_stats(self) -> SpoolStats:
        """`stats()` with depths counted now."""
        await self._refresh(force=True)
        return self.stats()

    # -- plumbing ----------------------------------------------------------------------------

    def _check_consumer(self, consumer: str) -> None:
        if consumer not in self._consumers:
            raise ValueError(
                f"unknown spool consumer {consumer!r}: the spool was opened for "
                f"{', '.join(map(repr, self._consumers)) or 'no consumers'}"
            )

    async def _notify(self, conn: psycopg.AsyncConnection[Any], consumer: str = "") -> None:
        """Wake the consumers of the other instances once this transaction commits."""
        await conn.execute(
            "SELECT pg_notify(%s, %s)", (CHANNEL, Wake(self._origin, consumer).payload())
        )

    def _committed(self, *, durable: bool, inserted: int = 0) -> None:
        self._commits += 1
        if durable:
            self._fsyncs += 1
            if self._metrics is not None:
                self._metrics.spool_fsyncs.inc()
        if inserted:
            self._records_committed += inserted
            if self._metrics is not None:
                self._metrics.spool_records_per_commit.observe(inserted)

    def _remember(self, kept: list[tuple[int, Record]]) -> None:
        """Put this instance's new records into the history it answers from."""
        if kept and self._history_entries:
            # Both newest first (ours were inserted in ascending order).
            merged = heapq.merge(reversed(kept), self._recent, key=lambda pair: -pair[0])
            self._recent = list(itertools.islice(merged, self._history_entries))

    async def _refresh(self, *, force: bool = False) -> None:
        """Read the depths, totals and newest records again (what `stats` and `history` say)."""
        snap = Snapshot(taken_at=time.time())
        async with self._transaction("stats") as conn:
            cur = await conn.execute(
                "SELECT consumer,"
                f" count(*) FILTER (WHERE state = {QUEUED} AND ready_at <= now_s),"
                f" count(*) FILTER (WHERE state = {QUEUED} AND ready_at > now_s AND leased),"
                f" count(*) FILTER (WHERE state = {QUEUED} AND ready_at > now_s AND NOT leased),"
                f" count(*) FILTER (WHERE state = {DEAD})"
                f" FROM spool_deliveries, (SELECT {_NOW} AS now_s) n GROUP BY consumer"
            )
            counted = {row[0]: row[1:] for row in await cur.fetchall()}
            for consumer in sorted({*self._consumers, *counted}):
                for state, n in zip(
                    ("ready", "leased", "retry", "dead"),
                    counted.get(consumer, (0, 0, 0, 0)),
                    strict=True,
                ):
                    snap.depth[(consumer, state)] = int(n)
            cur = await conn.execute(
                f"SELECT d.consumer, {_NOW} - min(r.received_at) FROM spool_deliveries d"
                " JOIN spool_records r ON r.seq = d.seq"
                f" WHERE d.state = {QUEUED} AND d.ready_at <= {_NOW} GROUP BY d.consumer"
            )
            for consumer, age in await cur.fetchall():
                snap.oldest_ready_age_s[consumer] = max(0.0, float(age))
            cur = await conn.execute(
                "SELECT held, pg_total_relation_size('spool_records')"
                " + pg_total_relation_size('spool_deliveries'),"
                " (SELECT COALESCE(max(seq), 0) FROM spool_records)"
                " FROM spool_totals WHERE id = 1"
            )
            row = await cur.fetchone()
            held, top = self._held, self._top
            if row is not None:
                held, snap.disk_bytes, top = int(row[0]), int(row[1]), int(row[2])
            # Decoding records costs: between forced refreshes, read only those newer than the
            # last refresh saw (history is for people to look at: a record committed late with
            # a lower number shows at the next forced refresh).
            since = 0 if force else self._top
            recent: list[tuple[int, Record]] = []
            if top > since:
                cur = await conn.execute(
                    "SELECT seq, data, raw FROM spool_records WHERE seq > %s"
                    " ORDER BY seq DESC LIMIT %s",
                    (since, self._history_entries),
                )
                recent = [
                    (int(seq), sqlite_schema.decode(d, w)) for seq, d, w in await cur.fetchall()
                ]
        self._snapshot, self._held, self._top = snap, held, top
        # Keep our puts that committed while this read ran, and (unforced) what we had.
        newer = [pair for pair in self._recent if pair[0] > top]
        older = [] if force else [pair for pair in self._recent if pair[0] <= since]
        self._recent = (newer + recent + older)[: self._history_entries]

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self._stats_interval)
            if not self._open:
                return
            try:
                await self._refresh()
                if self._dedupe_window > 0:
                    async with self._transaction("dedupe prune") as conn:
                        await dedupe.prune(conn, self._dedupe_window, time.time())
            except SpoolError as e:
                self._warn("stats", "spool housekeeping failed", error=str(e))

    async def _subscribe(self) -> psycopg.AsyncConnection[Any]:
        """A connection of its own that LISTENs (a pooled one would lose its notifications)."""
        conn = await self._connect()
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            await conn.close()
            raise
        self.listening = True
        return conn

    async def _listen(self) -> None:
        """Wake the consumers on every NOTIFY; poll while the listening connection is down."""
        backoff = Backoff(base_s=0.5, cap_s=self._poll_interval * 5, jitter=Jitter.EQUAL)
        failures = 0
        while self._open:
            if self._listener is None:
                try:
                    self._listener = await self._subscribe()
                except SpoolError as e:
                    self._warn("listen", "spool cannot listen for notifications", error=str(e))
                else:
                    failures = 0
                    self._waker.notify()  # whatever was put while nobody listened
            if self._listener is not None:
                try:
                    async with self._listener as conn:
                        await self._dispatch(conn)
                except psycopg.Error as e:
                    self._warn(
                        "listen",
                        "spool lost its notification connection; polling until it is back",
                        database=self.target,
                        error=scrub(str(e), self._dsn),
                    )
                self._listener = None
                self.listening = False
            delay = backoff.delay(failures)
            failures += 1
            # Poll meanwhile: a disconnected listener misses notifications.
            while delay > 0:
                step = min(delay, self._poll_interval)
                await asyncio.sleep(step)
                delay -= step
                self._waker.notify()

    async def _dispatch(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async for note in conn.notifies():
            wake = Wake.parse(note.payload)
            if wake.origin == self._origin:
                continue  # ours: our consumers were woken at the commit
            if wake.consumer:
                self._waker.due_in(wake.consumer, 0.0)
            else:
                self._waker.notify()

    def _warn(self, key: str, event: str, **fields: Any) -> None:
        allowed, suppressed = self._log_limit.allow(key)
        if allowed:
            log.warning(event, suppressed=suppressed, **fields)


@dataclass(slots=True)
class _Copies:
    """Which records of one commit are identical to a stored one and are not stored again."""

    claimed: set[bytes] | None  # keys no stored record holds (None: de-duplication is off)
    taken: set[bytes] = field(default_factory=set)  # claimed keys of records stored now
    skipped: Counter[Kind] = field(default_factory=Counter)

    def split(self, records: list[Record]) -> tuple[list[Record], list[Record]]:
        """(the records to store, the identical ones not to)."""
        if self.claimed is None:
            return records, []
        keep: list[Record] = []
        identical: list[Record] = []
        keys: set[bytes] = set()
        for r in records:
            key = dedupe.dedupe_key(r)
            if key not in self.claimed or key in self.taken or key in keys:
                identical.append(r)
            else:
                keys.add(key)
                keep.append(r)
        return keep, identical

    def took(self, stored: list[Record], identical: list[Record]) -> None:
        """A put was accepted: its keys are taken now (a refused put leaves them free)."""
        if self.claimed is not None:
            self.taken.update(dedupe.dedupe_key(r) for r in stored)
            self.skipped.update(r.kind for r in identical)

    def unused(self) -> set[bytes]:
        """Keys claimed for records that were refused: nothing stored holds them."""
        return set() if self.claimed is None else self.claimed - self.taken


@dataclass(slots=True)
class _Room:
    victims: list[int] = field(default_factory=list)  # seqs of held records to drop
    dropped: set[int] = field(default_factory=set)  # indexes of incoming records to drop
    freed: int = 0
    kinds: Counter[Kind] = field(default_factory=Counter)
    owed: dict[str, Counter[Kind]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Wake:
    """A NOTIFY payload: new records for every consumer, or news for one consumer (a nack
    with a retry time: that consumer leases again and learns when the retry is due)."""

    origin: str  # the spool that sent it; it woke its own consumers when it committed
    consumer: str = ""  # "" = every consumer

    def payload(self) -> str:
        return f"{self.origin} {self.consumer}"

    @classmethod
    def parse(cls, payload: str) -> Wake:
        origin, _, consumer = payload.partition(" ")
        return cls(origin, consumer)


async def _lock_totals(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
    """Lock the limits row (first, in every writing transaction) and read it."""
    cur = await conn.execute("SELECT held, bytes FROM spool_totals WHERE id = 1 FOR UPDATE")
    row = await cur.fetchone()
    if row is None:
        raise SpoolError(_NO_TOTALS)
    return int(row[0]), int(row[1])


def _storable(error: str) -> str:
    """An error text PostgreSQL can store (text holds no NUL), bounded."""
    return error.replace("\x00", "\\x00")[:_MAX_ERROR_CHARS]


def _storage_full(error: Exception) -> SpoolFull:
    """What a sender hears when the database failed: retry later (503 + Retry-After)."""
    return SpoolUnavailable(f"{error}", retry_after_s=30)
