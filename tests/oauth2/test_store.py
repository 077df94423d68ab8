"""The token stores: one contract over the file and the PostgreSQL store (round trip, accounts,
the wrong key, the refresh lock, copying one into the other), then what is particular to each:
the file is private and atomic; the database keeps only sealed rows, in the spool's schema."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from notifier.config import load_settings
from notifier.oauth2.errors import OAuth2StoreError, TokenStoreUnavailable
from notifier.oauth2.filestore import KEY_FILE, LOCK_FILE, STORE_FILE, FileTokenStore
from notifier.oauth2.pgstore import PostgresTokenStore
from notifier.oauth2.runtime import copy_file_store_to_database
from notifier.oauth2.store import StoredTokens, TokenStore, copy_tokens
from notifier.spool.pg import schema
from tests.conftest import free_port
from tests.service import render_toml

REFRESH = "0.AR8A-refresh-token-value-xyz"
ACCESS = "eyJhbGciOiJSUzI1NiJ9.access-token-value"
SECRET = "the cluster's store secret"

Opener = Callable[[str], Awaitable[TokenStore]]


def _tokens(refresh: str = REFRESH) -> StoredTokens:
    return StoredTokens(
        client_id="c",
        token_endpoint="https://t",
        refresh_token=refresh,
        access_token=ACCESS,
        expires_at=2e9,
        scope="smtp",
    )


@pytest.fixture(params=["file", "postgresql"])
async def opener(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[str], Awaitable[TokenStore]]]:
    """Opens the store of this backend with a secret; each call is another process (or
    instance) on the same store. Closed afterwards."""
    opened: list[TokenStore] = []
    dsn = str(request.getfixturevalue("pg_dsn")) if request.param == "postgresql" else ""

    async def open_store(secret: str) -> TokenStore:
        store: TokenStore
        if dsn:
            store = await PostgresTokenStore.open(dsn, secret)
        else:
            store = FileTokenStore.open(tmp_path, secret)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


async def test_a_stored_record_is_read_back_by_another_process(opener: Opener) -> None:
    await (await opener(SECRET)).put("ops", _tokens())

    again = await (await opener(SECRET)).get("ops")

    assert again is not None and again.refresh_token == REFRESH and again.access_token == ACCESS
    assert again.updated_at > 0
    assert REFRESH not in repr(again)


async def test_accounts_are_independent(opener: Opener) -> None:
    store = await opener(SECRET)
    await store.put("ops", _tokens())
    await store.put("noc", StoredTokens(client_id="other"))
    assert await store.accounts() == ["noc", "ops"]
    assert await store.delete("noc") and await store.accounts() == ["ops"]
    assert await store.get("noc") is None
    assert not await store.delete("noc")
    replaced = _tokens(refresh="the rotated one")
    await store.put("ops", replaced)
    stored = await store.get("ops")
    assert stored is not None and stored.refresh_token == "the rotated one"


async def test_the_wrong_key_is_a_clear_error(opener: Opener) -> None:
    await (await opener("first secret")).put("ops", _tokens())
    other = await opener("another secret")
    for call in (other.get("ops"), other.accounts()):
        with pytest.raises(OAuth2StoreError) as caught:
            await call
        message = str(caught.value)
        assert "cannot be decrypted with this key" in message
        assert "re-authorize" in message and "restore the key" in message


async def test_a_second_refresher_waits_and_reads_what_the_first_stored(opener: Opener) -> None:
    """The single-flight lock: two holders (two processes, or two instances on the database)
    never hold an account's refresh lock at once, and the second sees the first's answer."""
    first, second = await opener(SECRET), await opener(SECRET)
    await first.put("ops", _tokens(refresh="rt-1"))
    order: list[str] = []
    seen: list[str | None] = []

    async def refresh(store: TokenStore, name: str, rotated: str) -> None:
        async with store.refreshing("ops") as stored:
            order.append(f"{name} in")
            seen.append(stored.refresh_token if stored else None)
            if stored is not None and stored.refresh_token == "rt-1":
                await asyncio.sleep(0.3)  # the token endpoint answering
                await store.put("ops", _tokens(refresh=rotated))
            order.append(f"{name} out")

    a = asyncio.create_task(refresh(first, "a", "rt-2"))
    await asyncio.sleep(0.1)
    b = asyncio.create_task(refresh(second, "b", "rt-3"))
    await asyncio.gather(a, b)

    assert order == ["a in", "a out", "b in", "b out"]
    assert seen == ["rt-1", "rt-2"]
    stored = await second.get("ops")
    assert stored is not None and stored.refresh_token == "rt-2"


async def test_a_holder_that_fails_releases_the_refresh_lock(opener: Opener) -> None:
    store = await opener(SECRET)
    with pytest.raises(RuntimeError):
        async with store.refreshing("ops"):
            raise RuntimeError("the token endpoint went away")
    async with asyncio.timeout(5):
        async with (await opener(SECRET)).refreshing("ops") as stored:
            assert stored is None


async def test_many_accounts_refreshing_at_once_each_store_their_answer(opener: Opener) -> None:
    """More accounts refreshing together than the database store has pooled connections:
    each holder's write must not wait for a connection another holder keeps."""
    store = await opener(SECRET)
    accounts = [f"account{i}" for i in range(8)]

    async def refresh(account: str) -> None:
        async with store.refreshing(account):
            await asyncio.sleep(0.1)  # the token endpoint answering
            await store.put(account, _tokens(refresh=f"{account}'s"))

    async with asyncio.timeout(8):
        await asyncio.gather(*(refresh(a) for a in accounts))

    for account in accounts:
        stored = await store.get(account)
        assert stored is not None and stored.refresh_token == f"{account}'s"


