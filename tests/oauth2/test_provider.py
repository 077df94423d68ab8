"""The per-account token provider against the live server: ahead-of-expiry refresh,
single-flight, rotation, revocation, outages."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from notifier.config import AccountSettings, OAuth2Settings
from notifier.oauth2 import (
    AccountTokenProvider,
    AuthorizationFlows,
    FileTokenStore,
    NeedsAuthorization,
    TokenStore,
    TokenUnavailable,
    provider_for_account,
    resolve_mode,
)
from notifier.oauth2.modes import ModeSpec
from notifier.oauth2.pgstore import PostgresTokenStore
from tests.authserver import AuthServer
from tests.oauth2.conftest import PASSWORD, REDIRECT, USER, KeyPair
from tests.pg import PgServer


def _spec(server: AuthServer, **values: object) -> ModeSpec:
    fields: dict[str, object] = {
        "mode": "client_secret_post",
        "client_id": "app",
        "client_secret": SecretStr("s3cret"),
        "token_endpoint": server.token_url,
        "authorization_url": server.authorize_url,
        "scope": "smtp offline_access",
        "redirect_uri": REDIRECT,
    }
    settings = OAuth2Settings(**{**fields, **values})  # type: ignore[arg-type]
    return resolve_mode(settings, USER, "ops")


async def _authorize(server: AuthServer, store: TokenStore, http: httpx.AsyncClient) -> ModeSpec:
    """A person signs in once through the login page."""
    if "app" not in server.clients:
        server.add_client("app", secret="s3cret", redirect_uris=[REDIRECT])
    spec = _spec(server)
    flows = AuthorizationFlows(store, http)
    url, state = flows.start_authorization("ops", spec)
    location = await asyncio.to_thread(server.authorize, url, USER, PASSWORD)
    code = parse_qs(urlsplit(location).query)["code"][0]
    await flows.complete_authorization(state, code)
    return spec


def _provider(
    spec: ModeSpec,
    store: TokenStore,
    http: httpx.AsyncClient,
    *,
    refresh_margin_s: float = 2.0,
    retry_budget_s: float = 5.0,
) -> AccountTokenProvider:
    return AccountTokenProvider(
        "ops",
        spec,
        store,
        http,
        refresh_margin_s=refresh_margin_s,
        retry_budget_s=retry_budget_s,
        retry_base_s=0.1,
    )


async def test_tokens_are_refreshed_ahead_of_expiry_and_never_returned_expired(
    authserver: AuthServer,
    store: FileTokenStore,
    http: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    authserver.access_token_lifetime_s = 4
    provider = _provider(await _authorize(authserver, store, http), store, http)
    seen: set[str] = set()
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        token = await provider.token()
        claims = authserver.verify(token)  # raises if expired or forged
        assert claims["exp"] > time.time() and claims["sub"] == USER
        seen.add(token)
        await asyncio.sleep(0.25)
    # 12 s of 4 s tokens refreshed 2 s early: a new token about every 2 s.
    assert len(seen) >= 4
    assert authserver.token_requests["refresh_token"] == len(seen) - 1
    assert provider.status()["state"] == "ok"
    out = capsys.readouterr()
    for token in seen:
        assert token not in out.out + out.err
    stored = await store.get("ops")
    assert stored is not None and stored.refresh_token
    assert stored.refresh_token not in out.out + out.err


async def test_twenty_concurrent_callers_cause_one_token_request(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    spec = await _authorize(authserver, store, http)
    # A margin longer than the token's hour: the stored token is due for refresh at once.
    provider = _provider(spec, store, http, refresh_margin_s=4000)
    authserver.access_token_lifetime_s = 7200
    tokens = await asyncio.gather(*(provider.token() for _ in range(20)))
    assert len(set(tokens)) == 1
    assert authserver.token_requests["refresh_token"] == 1


async def test_rotated_refresh_token_is_the_one_stored(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    spec = await _authorize(authserver, store, http)
    before = await store.get("ops")
    assert before is not None
    provider = _provider(spec, store, http, refresh_margin_s=7200)
    await provider.token()
    after = await FileTokenStore.open(store.path.parent).get("ops")
    assert after is not None and after.refresh_token != before.refresh_token
    assert authserver.live_refresh_tokens("app") == [after.refresh_token]


async def test_revoked_refresh_token_needs_authorization_until_a_person_signs_in_again(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    spec = await _authorize(authserver, store, http)
    provider = _provider(spec, store, http, refresh_margin_s=7200)
    authserver.revoke_refresh_tokens(USER)
    with pytest.raises(NeedsAuthorization) as caught:
        await provider.token()
    message = str(caught.value)
    assert message.startswith("account ops needs authorization: ")
    assert "revoked" in message and "`notifier oauth2 authorize ops`" in message
    status = provider.status()
    assert status["state"] == "needs authorization" and "revoked" in status["last_error"]
    # Asking again does not hammer the endpoint with the dead grant.
    requests = authserver.token_requests["refresh_token"]
    with pytest.raises(NeedsAuthorization):
        await provider.token()
    assert authserver.token_requests["refresh_token"] == requests
    # A new sign-in (e.g. from `notifier oauth2 authorize`) is picked up without a restart.
    await _authorize(authserver, store, http)
    assert authserver.verify(await provider.token())["sub"] == USER
    assert provider.status()["state"] == "ok"


async def test_never_authorized_account_says_so(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    provider = _provider(_spec(authserver), store, http)
    assert provider.status()["state"] == "needs authorization"
    with pytest.raises(NeedsAuthorization, match="no refresh token is stored yet"):
        await provider.token()
    assert sum(authserver.token_requests.values()) == 0


@pytest.mark.parametrize("kind", ["503", "refuse"])
async def test_token_endpoint_outage_is_retried_until_it_recovers(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient, kind: str
) -> None:
    spec = await _authorize(authserver, store, http)
    provider = _provider(spec, store, http, refresh_margin_s=7200, retry_budget_s=10)
    authserver.outage(1.5, kind)
    token = await provider.token()
    assert authserver.verify(token)["sub"] == USER
    assert provider.status()["state"] == "ok"
    if kind == "503":
        assert authserver.token_requests["refresh_token"] > 1


async def test_outage_longer_than_the_budget_is_a_temporary_error(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    authserver.add_client("daemon", secret="s3cret")
    spec = _spec(authserver, grant="client_credentials", client_id="daemon")
    provider = _provider(spec, store, http, retry_budget_s=0.5)
    authserver.outage(60, "503")
    with pytest.raises(TokenUnavailable) as caught:
        await provider.token()
    assert "account ops" in str(caught.value) and authserver.token_url in str(caught.value)
    assert "HTTP 503" in str(caught.value)
    assert provider.status()["state"] == "error"
    authserver.outage(0, "503")
    assert await provider.token()
    assert provider.status()["state"] == "ok"


async def test_invalidated_token_is_replaced(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    authserver.add_client("daemon", secret="s3cret")
    spec = _spec(authserver, grant="client_credentials", client_id="daemon")
    provider = _provider(spec, store, http)
    first = await provider.token()
    assert await provider.token() == first
    await provider.invalidate(first)
    second = await provider.token()
    assert second != first and authserver.token_requests["client_credentials"] == 2


async def test_password_grant_gets_a_new_grant_when_its_refresh_token_is_revoked(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    authserver.add_client("app", secret="s3cret")
    spec = _spec(
        authserver,
        grant="password",
        resource_owner=USER,
        resource_owner_password=SecretStr(PASSWORD),
    )
    provider = _provider(spec, store, http, refresh_margin_s=7200)
    await provider.token()
    authserver.revoke_refresh_tokens(USER)
    assert authserver.verify(await provider.token())["sub"] == USER
    assert authserver.token_requests["password"] == 2


async def test_google_service_account_mode_against_the_server(
    authserver: AuthServer,
    store: FileTokenStore,
    http: httpx.AsyncClient,
    rsa_keys: KeyPair,
    tmp_path: Path,
) -> None:
    email = "notifier@project.iam.gserviceaccount.com"
    authserver.add_service_account(email, rsa_keys.public_pem, "kid-1", subjects=[USER])
    key_file = tmp_path / "sa.json"
    key_file.write_text(
        json.dumps(
            {
                "client_email": email,
                "private_key_id": "kid-1",
                "private_key": rsa_keys.private_pem.decode(),
                "token_uri": authserver.token_url,
            }
        )
    )
    settings = OAuth2Settings(mode="google_service_account", service_account_file=str(key_file))
    provider = _provider(resolve_mode(settings, USER, "ops"), store, http)
    assert authserver.verify(await provider.token())["sub"] == USER


async def test_provider_for_an_account_from_config(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    authserver.add_client("daemon", secret="s3cret")
    account = AccountSettings(
        name="ops",
        sender_address=USER,
        oauth2=OAuth2Settings(
            mode="client_secret_post",
            grant="client_credentials",
            client_id="daemon",
            client_secret=SecretStr("s3cret"),
            token_endpoint=authserver.token_url,
        ),
    )
    provider = provider_for_account(account, store, http)
    assert provider is not None
    assert authserver.verify(await provider.token())["sub"] == "daemon"
    assert provider_for_account(AccountSettings(name="plain"), store, http) is None


async def test_store_under_another_key_asks_for_authorization_in_plain_words(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    spec = await _authorize(authserver, store, http)
    other = FileTokenStore.open(store.path.parent, secret="not the key the store was written with")
    provider = _provider(spec, other, http)
    with pytest.raises(NeedsAuthorization, match="cannot be decrypted with this key"):
        await provider.token()
    assert provider.status()["state"] == "needs authorization"


async def test_the_provider_is_what_the_smtp_sender_calls(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    from notifier.mail.tokens import TokenProvider

    provider = _provider(_spec(authserver), store, http)
    assert isinstance(provider, TokenProvider)


async def test_instances_on_one_database_refresh_a_rotating_token_once(
    authserver: AuthServer, http: httpx.AsyncClient, pg_dsn: str
) -> None:
    """#9: three instances (each its own store connection and provider) find the token due
    at once. One refreshes under the cluster-wide lock; the others wait, then use the token it
    stored. Refreshing twice would use the rotated-away refresh token: invalid_grant."""
    stores = [await PostgresTokenStore.open(pg_dsn, "cluster secret") for _ in range(3)]
    try:
        spec = await _authorize(authserver, stores[0], http)
        signed_in = await stores[0].get("ops")
        assert signed_in is not None
        # The token from the sign-in is a minute from expiry: due for refresh.
        await stores[0].put("ops", replace(signed_in, expires_at=time.time() + 60))
        providers = [_provider(spec, s, http, refresh_margin_s=120) for s in stores]
        before = authserver.token_requests["refresh_token"]

        tokens = await asyncio.gather(*(p.token() for p in providers))

        assert authserver.token_requests["refresh_token"] - before == 1
        assert authserver.token_refusals == {}
        assert len(set(tokens)) == 1 and authserver.verify(tokens[0])["sub"] == USER
        stored = await stores[2].get("ops")
        assert stored is not None
        assert authserver.live_refresh_tokens("app") == [stored.refresh_token]
    finally:
        for store in stores:
            await store.close()


async def test_a_database_gone_away_makes_mails_wait_rather_than_ask_for_a_sign_in(
    authserver: AuthServer, http: httpx.AsyncClient, pg_server: PgServer, pg_dsn: str
) -> None:
    """The shared store unreachable is temporary (TokenUnavailable: the mails retry), not a
    grant to renew: the account must not show "needs authorization" for a database outage."""
    store = await PostgresTokenStore.open(pg_dsn, "cluster secret", connect_timeout_s=2)
    try:
        spec = await _authorize(authserver, store, http)
        provider = _provider(spec, store, http, refresh_margin_s=4000)  # due for refresh
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{pg_dsn.rsplit("/", 1)[1]}" WITH (FORCE)')

        with pytest.raises(
            TokenUnavailable, match=r"token store oauth2_tokens in PostgreSQL at 127\.0\.0\.1"
        ):
            await provider.token()

        status = provider.status()
        assert status["state"] == "error" and "PostgreSQL" in status["last_error"]
        assert pg_server.password not in status["last_error"]
    finally:
        await store.close()
