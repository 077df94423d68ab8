"""A small file system mounted under a test's data_dir, and a file that fills it up."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _as_root(*argv: str) -> subprocess.CompletedProcess[str]:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=30)


@contextmanager
def small_filesystem(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of `size` at `path` (created), owned by this user; unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0700,uid={os.getuid()},gid={os.getgid()}"
    mounted = _as_root("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a {size} tmpfs at {path}: {mounted.stderr.strip()} "
            "(the full-disk tests need root or password-less sudo)"
        )
    try:
        yield path
    finally:
        _as_root("umount", "--lazy", str(path))


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file in `directory` until its file system has no byte left; returns the file."""
    path = directory / name
    with path.open("ab", buffering=0) as out:
        for chunk in (b"\0" * 65536, b"\0" * 512):
            while True:
                try:
                    if out.write(chunk) == 0:
                        break
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return path


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