async def test_copy_tokens_moves_every_account_into_another_store(
    opener: Opener, tmp_path: Path
) -> None:
    """What `notifier spool migrate --to postgresql` calls: the box's file store into the
    target (the contract's own backend; the source is always a file store)."""
    source = FileTokenStore.open(tmp_path / "old box")
    await source.put("ops", _tokens())
    await source.put("noc", _tokens(refresh="noc's"))
    target = await opener(SECRET)
    await target.put("ops", _tokens(refresh="stale"))

    copied = await copy_tokens(source, target)

    assert copied == ["noc", "ops"]
    assert await target.accounts() == ["noc", "ops"]
    for account in copied:
        assert await target.get(account) == await source.get(account)


# --- the file store -------------------------------------------------------------------------


async def test_files_are_private_and_hold_no_token_in_clear_text(tmp_path: Path) -> None:
    store = FileTokenStore.open(tmp_path)
    # An account name with a character no base64 text has: "ops" alone turns up by chance in
    # one ciphertext of some hundreds (it failed a run that way).
    await store.put("ops.mailbox", _tokens())
    for name in (STORE_FILE, KEY_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([KEY_FILE, LOCK_FILE, STORE_FILE])
    raw = (tmp_path / STORE_FILE).read_bytes()
    for secret in (REFRESH, ACCESS, "refresh-token-value", "access-token-value"):
        assert secret.encode() not in raw
    assert b"ops.mailbox" not in raw  # account names are inside the encryption as well


async def test_replaced_key_file_is_a_clear_error(tmp_path: Path) -> None:
    await FileTokenStore.open(tmp_path).put("ops", _tokens())
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(OAuth2StoreError, match="cannot be decrypted with this key"):
        await FileTokenStore.open(tmp_path).get("ops")


def test_damaged_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("not a key\n")
    with pytest.raises(OAuth2StoreError, match="does not hold a valid key"):
        FileTokenStore.open(tmp_path)


# --- the PostgreSQL store -------------------------------------------------------------------


async def test_the_database_holds_sealed_rows_in_the_spool_schema(pg_dsn: str) -> None:
    store = await PostgresTokenStore.open(pg_dsn, SECRET)
    try:
        await store.put("ops", _tokens())
    finally:
        await store.close()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT account, sealed FROM oauth2_tokens").fetchall()
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    assert [account for account, _ in rows] == ["ops"]
    sealed = bytes(rows[0][1])
    for secret in (REFRESH, ACCESS, "refresh-token-value", "access-token-value", "smtp"):
        assert secret.encode() not in sealed
    assert version == (schema.LATEST,)


async def test_a_row_moved_to_another_account_is_refused(pg_dsn: str) -> None:
    store = await PostgresTokenStore.open(pg_dsn, SECRET)
    try:
        await store.put("ops", _tokens())
        with psycopg.connect(pg_dsn) as conn:
            conn.execute("UPDATE oauth2_tokens SET account = 'noc'")
        with pytest.raises(OAuth2StoreError, match="belongs to another account"):
            await store.get("noc")
    finally:
        await store.close()


async def test_without_a_secret_the_database_store_does_not_open(pg_dsn: str) -> None:
    with pytest.raises(OAuth2StoreError, match="needs \\[oauth2\\] store_secret"):
        await PostgresTokenStore.open(pg_dsn, "")


async def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    dsn = f"postgresql://ops:s3cret-pw@127.0.0.1:{free_port()}/alarms"
    with pytest.raises(TokenStoreUnavailable) as caught:
        await PostgresTokenStore.open(dsn, SECRET, connect_timeout_s=2)
    message = str(caught.value)
    assert "127.0.0.1" in message and "/alarms" in message
    assert "s3cret-pw" not in message and "\n" not in message


@pytest.mark.parametrize("file_key", ["key file", "store secret"])
async def test_a_boxs_file_store_is_copied_into_the_database_it_moves_to(
    tmp_path: Path, pg_dsn: str, file_key: str
) -> None:
    """The function `notifier spool migrate --to postgresql` calls, on the settings of the box
    after the move: the file was sealed with the key file (no secret was configured before)
    or with the secret now configured; either way the database ends up with its tokens."""
    data = tmp_path / "var"
    old_secret = SECRET if file_key == "store secret" else ""
    await FileTokenStore.open(data, old_secret).put("ops", _tokens())
    config = tmp_path / "notifier.toml"
    config.write_text(
        render_toml(
            {
                "data_dir": str(data),
                "spool": {"backend": "postgresql", "dsn": pg_dsn},
                "oauth2": {"store_secret": SECRET},
            }
        )
    )

    copied = await copy_file_store_to_database(load_settings(str(config)))

    assert copied == ["ops"]
    database = await PostgresTokenStore.open(pg_dsn, SECRET)
    try:
        assert await database.get("ops") == await FileTokenStore.open(data, old_secret).get("ops")
    finally:
        await database.close()
