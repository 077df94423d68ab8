"""The process's OAuth2 state: one token store, one HTTP client, one provider per account,
and the pending interactive authorizations. Shared by the mail transports, the web pages and
the CLI, so a sign-in on the page is what the next mail uses.

The token store follows the spool: a file under data_dir with the SQLite spool, the shared
database with `[spool] backend = "postgresql"` (then a sign-in on one instance is what every
instance uses, and `[oauth2] store_secret` must be set, the same everywhere)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from notifier.config import AccountSettings, Settings, host_port, parse_listen
from notifier.oauth2.errors import ModeError, OAuth2StoreError
from notifier.oauth2.filestore import KEY_FILE, STORE_FILE, FileTokenStore
from notifier.oauth2.flows import AuthorizationFlows
from notifier.oauth2.modes import validate_mode
from notifier.oauth2.provider import AccountTokenProvider, provider_for_account
from notifier.oauth2.store import TokenStore, copy_tokens

TOKEN_ENDPOINT_TIMEOUT_S = 30.0


def when(t: float | None) -> str:
    """A local time for tables and pages; '-' for none."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def oauth2_accounts(settings: Settings) -> list[AccountSettings]:
    return [a for a in settings.accounts if a.oauth2 is not None and a.oauth2.mode]


def default_redirect_uri(settings: Settings) -> str:
    """``http(s)://<http.listen>/oauth2/callback``; a wildcard address becomes ``localhost``
    (the providers accept http://localhost redirects; set redirect_uri for anything else)."""
    listen = parse_listen(settings.http.listen)
    if listen is None:
        return ""
    host = listen.host
    if host in ("0.0.0.0", "::", "127.0.0.1", "::1"):
        host = "localhost"
    scheme = "https" if settings.http.tls_cert_file else "http"
    return f"{scheme}://{host_port(host, listen.port)}/oauth2/callback"


def validate_accounts(settings: Settings) -> list[str]:
    """One line per problem in every account's `[accounts.oauth2]` and in the token store's
    settings, naming the key."""
    problems = store_problems(settings)
    redirect = default_redirect_uri(settings)
    for account in oauth2_accounts(settings):
        assert account.oauth2 is not None
        problems += validate_mode(
            account.oauth2, account.name, account.mailbox, redirect, account.transport
        )
    return problems


def store_problems(settings: Settings) -> list[str]:
    """The shared store needs a configured key: a generated key file would be one instance's,
    and the others could not decrypt what it stored."""
    if (
        settings.spool.backend == "postgresql"
        and oauth2_accounts(settings)
        and not settings.oauth2.store_secret.get_secret_value()
    ):
        return [
            'oauth2.store_secret: with spool.backend = "postgresql" the OAuth2 tokens are kept '
            "in the shared database, and every instance must decrypt them: set [oauth2] "
            "store_secret (or store_secret_file), the same on every instance"
        ]
    return []


async def open_token_store(settings: Settings) -> TokenStore:
    """The configured store: the shared database with the PostgreSQL spool, else the file
    under data_dir. Raises `OAuth2StoreError` (`TokenStoreUnavailable`: the database cannot be
    reached)."""
    secret = settings.oauth2.store_secret.get_secret_value()
    if settings.spool.backend == "postgresql":
        from notifier.oauth2.pgstore import PostgresTokenStore

        return await PostgresTokenStore.open(settings.spool.dsn.get_secret_value(), secret)
    return FileTokenStore.open(settings.data_dir, secret)


async def copy_file_store_to_database(settings: Settings) -> list[str]:
    """For `notifier spool migrate --to postgresql`: copy the token file under data_dir into
    the database of `[spool] dsn` (settings with backend = "postgresql" and store_secret).
    Returns the accounts copied ([] when there is no file).

    The file may be sealed with the configured secret or with the key file it was created
    with (a box that had no store_secret): the secret is tried first, then the key file.
    Raises `OAuth2StoreError` when neither opens it, or the database cannot be reached."""
    if settings.spool.backend != "postgresql":
        raise OAuth2StoreError('copying the token store needs spool.backend = "postgresql"')
    if not (Path(settings.data_dir) / STORE_FILE).exists():
        return []
    secret = settings.oauth2.store_secret.get_secret_value()
    source: TokenStore = FileTokenStore.open(settings.data_dir, secret)
    try:
        await source.accounts()
    except OAuth2StoreError:
        if not (Path(settings.data_dir) / KEY_FILE).exists():
            raise
        source = FileTokenStore.open(settings.data_dir)
    target = await open_token_store(settings)
    try:
        return await copy_tokens(source, target)
    finally:
        await target.close()


@dataclass
class OAuth2Runtime:
    store: TokenStore
    http: httpx.AsyncClient
    flows: AuthorizationFlows
    providers: dict[str, AccountTokenProvider] = field(default_factory=dict)
    redirect_uri: str = ""

    @classmethod
    async def open(cls, settings: Settings) -> OAuth2Runtime | None:
        """None when no account uses OAuth2 (no key file is created then).

        Raises `OAuth2StoreError` when the store cannot be read with the configured key, and
        `ModeError` when an account's settings are incomplete.
        """
        accounts = oauth2_accounts(settings)
        if not accounts:
            return None
        problems = validate_accounts(settings)
        if problems:
            raise ModeError(problems)
        store = await open_token_store(settings)
        try:
            # Read once now: a store under another key stops the start with one clear line
            # rather than failing every mail later.
            await store.accounts()
        except BaseException:
            await store.close()
            raise
        http = httpx.AsyncClient(timeout=TOKEN_ENDPOINT_TIMEOUT_S)
        redirect = default_redirect_uri(settings)
        runtime = cls(store, http, AuthorizationFlows(store, http), redirect_uri=redirect)
        for account in accounts:
            provider = provider_for_account(account, store, http, default_redirect_uri=redirect)
            if provider is not None:
                runtime.providers[account.name] = provider
        return runtime

    def redirect_uri_for(self, account: str) -> str:
        """The redirect URI the account's sign-in uses (register exactly this at the provider)."""
        provider = self.providers.get(account)
        if provider is not None and provider.spec.redirect_uri:
            return provider.spec.redirect_uri
        return self.redirect_uri

    async def observe(self) -> None:
        """Every provider's record read afresh (`AccountTokenProvider.observe`)."""
        for provider in self.providers.values():
            await provider.observe()

    async def status_rows(self) -> list[dict[str, Any]]:
        """Each account's `AccountTokenProvider.status()` (never a secret) as the store has it
        now, with the times in words and the redirect URI to register: for `notifier oauth2
        status` and the page."""
        await self.observe()
        return [
            {
                **(status := provider.status()),
                "expires": when(status["expires_at"]),
                "refreshed": when(status["last_refresh"]),
                "redirect_uri": self.redirect_uri_for(name),
            }
            for name, provider in self.providers.items()
        ]

    async def close(self) -> None:
        await self.http.aclose()
        await self.store.close()
