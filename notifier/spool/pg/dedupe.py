"""Identical records put through several instances are stored once.

A device that has two instances as its two syslog servers (or two HTTP forward targets) sends
each record to both. "Identical" means the same device, kind, code, source, text and device
time; when the device sent no time (time=0) the receive times must lie within
`[spool] dedupe_window_s` of each other.

The mechanism holds under concurrency: `spool_dedupe` has one row per identical-record key
(its primary key), claimed with INSERT … ON CONFLICT in the same transaction that stores the
record. Of two instances putting the same record at once, the second waits on the first's key
and then sees it taken; if the first rolls back, the second stores the record. A row is
remembered for the window (untimed records) or `TIMED_MEMORY_S` (records with a device time:
a device that buffered while one instance was down replays them later with their own time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from notifier.records import Record

# How long a record with its own device time is remembered (at least the window): a device
# replays what it buffered within minutes; an hour bounds the table.
TIMED_MEMORY_S = 3600.0
_PRUNE_CHUNK = 5000


def dedupe_key(record: Record) -> bytes:
    """What makes two records identical, hashed (pure)."""
    fields = [
        record.device,
        record.kind.value,
        record.code,
        record.source,
        record.text,
        record.device_time or 0,
    ]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).digest()


def is_timed(record: Record) -> bool:
    """Whether the device sent its own time (time=0 and no time are the same: none)."""
    return bool(record.device_time)


async def claim(
    conn: psycopg.AsyncConnection[Any], records: Sequence[Record], window_s: float
) -> set[bytes]:
    """The keys of `records` that no identical stored record holds, claimed for them in the
    caller's transaction (the first record with each key stands for it)."""
    first: dict[bytes, Record] = {}
    for r in records:
        first.setdefault(dedupe_key(r), r)
    if not first:
        return set()
    # Sorted: two transactions claiming overlapping keys lock them in the same order.
    keys = sorted(first)
    cur = await conn.execute(
        "INSERT INTO spool_dedupe (key, timed, received_at)"
        " SELECT * FROM unnest(%(k)s::bytea[], %(t)s::bool[], %(r)s::float8[])"
        " ON CONFLICT (key) DO UPDATE SET timed = excluded.timed,"
        " received_at = excluded.received_at"
        # The stored copy is too old to be the same record: this one is new.
        " WHERE abs(spool_dedupe.received_at - excluded.received_at) >"
        "  CASE WHEN spool_dedupe.timed THEN %(memory)s ELSE %(window)s END"
        " RETURNING key",
        {
            "k": keys,
            "t": [is_timed(first[k]) for k in keys],
            "r": [first[k].received_at for k in keys],
            "memory": max(window_s, TIMED_MEMORY_S),
            "window": window_s,
        },
    )
    return {bytes(row[0]) for row in await cur.fetchall()}


async def release(conn: psycopg.AsyncConnection[Any], keys: Iterable[bytes]) -> None:
    """Give back keys claimed for records that were not stored after all (refused)."""
    unused = sorted(keys)
    if unused:
        await conn.execute("DELETE FROM spool_dedupe WHERE key = ANY(%s)", (unused,))


async def prune(conn: psycopg.AsyncConnection[Any], window_s: float, now: float) -> int:
    """Forget keys older than they are remembered; returns how many. Never waits for a row a
    put holds (SKIP LOCKED), so it cannot deadlock with one."""
    cur = await conn.execute(
        "DELETE FROM spool_dedupe WHERE key IN (SELECT key FROM spool_dedupe"
        " WHERE received_at < %(now)s - CASE WHEN timed THEN %(memory)s ELSE %(window)s END"
        " ORDER BY key LIMIT %(n)s FOR UPDATE SKIP LOCKED)",
        {
            "now": now,
            "memory": max(window_s, TIMED_MEMORY_S),
            "window": window_s,
            "n": _PRUNE_CHUNK,
        },
    )
    return cur.rowcount
