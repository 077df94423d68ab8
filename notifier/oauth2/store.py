"""The token store: refresh tokens and cached access tokens, encrypted at rest.

One file (`data_dir/oauth2-tokens.json`, mode 0600) holds a Fernet token (AES-128-CBC +
HMAC-SHA256) over a JSON object of account name -> `StoredTokens`. The key comes from a
configured secret (stretched with scrypt) or from `data_dir/oauth2.key`, created 0600 on first
use. Every write goes to a temporary file that is fsynced and renamed over the old one, so a
crash leaves either the old or the new store, never half of one.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from notifier.oauth2.errors import OAuth2StoreError
from notifier.oauth2.grants import TokenSet

STORE_FILE = "oauth2-tokens.json"
KEY_FILE = "oauth2.key"
LOCK_FILE = "oauth2-tokens.lock"
# A fixed salt is enough here: the secret protects one file, not a table of passwords.
_SALT = b"notifier oauth2 token store v1"


@dataclass(frozen=True)
class StoredTokens:
    """What is kept for one account. `client_id` and `token_endpoint` record whom the refresh
    token belongs to: after the account is pointed at another client it is not used."""

    client_id: str = ""
    token_endpoint: str = ""
    refresh_token: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    scope: str = ""
    updated_at: float = 0.0
    # Why the account needs a person (plain words, never a secret); "" while it works. Kept in
    # the store so `notifier oauth2 status` in another process sees what the service saw.
    error: str = ""
    error_at: float = 0.0

    @classmethod
    def issued(
        cls,
        tokens: TokenSet,
        *,
        client_id: str,
        token_endpoint: str,
        scope: str,
        previous_refresh_token: str | None,
        now: float,
    ) -> StoredTokens:
        """The record after a token answer: a rotated refresh token replaces the old one, an
        answer without one keeps it."""
        return cls(
            client_id=client_id,
            token_endpoint=token_endpoint,
            refresh_token=tokens.refresh_token or previous_refresh_token,
            access_token=tokens.access_token,
            expires_at=tokens.expires_at,
            scope=tokens.scope or scope,
            updated_at=now,
        )

    def belongs_to(self, client_id: str, token_endpoint: str) -> bool:
        return self.client_id == client_id and self.token_endpoint == token_endpoint


def key_from_secret(secret: str) -> bytes:
    """A Fernet key derived from a configured secret (scrypt, so a short one is still costly)."""
    kdf = Scrypt(salt=_SALT, length=32, n=2**14, r=8, p=1)
    return base64.urlsafe_b64encode(kdf.derive(secret.encode("utf-8")))


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


class TokenStore:
    """Encrypted per-account token records. Thread-safe; each call reads the file afresh, so a
    `notifier oauth2 authorize` run in another process is seen by the running service. Writes
    hold an advisory lock on a side file, so the service rotating one account's refresh token
    and the CLI storing another's never lose each other's update."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._fernet = Fernet(key)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread and every other process, for one read-modify-write."""
        with self._lock:
            lock_path = self.path.with_name(LOCK_FILE)
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:
                raise OAuth2StoreError(f"cannot open {lock_path}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], secret: str = "") -> TokenStore:
        """The store under `data_dir`, keyed by `secret` if given, else by the key file."""
        directory = Path(data_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OAuth2StoreError(f"cannot create {directory}: {e.strerror or e}") from None
        key = key_from_secret(secret) if secret else load_or_create_key_file(directory / KEY_FILE)
        return cls(directory / STORE_FILE, key)

    def get(self, account: str) -> StoredTokens | None:
        with self._lock:
            record = self._read().get(account)
        return _record(record) if isinstance(record, dict) else None

    def put(self, account: str, tokens: StoredTokens) -> None:
        """Store `tokens` for `account` durably (fsynced before this returns)."""
        tokens = replace(tokens, updated_at=tokens.updated_at or time.time())
        with self._exclusive():
            data = self._read()
            data[account] = asdict(tokens)
            self._write(data)

    def delete(self, account: str) -> bool:
        with self._exclusive():
            data = self._read()
            found = data.pop(account, None) is not None
            if found:
                self._write(data)
        return found

    def accounts(self) -> list[str]:
        with self._lock:
            return sorted(self._read())

    def _read(self) -> dict[str, Any]:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise OAuth2StoreError(f"cannot read {self.path}: {e.strerror or e}") from None
        try:
            plain = self._fernet.decrypt(blob.strip())
        except InvalidToken:
            raise OAuth2StoreError(
                f"token store {self.path} cannot be decrypted with this key: the key file or the "
                "configured secret changed; re-authorize the accounts (after deleting the store) "
                "or restore the key"
            ) from None
        try:
            data = json.loads(plain)
        except ValueError:
            raise OAuth2StoreError(f"token store {self.path} is damaged: re-authorize") from None
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        blob = self._fernet.encrypt(json.dumps(data, separators=(",", ":")).encode("utf-8"))
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


def _record(data: dict[str, Any]) -> StoredTokens:
    known = StoredTokens.__dataclass_fields__
    return StoredTokens(**{k: v for k, v in data.items() if k in known})
