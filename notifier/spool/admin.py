"""`notifier spool ...`: inspect and repair the spool file, also while the service runs.

These functions open the SQLite file directly (WAL lets them read beside the running service;
their writes wait for its lock briefly). The service notices a change made here within a second
and wakes its consumers.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notifier.records import Record
from notifier.spool import schema
from notifier.spool.base import DeliveryState, SpoolError
from notifier.spool.schema import DEAD, QUEUED, ConsumerDepth


class AdminError(SpoolError):
    """Something the operator can fix: the message says what."""


@dataclass(frozen=True, slots=True)
class Stats:
    path: str
    file_bytes: int
    stored: int  # records in the file, delivered history included
    pending: int  # records some consumer is still owed
    consumers: list[ConsumerDepth]
    dropped: dict[str, int]  # reason -> count, since the file was created


@dataclass(frozen=True, slots=True)
class Delivery:
    consumer: str
    state: DeliveryState
    attempts: int
    last_error: str
    ready_at: float | None  # when it may be tried next (queued states)


@dataclass(frozen=True, slots=True)
class RecordRow:
    id: str
    kind: str
    received_at: float
    device: str
    code: str
    severity: str
    text: str
    deliveries: list[Delivery] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RecordDetail:
    record: dict[str, Any]  # Record.to_dict()
    deliveries: list[Delivery]


@dataclass(frozen=True, slots=True)
class Changed:
    action: str
    deliveries: int
    records_deleted: int = 0


def stats(data_dir: str | Path) -> Stats:
    with _open(data_dir) as conn:
        now = time.time()
        depths = [schema.consumer_depth(conn, consumer, now) for consumer in _consumers(conn)]
        path = schema.spool_path(data_dir)
        return Stats(
            path=str(path),
            file_bytes=schema.spool_bytes(path),
            stored=conn.execute("SELECT COUNT(*) FROM records").fetchone()[0],
            pending=conn.execute("SELECT COUNT(*) FROM records WHERE pending > 0").fetchone()[0],
            consumers=depths,
            dropped=dict(conn.execute("SELECT reason, n FROM drops ORDER BY reason")),
        )


def list_records(
    data_dir: str | Path, state: str | None = None, limit: int = 50
) -> list[RecordRow]:
    """Records newest first; `state` keeps those with a delivery in that state ("done": all
    consumers served, kept as history)."""
    wanted = None if state is None else _parse_state(state)
    with _open(data_dir) as conn:
        consumers = _consumers(conn)
        out: list[RecordRow] = []
        # Newest first, filtered here: the file has no index by state and seq together, and
        # an operator's list is short.
        for seq, data, raw, pending in conn.execute(
            "SELECT seq, data, raw, pending FROM records ORDER BY seq DESC"
        ):
            deliveries = _deliveries(conn, consumers, seq)
            if wanted is DeliveryState.DONE and pending > 0:
                continue
            if wanted not in (None, DeliveryState.DONE) and all(
                d.state is not wanted for d in deliveries
            ):
                continue
            r = schema.decode(data, raw)
            out.append(
                RecordRow(
                    r.id,
                    r.kind.value,
                    r.received_at,
                    r.device,
                    r.code,
                    r.severity.value,
                    r.text[:120],
                    deliveries,
                )
            )
            if len(out) >= limit:
                break
        return out


def show(data_dir: str | Path, record_id: str) -> RecordDetail:
    """One record with every delivery: state, attempts and the last error (e.g. a 550 reply)."""
    with _open(data_dir) as conn:
        row = conn.execute(
            "SELECT seq, data, raw FROM records WHERE id = ?", (record_id,)
        ).fetchone()
        if row is None:
            raise AdminError(_not_found(record_id))
        record: Record = schema.decode(row[1], row[2])
        return RecordDetail(record.to_dict(), _deliveries(conn, _consumers(conn), row[0]))


def retry(data_dir: str | Path, record_id: str | None = None, dead: bool = False) -> Changed:
    """Make dead deliveries ready again (attempts start over): of one record, or all."""
    if (record_id is None) == (not dead):
        raise AdminError("spool retry: give a record ID or --dead, not both")
    with _open(data_dir) as conn:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        where: tuple[str, tuple[int, ...]] = ("", ())
        if record_id is not None:
            row = conn.execute("SELECT seq FROM records WHERE id = ?", (record_id,)).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                raise AdminError(_not_found(record_id))
            where = (" AND seq = ?", (row[0],))
        n = 0
        for consumer in _consumers(conn):
            n += conn.execute(
                "UPDATE deliveries SET state = ?, leased = 0, ready_at = ?, attempts = 0 "
                "WHERE consumer = ? AND state = ?" + where[0],
                (QUEUED, now, consumer, DEAD, *where[1]),
            ).rowcount
        conn.execute("COMMIT")
        return Changed("retry", n)


def purge_dead(data_dir: str | Path) -> Changed:
    """Delete dead deliveries, and records nobody is owed any more."""
    return _purge(data_dir, None, "AND state = ?", (DEAD,))


def purge_consumer(data_dir: str | Path, consumer: str) -> Changed:
    """Delete every delivery owed to `consumer` (a destination removed from the config)."""
    return _purge(data_dir, consumer, "", ())


def _purge(data_dir: str | Path, only: str | None, where: str, params: tuple[int, ...]) -> Changed:
    with _open(data_dir) as conn:
        consumers = _consumers(conn)
        if only is not None and only not in consumers:
            raise AdminError(
                f"the spool owes nothing to {only!r}; it knows {', '.join(consumers) or 'none'}"
            )
        conn.execute("BEGIN IMMEDIATE")
        n = deleted = 0
        for consumer in consumers if only is None else [only]:
            seqs = [
                seq
                for (seq,) in conn.execute(
                    f"DELETE FROM deliveries WHERE consumer = ? {where} RETURNING seq",
                    (consumer, *params),
                ).fetchall()
            ]
            n += len(seqs)
            for seq in seqs:
                (pending,) = conn.execute(
                    "UPDATE records SET pending = pending - 1 WHERE seq = ? RETURNING pending",
                    (seq,),
                ).fetchone()
                if pending <= 0:
                    deleted += conn.execute("DELETE FROM records WHERE seq = ?", (seq,)).rowcount
        conn.execute("COMMIT")
        return Changed("purge", n, deleted)


def render(result: object, as_json: bool = False) -> str:
    """What the CLI prints for any result above."""
    if as_json:
        return json.dumps(_plain(result), indent=2, ensure_ascii=False)
    if isinstance(result, Stats):
        return _render_stats(result)
    if isinstance(result, list):
        if not result:
            return "no records"
        return "\n".join(_render_row(r) for r in result if isinstance(r, RecordRow))
    if isinstance(result, RecordDetail):
        return _render_detail(result)
    if isinstance(result, Changed):
        extra = f", {result.records_deleted} records deleted" if result.action == "purge" else ""
        return f"{result.action}: {result.deliveries} deliveries{extra}"
    return str(result)


# -- moving to PostgreSQL (`spool migrate`) ----------------------------------------------------

MIGRATED_KEY = "migrated_to_postgresql"  # meta key: when this file was moved into a database


@dataclass(frozen=True, slots=True)
class Queued:
    """What the SQLite spool still owes: records by the consumers that are owed them."""

    by_consumers: dict[tuple[str, ...], list[Record]]  # in arrival order
    dead: int  # dead-lettered deliveries (not moved)
    migrated_at: str  # "" unless the file was moved before


def queued(data_dir: str | Path) -> Queued:
    """The queued deliveries of the spool file (ready, leased or waiting for a retry)."""
    with _open(data_dir) as conn:
        owed: dict[int, list[str]] = {}
        rows: dict[int, Record] = {}
        for seq, consumer, data, raw in conn.execute(
            "SELECT r.seq, d.consumer, r.data, r.raw FROM deliveries d"
            " JOIN records r ON r.seq = d.seq WHERE d.state = ? ORDER BY r.seq, d.consumer",
            (QUEUED,),
        ):
            owed.setdefault(seq, []).append(consumer)
            if seq not in rows:
                rows[seq] = schema.decode(data, raw)
        dead = conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = ?", (DEAD,)).fetchone()
        mark = conn.execute("SELECT value FROM meta WHERE key = ?", (MIGRATED_KEY,)).fetchone()
    by_consumers: dict[tuple[str, ...], list[Record]] = {}
    for seq, consumers in owed.items():
        by_consumers.setdefault(tuple(consumers), []).append(rows[seq])
    return Queued(by_consumers, int(dead[0]), str(mark[0]) if mark else "")


def mark_migrated(data_dir: str | Path, at: float) -> None:
    """Note in the file that its records were moved, so a second `migrate` cannot move (and
    mail) them again."""
    with _open(data_dir) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (MIGRATED_KEY, _when(at))
        )


# -- helpers -----------------------------------------------------------------------------------


@contextmanager
def _open(data_dir: str | Path) -> Iterator[sqlite3.Connection]:
    path = schema.spool_path(data_dir)
    if not path.exists():
        raise AdminError(
            f"no spool at {path}: the service has not run with data_dir={data_dir} yet"
        )
    try:
        conn = schema.connect(path)
    except sqlite3.Error as e:
        raise AdminError(f"cannot open the spool {path}: {e}") from None
    try:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None or version[0] != str(schema.SCHEMA_VERSION):
            raise AdminError(f"{path} is not a spool this notifier can read")
        yield conn
    except sqlite3.Error as e:
        raise AdminError(f"spool {path}: {e}") from None
    finally:
        conn.close()


def _consumers(conn: sqlite3.Connection) -> list[str]:
    row = conn.execute("SELECT value FROM meta WHERE key = 'consumers'").fetchone()
    return list(json.loads(row[0])) if row else []


def _state(state: int, leased: int, due: int) -> DeliveryState:
    if state == DEAD:
        return DeliveryState.DEAD
    if due:
        return DeliveryState.LEASED if leased else DeliveryState.RETRY
    return DeliveryState.READY


def _deliveries(conn: sqlite3.Connection, consumers: list[str], seq: int) -> list[Delivery]:
    now = time.time()
    out = []
    for consumer in consumers:
        row = conn.execute(
            "SELECT state, leased, ready_at, attempts, last_error FROM deliveries "
            "WHERE consumer = ? AND seq = ?",
            (consumer, seq),
        ).fetchone()
        if row is None:
            out.append(Delivery(consumer, DeliveryState.DONE, 0, "", None))
            continue
        state, leased, ready_at, attempts, error = row
        out.append(
            Delivery(consumer, _state(state, leased, ready_at > now), attempts, error, ready_at)
        )
    return out


def _parse_state(state: str) -> DeliveryState:
    try:
        return DeliveryState(state)
    except ValueError:
        names = ", ".join(s.value for s in DeliveryState)
        raise AdminError(f"unknown state {state!r}: use one of {names}") from None


def _not_found(record_id: str) -> str:
    return (
        f"no record {record_id!r} in the spool: it was delivered and left the history, "
        "or the id is mistyped (`notifier spool list` shows ids)"
    )


def _plain(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _render_stats(s: Stats) -> str:
    lines = [
        f"spool     {s.path} ({s.file_bytes} bytes)",
        f"records   {s.pending} pending, {s.stored} stored (history included)",
    ]
    for c in s.consumers:
        age = "" if c.oldest_ready_age_s is None else f", oldest ready {c.oldest_ready_age_s:.0f}s"
        lines.append(
            f"consumer  {c.consumer}: {c.ready} ready, {c.leased} leased, {c.retry} retry, "
            f"{c.dead} dead{age}"
        )
    drops = ", ".join(f"{k} {v}" for k, v in s.dropped.items()) or "none"
    lines.append(f"dropped   {drops}")
    return "\n".join(lines)


def _render_row(r: RecordRow) -> str:
    states = " ".join(f"{d.consumer}:{d.state.value}" for d in r.deliveries)
    return f"{r.id}  {_when(r.received_at)}  {r.kind:<5}  {r.device or '-'}  {states}  {r.text}"


def _render_detail(d: RecordDetail) -> str:
    rec = d.record
    lines = [f"{k:<12} {v}" for k, v in rec.items() if v not in ("", None, {})]
    for dl in d.deliveries:
        line = f"delivery     {dl.consumer}: {dl.state.value}, {dl.attempts} attempts"
        if dl.ready_at is not None and dl.state is not DeliveryState.DEAD:
            line += f", next {_when(dl.ready_at)}"
        if dl.last_error:
            line += f", last error: {dl.last_error}"
        lines.append(line)
    return "\n".join(lines)
