"""The process's OAuth2 state: one token store, one HTTP client, one provider per account,
and the pending interactive authorizations. Shared by the mail transports, the web pages and
the CLI, so a sign-in on the page is what the next mail uses."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from notifier.config import AccountSettings, Settings, host_port, parse_listen
from notifier.oauth2.errors import ModeError
from notifier.oauth2.flows import AuthorizationFlows
from notifier.oauth2.modes import validate_mode
from notifier.oauth2.provider import AccountTokenProvider, provider_for_account
from notifier.oauth2.store import TokenStore

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
    """One line per problem in every account's `[accounts.oauth2]`, naming the key."""
    problems: list[str] = []
    redirect = default_redirect_uri(settings)
    for account in oauth2_accounts(settings):
        assert account.oauth2 is not None
        problems += validate_mode(
            account.oauth2, account.name, account.mailbox, redirect, account.transport
        )
    return problems


@dataclass
class OAuth2Runtime:
    store: TokenStore
    http: httpx.AsyncClient
    flows: AuthorizationFlows
    providers: dict[str, AccountTokenProvider] = field(default_factory=dict)
    redirect_uri: str = ""

    @classmethod
    def open(cls, settings: Settings) -> OAuth2Runtime | None:
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
        store = TokenStore.open(settings.data_dir, settings.oauth2.store_secret.get_secret_value())
        # Read once now: a store under another key stops the start with one clear line rather
        # than failing every mail later.
        store.accounts()
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

    def status_rows(self) -> list[dict[str, Any]]:
        """Each account's `AccountTokenProvider.status()` (never a secret), with the times in
        words and the redirect URI to register: for `notifier oauth2 status` and the page."""
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
