"""The token store in a file, for one box.

One file (`data_dir/oauth2-tokens.json`, mode 0600) holds a Fernet token over a JSON object of
account name -> `StoredTokens` (account names are inside the encryption too). The key comes
from a configured secret or from `data_dir/oauth2.key`, created 0600 on first use. Every write
goes to a temporary file that is fsynced and renamed over the old one, so a crash leaves either
the old or the new store, never half of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from notifier.oauth2.errors import OAuth2StoreError
from notifier.oauth2.store import StoredTokens, as_dict, from_dict, key_from_secret, seal, unseal

STORE_FILE = "oauth2-tokens.json"
KEY_FILE = "oauth2.key"
LOCK_FILE = "oauth2-tokens.lock"
# Held while an account refreshes (for every account: refreshes are rare), so that the service
# and a `notifier test-mail` beside it never both use a rotating refresh token.
REFRESH_LOCK_FILE = "oauth2-refresh.lock"


def load_or_create_key_file(path: Path) -> bytes:
    """The key in `path`, created (0600, never overwritten) when the file does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            key = path.read_bytes().strip()
        except OSError as e:
            raise OAuth2StoreError(f"cannot read key file {path}: {e.strerror or e}") from None
        try:
            Fernet(key)
        except ValueError:
            raise OAuth2StoreError(
                f"key file {path} does not hold a valid key: restore it from a backup, or delete "
                "it together with the token store and re-authorize every account"
            ) from None
        return key
    except OSError as e:
        raise OAuth2StoreError(f"cannot create key file {path}: {e.strerror or e}") from None
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)
    return key


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _lock_file(path: Path) -> int:
    """An open descriptor of `path` (created 0600) holding its exclusive lock; blocks."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise OAuth2StoreError(f"cannot open {path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _close_when_taken(taking: asyncio.Future[int]) -> None:
    """The waiter was cancelled: release the lock its thread took after all."""
    if not taking.cancelled() and taking.exception() is None:
        os.close(taking.result())


class FileTokenStore:
    """A `TokenStore` in one encrypted file. Thread-safe; each call reads the file afresh, so a
    `notifier oauth2 authorize` run in another process is seen by the running service. Writes
    hold an advisory lock on a side file, so the service rotating one account's refresh token
    and the CLI storing another's never lose each other's update. The refresh lock is another
    side file, held across the processes of this box."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._fernet = Fernet(key)
        self._lock = threading.Lock()
        self._refresh_locks: dict[str, asyncio.Lock] = {}

    @property
    def where(self) -> str:
        return str(self.path)

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], secret: str = "") -> FileTokenStore:
        """The store under `data_dir`, keyed by `secret` if given, else by the key file."""
        directory = Path(data_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OAuth2StoreError(f"cannot create {directory}: {e.strerror or e}") from None
        key = key_from_secret(secret) if secret else load_or_create_key_file(directory / KEY_FILE)
        return cls(directory / STORE_FILE, key)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread and every other process, for one read-modify-write."""
        with self._lock:
            fd = _lock_file(self.path.with_name(LOCK_FILE))
            try:
                yield
            finally:
                os.close(fd)  # releases the lock

    async def get(self, account: str) -> StoredTokens | None:
        with self._lock:
            record = self._read().get(account)
        return from_dict(record) if isinstance(record, dict) else None

    async def put(self, account: str, tokens: StoredTokens) -> None:
        """Store `tokens` for `account` durably (fsynced before this returns)."""
        tokens = replace(tokens, updated_at=tokens.updated_at or time.time())
        with self._exclusive():
            data = self._read()
            data[account] = as_dict(tokens)
            self._write(data)

    async def delete(self, account: str) -> bool:
        with self._exclusive():
            data = self._read()
            found = data.pop(account, None) is not None
            if found:
                self._write(data)
        return found

    async def accounts(self) -> list[str]:
        with self._lock:
            return sorted(self._read())

    @contextlib.asynccontextmanager
    async def refreshing(self, account: str) -> AsyncIterator[StoredTokens | None]:
        async with self._refresh_locks.setdefault(account, asyncio.Lock()):
            # flock waits in a thread: another process refreshing must not stop this loop.
            taking = asyncio.ensure_future(
                asyncio.to_thread(_lock_file, self.path.with_name(REFRESH_LOCK_FILE))
            )
            try:
                fd = await asyncio.shield(taking)
            except asyncio.CancelledError:
                taking.add_done_callback(_close_when_taken)
                raise
            try:
                yield await self.get(account)
            finally:
                os.close(fd)  # releases the lock

    async def close(self) -> None:
        return None

    def _read(self) -> dict[str, Any]:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise OAuth2StoreError(f"cannot read {self.path}: {e.strerror or e}") from None
        data = unseal(self._fernet, blob, self.where)
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        blob = seal(self._fernet, data)
        directory = self.path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=".oauth2-tokens.", dir=directory)
        except OSError as e:
            raise OAuth2StoreError(f"cannot write in {directory}: {e.strerror or e}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(blob + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise OAuth2StoreError(f"cannot write {self.path}: {e.strerror or e}") from None
        _fsync_dir(directory)
