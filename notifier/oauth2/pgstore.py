"""The token store in the shared PostgreSQL database, for several instances.

One row per account in `oauth2_tokens` (created by the spool's migrations,
`notifier.spool.pg.schema`): the account's `StoredTokens` sealed with the key derived from
`[oauth2] store_secret`, which is why every instance must be configured with the same secret.

A refresh is single-flight across the cluster: `refreshing` holds a session-level advisory lock
keyed by the account while the holder uses the refresh token and stores the answer. Session
level, not transaction level, because the rotated refresh token must be committed the moment it
is stored: with a transaction held open around the refresh, anything failing after the token
endpoint answered would roll the new refresh token back while the provider has already
invalidated the old one. The lock ends with the session, so an instance killed mid-refresh
frees it at once; on any unclean exit the connection is closed rather than returned to the pool
still holding it.

The store has a small pool of its own rather than borrowing the spool's (as the state store
does): a refresh keeps its session for a whole token request, retries included, and that must
never take a connection the spool needs to acknowledge senders. The CLI, which has no spool,
opens the same way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import psycopg
from cryptography.fernet import Fernet
from psycopg_pool import AsyncConnectionPool

from notifier.oauth2.errors import OAuth2StoreError, TokenStoreUnavailable
from notifier.oauth2.store import StoredTokens, as_dict, from_dict, key_from_secret, seal, unseal
from notifier.spool.base import SpoolError
from notifier.spool.pg import schema
from notifier.spool.pg.conninfo import describe, scrub
from notifier.spool.pg.pool import connect, open_pool
from notifier.spool.schema import SchemaError

# "oau2" in ASCII: the first key of every account's refresh lock (the second is the hash of
# the account name). Two-key advisory locks never collide with the one-key migration lock.
REFRESH_LOCK = 0x6F617532

Connection = psycopg.AsyncConnection[Any]


class PostgresTokenStore:
    """A `TokenStore` in a table of the shared database; see the module docstring.

    `dsn` is a secret and never appears in messages (`where` is host:port/dbname)."""

    def __init__(
        self, dsn: str, key: bytes, *, pool_size: int = 4, connect_timeout_s: float = 10.0
    ) -> None:
        self._dsn = dsn
        self._fernet = Fernet(key)
        self._target = describe(dsn)
        self._pool_size = max(2, pool_size)
        self._connect_timeout = connect_timeout_s
        self._pool: AsyncConnectionPool | None = None
        # account -> the connection holding its refresh lock: the holder's write goes through
        # it, so that holders never wait for a pooled connection another holder keeps.
        self._holding: dict[str, Connection] = {}

    @property
    def where(self) -> str:
        return f"oauth2_tokens in PostgreSQL at {self._target}"

    @classmethod
    async def open(
        cls, dsn: str, secret: str, *, pool_size: int = 4, connect_timeout_s: float = 10.0
    ) -> PostgresTokenStore:
        """Connect and bring the schema up to date (the spool's migrations, under their lock).

        Raises `TokenStoreUnavailable` when the database cannot be reached and
        `OAuth2StoreError` without a secret or for a schema newer than this code."""
        if not secret:
            raise OAuth2StoreError(
                "the token store on PostgreSQL needs [oauth2] store_secret (or "
                "store_secret_file), the same on every instance"
            )
        store = cls(
            dsn, key_from_secret(secret), pool_size=pool_size, connect_timeout_s=connect_timeout_s
        )
        await store._start()
        return store

    async def _start(self) -> None:
        try:
            conn = await connect(self._dsn, self._connect_timeout)
            try:
                await schema.migrate(conn)
            finally:
                await conn.close()
            self._pool = await open_pool(
                self._dsn, "notifier-oauth2", self._pool_size, self._connect_timeout
            )
        except SchemaError as e:
            raise OAuth2StoreError(f"token store {self.where}: {e}") from None
        except SpoolError as e:  # its message names the database and the way out
            raise TokenStoreUnavailable(f"token store: {e}") from None
        except psycopg.Error as e:
            raise self._unavailable("preparing the tables", e) from None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _unavailable(self, what: str, error: BaseException) -> TokenStoreUnavailable:
        return TokenStoreUnavailable(
            f"token store {self.where}: {what} failed ({scrub(str(error), self._dsn)}): check "
            "[spool] dsn and that the database server is running and reachable"
        )

    def _live_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise OAuth2StoreError(f"token store {self.where} is closed")
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[Connection]:
        """A pooled connection; database trouble becomes `TokenStoreUnavailable`."""
        try:
            async with self._live_pool().connection() as conn:
                yield conn
        except psycopg.Error as e:
            raise self._unavailable(what, e) from None

    # -- records ---------------------------------------------------------------------------

    def _seal(self, account: str, tokens: StoredTokens) -> bytes:
        # The account is sealed with its record: a row copied onto another account is refused.
        return seal(self._fernet, {"account": account, **as_dict(tokens)})

    def _unseal(self, account: str, sealed: bytes) -> StoredTokens:
        data = unseal(self._fernet, bytes(sealed), self.where)
        if not isinstance(data, dict) or data.pop("account", None) != account:
            raise OAuth2StoreError(
                f"token store {self.where}: the record of account {account} belongs to another "
                f"account: run `notifier oauth2 revoke {account}`, then authorize it again"
            )
        return from_dict(data)

    async def get(self, account: str) -> StoredTokens | None:
        async with self._connection("reading") as conn:
            cur = await conn.execute(
                "SELECT sealed FROM oauth2_tokens WHERE account = %s", (account,)
            )
            row = await cur.fetchone()
        return None if row is None else self._unseal(account, row[0])

    async def put(self, account: str, tokens: StoredTokens) -> None:
        """Store `tokens` for `account`; committed when this returns."""
        if not tokens.updated_at:
            tokens = replace(tokens, updated_at=time.time())
        query = (
            "INSERT INTO oauth2_tokens (account, sealed, updated_at)"
            " VALUES (%s, %s, extract(epoch FROM statement_timestamp()))"
            " ON CONFLICT (account) DO UPDATE"
            " SET sealed = excluded.sealed, updated_at = excluded.updated_at"
        )
        params = (account, self._seal(account, tokens))
        holding = self._holding.get(account)
        if holding is None:
            async with self._connection("writing") as conn:
                await conn.execute(query, params)
            return
        try:
            await holding.execute(query, params)
        except psycopg.Error as e:
            raise self._unavailable("writing", e) from None

    async def delete(self, account: str) -> bool:
        async with self._connection("deleting") as conn:
            cur = await conn.execute("DELETE FROM oauth2_tokens WHERE account = %s", (account,))
            return cur.rowcount > 0

    async def accounts(self) -> list[str]:
        async with self._connection("reading") as conn:
            cur = await conn.execute("SELECT account, sealed FROM oauth2_tokens ORDER BY account")
            rows = await cur.fetchall()
        for account, sealed in rows:
            self._unseal(account, sealed)  # a store under another key says so now
        return [str(account) for account, _ in rows]

    @contextlib.asynccontextmanager
    async def refreshing(self, account: str) -> AsyncIterator[StoredTokens | None]:
        pool = self._live_pool()
        try:
            conn = await pool.getconn()
        except psycopg.Error as e:
            raise self._unavailable("taking the refresh lock", e) from None
        released = False
        try:
            try:
                # Waits while another instance refreshes this account.
                await conn.execute(
                    "SELECT pg_advisory_lock(%s, hashtext(%s))", (REFRESH_LOCK, account)
                )
                cur = await conn.execute(
                    "SELECT sealed FROM oauth2_tokens WHERE account = %s", (account,)
                )
                row = await cur.fetchone()
            except psycopg.Error as e:
                raise self._unavailable("taking the refresh lock", e) from None
            self._holding[account] = conn
            try:
                yield None if row is None else self._unseal(account, row[0])
            finally:
                del self._holding[account]
            with contextlib.suppress(psycopg.Error):
                await conn.execute(
                    "SELECT pg_advisory_unlock(%s, hashtext(%s))", (REFRESH_LOCK, account)
                )
                released = True
        finally:
            if not released:
                # Failed, cancelled or the unlock failed: end the session, and the lock with it.
                with contextlib.suppress(Exception):
                    await conn.close()
            await pool.putconn(conn)
