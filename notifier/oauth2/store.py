"""The token store: what is kept per account, the interface every backend offers, and the
encryption they share.

Two backends implement `TokenStore`: a file under `data_dir` (`filestore.FileTokenStore`, one
box) and a table in the shared PostgreSQL database (`pgstore.PostgresTokenStore`, several
instances). Both seal what they keep with Fernet (AES-128-CBC + HMAC-SHA256); the key comes from
the configured `[oauth2] store_secret` (stretched with scrypt) or, for the file store only, from
a key file it creates.

The interface is async: the provider asks for tokens inside the event loop that also serves the
receivers and the SMTP sessions, and a database round trip (or a lock held by another instance
while it refreshes) must wait without blocking them.
"""

from __future__ import annotations

import base64
import json
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from notifier.oauth2.errors import OAuth2StoreError
from notifier.oauth2.grants import TokenSet

# A fixed salt is enough here: the secret protects one store, not a table of passwords.
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

    def fresh_for(self, now: float, margin_s: float) -> bool:
        """Whether the stored access token is good for more than `margin_s` seconds."""
        return (
            bool(self.access_token)
            and self.expires_at is not None
            and self.expires_at - now > margin_s
        )


class TokenStore(Protocol):
    """Encrypted per-account token records, shared by every process that opens the same store
    (the service, `notifier oauth2 ...`, other instances on the database). Every call reads the
    store afresh. Methods raise `OAuth2StoreError` (its subclass `TokenStoreUnavailable` when
    the store cannot be reached for now) with a message that never holds a secret."""

    @property
    def where(self) -> str:
        """Where the tokens are, for messages: a path, or host:port/dbname."""
        ...

    async def get(self, account: str) -> StoredTokens | None: ...

    async def put(self, account: str, tokens: StoredTokens) -> None:
        """Store `tokens` for `account`; durable when this returns."""
        ...

    async def delete(self, account: str) -> bool:
        """Forget the account's tokens; False when none were stored."""
        ...

    async def accounts(self) -> list[str]:
        """The accounts with stored tokens, sorted. Decrypts every record: a store under
        another key raises here (the service calls it at start)."""
        ...

    def refreshing(self, account: str) -> AbstractAsyncContextManager[StoredTokens | None]:
        """Hold the account's refresh lock (across every process sharing the store) and give
        the record as it is now. Whoever holds it may use the refresh token and `put` the
        answer; another holder waits, then reads what this one stored."""
        ...

    async def close(self) -> None: ...


def key_from_secret(secret: str) -> bytes:
    """A Fernet key derived from a configured secret (scrypt, so a short one is still costly)."""
    kdf = Scrypt(salt=_SALT, length=32, n=2**14, r=8, p=1)
    return base64.urlsafe_b64encode(kdf.derive(secret.encode("utf-8")))


def undecryptable(where: str) -> OAuth2StoreError:
    return OAuth2StoreError(
        f"token store {where} cannot be decrypted with this key: the key file or the "
        "configured secret changed; re-authorize the accounts (after deleting the store) "
        "or restore the key"
    )


def seal(fernet: Fernet, data: Any) -> bytes:
    """`data` as compact JSON, encrypted."""
    return fernet.encrypt(json.dumps(data, separators=(",", ":")).encode("utf-8"))


def unseal(fernet: Fernet, blob: bytes, where: str) -> Any:
    """What `seal` wrapped; `OAuth2StoreError` for another key or damaged data."""
    try:
        plain = fernet.decrypt(blob.strip())
    except InvalidToken:
        raise undecryptable(where) from None
    try:
        return json.loads(plain)
    except ValueError:
        raise OAuth2StoreError(f"token store {where} is damaged: re-authorize") from None


def as_dict(tokens: StoredTokens) -> dict[str, Any]:
    return asdict(tokens)


def from_dict(data: dict[str, Any]) -> StoredTokens:
    """A record from its stored form; keys of a newer version are ignored."""
    known = StoredTokens.__dataclass_fields__
    return StoredTokens(**{k: v for k, v in data.items() if k in known})


async def copy_tokens(source: TokenStore, target: TokenStore) -> list[str]:
    """Copy every account's record from `source` into `target` (a record already in `target`
    is replaced: the source is what was in use). Returns the accounts copied. For
    `notifier spool migrate --to postgresql`: the file store of the box being moved, into the
    database every instance shares."""
    copied: list[str] = []
    for account in await source.accounts():
        tokens = await source.get(account)
        if tokens is not None:
            await target.put(account, tokens)
            copied.append(account)
    return copied
