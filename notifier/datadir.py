"""data_dir holds what only the service may read: the spool and the alarm state (SQLite with
their -wal / -shm files), the outbox's mails, the OAuth2 token store and its key, the lock files.

One rule keeps all of it private whatever umask the service was started with: the process
creates files 0600 and directories 0700 (`private_files`, around every command of the command
line), and `make_data_dir` creates data_dir 0700. SQLite gives a database's -wal, -shm and
-journal files the mode of the database itself, so they follow.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

PRIVATE_UMASK = 0o077


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Inside, this process creates files 0600 and directories 0700 (or stricter)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def make_data_dir(path: str | os.PathLike[str]) -> str:
    """Create `path` (and missing parents) 0700; an existing directory keeps its mode.

    Returns a warning when the directory is readable by its group or by other users, else "".
    Raises OSError when it cannot be created.
    """
    directory = Path(path)
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is cut by the umask, never widened: make it exactly 0700.
        directory.chmod(0o700)
    return exposure_warning(directory.stat().st_mode, directory)


def exposure_warning(mode: int, directory: Path) -> str:
    """The warning for a data_dir of `mode`, or "" when only its owner can read it."""
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return ""
    who = "its group and other users" if mode & stat.S_IROTH else "its group"
    return (
        f"data_dir {directory} (mode {stat.S_IMODE(mode):o}) is readable by {who}: it holds "
        f"alarms, mails and OAuth2 tokens; run `chmod 700 {directory}`"
    )
