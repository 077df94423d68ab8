"""The SQLite spool's tables and the row form of a Record; shared by the spool and the CLI."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier.records import Record
from notifier.spool.base import SpoolError

SPOOL_FILE = "spool.sqlite3"
SCHEMA_VERSION = 1

# Bytes counted against max_disk_bytes per record besides its JSON and raw bytes: the row
# header, the id index, the live-record index and the delivery rows (an estimate).
ROW_OVERHEAD = 256

# Checkpoint after this many fsynced commits or bytes of records, whichever comes first (about
# 4 MB of WAL either way, like SQLite's own automatic checkpoint). The WAL file is reused from
# its start after a checkpoint (overwriting is cheaper to fsync than growing a file); it is
# truncated back to WAL_SIZE_LIMIT only after a burst made it larger.
CHECKPOINT_COMMITS = 250
CHECKPOINT_BYTES = 4 << 20
WAL_SIZE_LIMIT = 64 << 20

# deliveries.state
QUEUED = 0  # ready, leased or waiting for a retry: told apart by ready_at and `leased`
DEAD = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,          -- arrival order in this spool
    id TEXT NOT NULL UNIQUE,
    kind INTEGER NOT NULL,            -- Kind.rank: the drop order
    received_at REAL NOT NULL,
    pending INTEGER NOT NULL,         -- consumers still owed a delivery (dead ones included)
    size INTEGER NOT NULL,            -- len(data) + len(raw)
    data TEXT NOT NULL,               -- Record.to_dict() without raw, as JSON
    raw BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_live ON records(kind, seq) WHERE pending > 0;
CREATE TABLE IF NOT EXISTS deliveries (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state INTEGER NOT NULL,           -- 0 queued, 1 dead
    ready_at REAL NOT NULL,           -- unix time it may be leased: arrival, retry or lease end
    leased INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (consumer, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(consumer, state, ready_at);
CREATE TABLE IF NOT EXISTS drops (reason TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


class SchemaError(SpoolError):
    """The file is not a spool this version can read."""


def spool_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / SPOOL_FILE


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, waiting on locks."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=check_same_thread, timeout=10.0
    )
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def create(conn: sqlite3.Connection) -> None:
    """Create the tables, or check that an existing file has our schema version."""
    # Pages freed by delivered records can go back to the file system (`incremental_vacuum`
    # after a full disk). Only a new, empty file takes it (before WAL mode); on an existing one
    # the pragma would write, which a full disk refuses.
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise SchemaError(f"SQLite refused WAL mode (got {mode!r}): is the file system local?")
    # The spool checkpoints itself, after fsynced commits only: an automatic checkpoint could
    # run after a lease (committed without fsync) and copy pages into the database file
    # without syncing it, then let the WAL be overwritten - a power cut would lose them.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    conn.executescript(SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    elif row[0] != str(SCHEMA_VERSION):
        raise SchemaError(
            f"spool schema version {row[0]} is not {SCHEMA_VERSION}: "
            "this notifier cannot read it; deliver or move the old spool file first"
        )


@dataclass(frozen=True, slots=True)
class ConsumerDepth:
    """A consumer's deliveries by state, and how long its oldest ready record has waited."""

    consumer: str
    ready: int
    leased: int
    retry: int
    dead: int
    oldest_ready_age_s: float | None


def consumer_depth(
    conn: sqlite3.Connection,
    consumer: str,
    now: float,
    totals: tuple[int, int] | None = None,
) -> ConsumerDepth:
    """The one queue-depth query: the spool's snapshot (the status page, the metrics) and
    `notifier spool stats` both count with it.

    `totals`: (queued, dead) when the caller keeps them counted (the spool's writer does);
    else they are counted here, from the index. Queued deliveries are ready unless their
    `ready_at` is still ahead: then they are leased, or waiting for a retry.
    """
    if totals is None:
        by_state = dict(
            conn.execute(
                "SELECT state, COUNT(*) FROM deliveries WHERE consumer = ? GROUP BY state",
                (consumer,),
            ).fetchall()
        )
        totals = by_state.get(QUEUED, 0), by_state.get(DEAD, 0)
    queued, dead = totals
    waiting = dict.fromkeys((0, 1), 0)
    for leased, n in conn.execute(
        "SELECT leased, COUNT(*) FROM deliveries "
        "WHERE consumer = ? AND state = ? AND ready_at > ? GROUP BY leased",
        (consumer, QUEUED, now),
    ):
        waiting[leased] = n
    head = conn.execute(
        "SELECT r.received_at FROM deliveries d JOIN records r ON r.seq = d.seq "
        "WHERE d.consumer = ? AND d.state = ? AND d.ready_at <= ? "
        "ORDER BY d.ready_at LIMIT 1",
        (consumer, QUEUED, now),
    ).fetchone()
    return ConsumerDepth(
        consumer,
        ready=queued - waiting[0] - waiting[1],
        leased=waiting[1],
        retry=waiting[0],
        dead=dead,
        oldest_ready_age_s=None if head is None else max(0.0, now - head[0]),
    )


def rollback(conn: sqlite3.Connection) -> None:
    """Undo the transaction a failed statement left open (if any: SQLite may have ended it)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def spool_bytes(path: Path) -> int:
    """What the spool takes on disk: the database, its WAL and the shared-memory index."""
    return sum(file_size(Path(f"{path}{suffix}")) for suffix in ("", "-wal", "-shm"))


def encode(record: Record) -> tuple[str, bytes]:
    """(JSON without raw, raw bytes): raw is stored as a BLOB, losslessly."""
    data: dict[str, Any] = record.to_dict()
    del data["raw"]
    return _ENCODER.encode(data), record.raw


# json.dumps(data, separators=(",", ":"), ensure_ascii=False) without a new encoder per record.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def decode(data: str, raw: bytes) -> Record:
    return Record.from_dict(json.loads(data), raw=bytes(raw))
