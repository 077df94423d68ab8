"""A full disk under data_dir: how to recognise it, and how much room new records may take.

Delivery must go on when the disk is full (sending a mail needs no disk): the SQLite spool and
the alarm store hold their writes in memory then, and only new records are refused. Pure
decisions here; the I/O is in `sqlite.py`.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

# Room the spool keeps free for delivery (leases, acks, alarm state, a checkpoint of the WAL)
# when it decides whether new records still fit: at most this...
HEADROOM_MAX_BYTES = 16 << 20
# ...and at most this share of the file system, so a small one can still be used.
HEADROOM_SHARE = 4
# While records are refused, the WAL is truncated once it takes more than this share of the
# headroom, so the rest always fits a checkpoint.
WAL_SHARE_OF_HEADROOM = 4


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is SQLite or the OS saying that no space is left."""
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(error)
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True, slots=True)
class DiskSpace:
    """The file system under data_dir as the spool sees it; bytes."""

    free: int  # available to us (statvfs f_bavail)
    total: int
    wal: int  # the WAL: a checkpoint may need this much again in the database file
    reusable: int  # free pages inside the database file: new records fit there first

    @property
    def headroom(self) -> int:
        return min(HEADROOM_MAX_BYTES, self.total // HEADROOM_SHARE)

    @property
    def room(self) -> int:
        """Bytes new records may still take (<= 0: refuse them, delivery goes on)."""
        return self.free + self.reusable - self.wal - self.headroom

    @property
    def wal_needs_checkpoint(self) -> bool:
        """Whether the WAL should be checkpointed and truncated now, while records are refused.

        Each byte delivery writes to the WAL takes a byte of free space, and checkpointing the
        WAL may need as much again in the database file: left to grow, it eats the headroom
        until the checkpoint that would give the space back no longer fits (#8)."""
        return self.wal > self.headroom // WAL_SHARE_OF_HEADROOM


def measure(database: Path, page_size: int, free_pages: int) -> DiskSpace:
    """Statvfs of the database's directory and the size of its WAL."""
    st = os.statvfs(database.parent)
    try:
        wal = os.stat(f"{database}-wal").st_size
    except FileNotFoundError:
        wal = 0
    return DiskSpace(
        free=st.f_bavail * st.f_frsize,
        total=st.f_blocks * st.f_frsize,
        wal=wal,
        reusable=page_size * free_pages,
    )


def full_message(data_dir: Path) -> str:
    """The log line: names the directory and what goes on."""
    return f"disk full under data_dir {data_dir}: new records refused, delivery goes on"


# What a refused sender reads (no path: senders need not know the server's layout).
REFUSAL = "disk full under data_dir: new records refused, retry later"
