"""The token store: encrypted, 0600, atomic, and a clear error for the wrong key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from notifier.oauth2.errors import OAuth2StoreError
from notifier.oauth2.store import KEY_FILE, LOCK_FILE, STORE_FILE, StoredTokens, TokenStore

REFRESH = "0.AR8A-refresh-token-value-xyz"
ACCESS = "eyJhbGciOiJSUzI1NiJ9.access-token-value"


def _tokens() -> StoredTokens:
    return StoredTokens(
        client_id="c",
        token_endpoint="https://t",
        refresh_token=REFRESH,
        access_token=ACCESS,
        expires_at=2e9,
        scope="smtp",
    )


def test_round_trip_and_files_are_private(tmp_path: Path) -> None:
    store = TokenStore.open(tmp_path)
    store.put("ops", _tokens())
    again = TokenStore.open(tmp_path).get("ops")
    assert again is not None and again.refresh_token == REFRESH and again.access_token == ACCESS
    for name in (STORE_FILE, KEY_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([KEY_FILE, LOCK_FILE, STORE_FILE])


def test_no_token_in_clear_text(tmp_path: Path) -> None:
    store = TokenStore.open(tmp_path)
    store.put("ops", _tokens())
    raw = (tmp_path / STORE_FILE).read_bytes()
    for secret in (REFRESH, ACCESS, "refresh-token-value", "access-token-value"):
        assert secret.encode() not in raw
    assert b"ops" not in raw  # account names are inside the encryption as well
    assert REFRESH not in repr(store.get("ops"))


def test_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    TokenStore.open(tmp_path, secret="first secret").put("ops", _tokens())
    with pytest.raises(OAuth2StoreError) as caught:
        TokenStore.open(tmp_path, secret="another secret").get("ops")
    message = str(caught.value)
    assert "cannot be decrypted with this key" in message
    assert "re-authorize" in message and "restore the key" in message


def test_replaced_key_file_is_a_clear_error(tmp_path: Path) -> None:
    TokenStore.open(tmp_path).put("ops", _tokens())
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(OAuth2StoreError, match="cannot be decrypted with this key"):
        TokenStore.open(tmp_path).get("ops")


def test_damaged_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("not a key\n")
    with pytest.raises(OAuth2StoreError, match="does not hold a valid key"):
        TokenStore.open(tmp_path)


def test_accounts_are_independent(tmp_path: Path) -> None:
    store = TokenStore.open(tmp_path)
    store.put("ops", _tokens())
    store.put("noc", StoredTokens(client_id="other"))
    assert store.accounts() == ["noc", "ops"]
    assert store.delete("noc") and store.accounts() == ["ops"]
    assert store.get("noc") is None
