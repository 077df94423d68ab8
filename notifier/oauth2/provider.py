"""A valid access token per account, whenever the SMTP sender asks.

The provider answers from its cache while the token has more than `refresh_margin_s` left
(Microsoft refuses tokens close to expiry with 501 5.5.127, so the default is 10 minutes),
else it refreshes or re-acquires: one request at a time however many senders ask
(single-flight), token-endpoint outages retried with backoff inside a bounded budget. Permanent
failures (invalid_grant, invalid_client, missing consent, ...) raise `NeedsAuthorization` in
plain words; mails wait in the spool until a person acts.

Single-flight holds across processes too: a refresh runs under the store's refresh lock
(`TokenStore.refreshing`), and whoever gets the lock second reads what the first stored and
uses that token while it is good beyond the margin. On PostgreSQL that lock spans every
instance, so a rotating refresh token is never used twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx

from notifier.backoff import Backoff
from notifier.config import AccountSettings
from notifier.log import get_logger
from notifier.oauth2 import grants
from notifier.oauth2.endpoint import request_token
from notifier.oauth2.errors import (
    NeedsAuthorization,
    OAuth2StoreError,
    TokenEndpointError,
    TokenStoreUnavailable,
    TokenUnavailable,
)
from notifier.oauth2.grants import Grant, TokenSet
from notifier.oauth2.modes import ModeSpec, resolve_mode, scope_covers
from notifier.oauth2.store import StoredTokens, TokenStore

log = get_logger("notifier.oauth2")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

OK = "ok"
NEEDS_AUTHORIZATION = "needs authorization"
ERROR = "error"


class AccountTokenProvider:
    """Structurally a `notifier.mail.tokens.TokenProvider`: `token()` and `invalidate()`."""

    def __init__(
        self,
        account_name: str,
        spec: ModeSpec,
        store: TokenStore,
        http: httpx.AsyncClient,
        clock: Clock = time.time,
        *,
        refresh_margin_s: float = 600.0,
        retry_budget_s: float = 30.0,
        retry_base_s: float = 0.5,
        retry_max_s: float = 5.0,
        permanent_hold_s: float = 300.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.account = account_name
        self.spec = spec
        self._store = store
        self._http = http
        self._clock = clock
        self._margin = refresh_margin_s
        self._retry = Backoff(base_s=retry_base_s, cap_s=retry_max_s)
        self._retry_budget_s = retry_budget_s
        self._permanent_hold = permanent_hold_s
        self._sleep = sleep
        self._cached: TokenSet | None = None
        self._flight: asyncio.Task[TokenSet] | None = None
        self._failure: NeedsAuthorization | None = None
        self._failure_at = 0.0
        self._failure_stamp = 0.0
        self._last_error = ""
        self._last_refresh: float | None = None
        self._temporary_failure = False
        # The record as last read or written, and why the store could not be read: what
        # `status()` reports (`observe()` reads it afresh).
        self._seen: StoredTokens | None = None
        self._store_error = ""

    def __repr__(self) -> str:
        return f"AccountTokenProvider(account={self.account!r}, mode={self.spec.mode!r})"

    async def token(self) -> str:
        """A valid access token. Raises `NeedsAuthorization` (permanent: a person must act) or
        `TokenUnavailable` (temporary: the provider could not be reached; retry later)."""
        cached = self._cached
        if cached is not None and cached.expires_at - self._clock() > self._margin:
            return cached.access_token
        if self._flight is None:
            self._flight = asyncio.create_task(self._acquire())
            self._flight.add_done_callback(self._landed)
        # Shielded: a sender that gives up must not cancel the refresh the others wait for.
        tokens = await asyncio.shield(self._flight)
        return tokens.access_token

    def _landed(self, task: asyncio.Task[TokenSet]) -> None:
        self._flight = None
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported

    async def invalidate(self, token: str) -> None:
        """The SMTP server refused `token`: forget it so the next `token()` gets a fresh one."""
        if self._cached is not None and self._cached.access_token == token:
            self._cached = None
        try:
            stored = await self._store.get(self.account)
            if stored is not None and stored.access_token == token:
                await self._put(replace(stored, access_token=None, expires_at=None, updated_at=0))
        except OAuth2StoreError as e:
            log.warning("oauth2 token store unavailable", account=self.account, error=str(e))

    async def observe(self) -> None:
        """Read the account's record afresh for `status()`: a sign-in by another process or
        instance shows, and so does a store that cannot be read."""
        try:
            self._seen = await self._store.get(self.account)
            self._store_error = ""
        except OAuth2StoreError as e:
            self._store_error = str(e)

    def status(self) -> dict[str, Any]:
        """For the status page and `notifier oauth2 status`: never a secret. Reports the
        record as last read or written (`observe()` first for the store's current one)."""
        state, error = OK, self._last_error
        expires_at = self._cached.expires_at if self._cached else None
        stored = self._usable(self._seen)
        if stored is not None and expires_at is None:
            expires_at = stored.expires_at
        # A sign-in since the failure (this page, or the CLI in another process) clears it.
        signed_in_since = stored is not None and stored.updated_at != self._failure_stamp
        if self._store_error and self._failure is None:
            # Unreadable for now (the database is away): the tokens may well be fine.
            state, error = ERROR, self._store_error
        elif self.spec.interactive and stored is not None and self._scope_changed(stored):
            state, error = NEEDS_AUTHORIZATION, self._scope_advice(stored)
        elif self._failure is not None and not signed_in_since:
            state = NEEDS_AUTHORIZATION
        elif self._failure is None and stored is not None and stored.error:
            # What the last run (or another process) found; the next mail tries again.
            state, error = NEEDS_AUTHORIZATION, error or stored.error
        elif self.spec.interactive and (stored is None or not stored.refresh_token):
            state = NEEDS_AUTHORIZATION
            error = error or "not authorized yet"
        elif self._temporary_failure:
            state = ERROR
        if state == OK and self._failure is not None:
            error = ""
        last_refresh = self._last_refresh or (stored.updated_at if stored else None)
        return {
            "account": self.account,
            "mode": self.spec.mode,
            "grant": str(self.spec.grant),
            "interactive": self.spec.interactive,
            "token_endpoint": self.spec.token_endpoint,
            "state": state,
            "expires_at": expires_at,
            "last_refresh": last_refresh,
            "last_error": error,
        }

    # --- acquisition ---------------------------------------------------------------------------

    def _usable(self, stored: StoredTokens | None) -> StoredTokens | None:
        if stored is None or not stored.belongs_to(self.spec.client_id, self.spec.token_endpoint):
            return None
        return stored

    def _scope_changed(self, stored: StoredTokens) -> bool:
        """The stored sign-in was for another scope (the account's transport changed)."""
        return bool(stored.scope) and not scope_covers(stored.scope, self.spec.scope)

    def _scope_advice(self, stored: StoredTokens) -> str:
        return (
            f"signed in for scope {stored.scope!r}, but this account now asks for "
            f"{self.spec.scope!r} (its transport changed?): sign in again on /oauth2/ or with "
            f"`notifier oauth2 authorize {self.account}`"
        )

    def _saw(self, stored: StoredTokens | None) -> None:
        self._seen = stored
        self._store_error = ""

    async def _put(self, record: StoredTokens) -> None:
        await self._store.put(self.account, record)
        self._saw(record)

    async def _acquire(self) -> TokenSet:
        """Under the store's refresh lock: the token another holder just stored, else a grant."""
        locked = False
        try:
            async with self._store.refreshing(self.account) as stored:
                locked = True
                self._saw(stored)
                return await self._acquire_with(self._usable(stored))
        except OAuth2StoreError as e:
            if locked:
                raise
            return await self._without_store(e)

    async def _without_store(self, error: OAuth2StoreError) -> TokenSet:
        """The store cannot be read: only a refresh token needs it (and a person, if the store
        cannot be decrypted); the other grants work without it."""
        self._store_error = str(error)
        if not self.spec.interactive:
            log.warning("oauth2 token store unavailable", account=self.account, error=str(error))
            return await self._acquire_with(None)
        if isinstance(error, TokenStoreUnavailable):
            # The database is away for now: no refresh without its lock, mails wait and retry.
            return self._still_valid_or_raise(str(error))
        raise await self._needs_authorization(str(error), None) from None

    async def _acquire_with(self, stored: StoredTokens | None) -> TokenSet:
        if stored is not None and self._scope_changed(stored):
            if self.spec.interactive:
                # A refresh keeps the scope a person consented to: only a new sign-in helps.
                raise await self._needs_authorization(self._scope_advice(stored), stored)
            stored = replace(stored, access_token=None)  # the grant below asks for the new one
        now = self._clock()
        if self._failure is not None:
            stamp = stored.updated_at if stored else 0.0
            # A new authorization changes the store; until then asking again is pointless.
            if stamp == self._failure_stamp and now - self._failure_at < self._permanent_hold:
                raise NeedsAuthorization(self.account, self._failure.reason)
        if stored is not None and stored.access_token and stored.fresh_for(now, self._margin):
            # Another instance or process (or this one before a restart) already refreshed.
            assert stored.expires_at is not None  # fresh_for checked it
            self._cached = TokenSet(stored.access_token, stored.expires_at, stored.refresh_token)
            self._failure = None
            self._temporary_failure = False
            self._last_error = ""
            return self._cached
        delays = self._retry.within(self._retry_budget_s)
        for attempt in range(len(delays) + 1):
            try:
                tokens = await self._grant_once(stored)
            except TokenEndpointError as e:
                if e.permanent:
                    raise await self._needs_authorization(e.advice, stored) from None
                self._temporary_failure = True
                self._last_error = e.advice
                if attempt == len(delays):
                    return self._still_valid_or_raise(str(e))
                delay = delays[attempt]
                log.warning(
                    "oauth2 token endpoint failed, retrying",
                    account=self.account,
                    endpoint=self.spec.token_endpoint,
                    error=e.error,
                    reason=e.advice,
                    retry_in_s=delay,
                )
                await self._sleep(delay)
                continue
            except NeedsAuthorization as e:
                raise await self._needs_authorization(e.reason, stored) from None
            await self._keep(tokens, stored)
            return tokens
        raise AssertionError("unreachable")  # pragma: no cover

    def _still_valid_or_raise(self, reason: str) -> TokenSet:
        cached = self._cached
        if cached is not None and cached.expires_at > self._clock():
            # Inside the margin but not expired: better than no token while the provider (or
            # the shared store) is down.
            log.warning(
                "oauth2 refresh failed, using the current token until it expires",
                account=self.account,
                endpoint=self.spec.token_endpoint,
                reason=reason,
            )
            return cached
        raise TokenUnavailable(self.account, reason) from None

    async def _needs_authorization(
        self, reason: str, stored: StoredTokens | None
    ) -> NeedsAuthorization:
        failure = NeedsAuthorization(self.account, reason)
        self._failure = failure
        self._failure_at = self._clock()
        self._failure_stamp = await self._remember_failure(reason, stored)
        self._last_error = reason
        self._cached = None
        log.error(
            "oauth2 account needs authorization",
            account=self.account,
            endpoint=self.spec.token_endpoint,
            reason=reason,
        )
        return failure

    async def _remember_failure(self, reason: str, stored: StoredTokens | None) -> float:
        """Write the reason into the store (for `notifier oauth2 status` in another process);
        returns the record's stamp, which a new sign-in will change."""
        if stored is None:
            stored = StoredTokens(
                client_id=self.spec.client_id,
                token_endpoint=self.spec.token_endpoint,
                scope=self.spec.scope,
                updated_at=self._clock(),
            )
        elif stored.error == reason:
            return stored.updated_at
        try:
            await self._put(replace(stored, access_token=None, error=reason, error_at=time.time()))
        except OAuth2StoreError as e:
            log.warning("oauth2 token store unavailable", account=self.account, error=str(e))
        return stored.updated_at

    async def _keep(self, tokens: TokenSet, stored: StoredTokens | None) -> None:
        now = self._clock()
        self._cached = tokens
        self._failure = None
        self._temporary_failure = False
        self._last_error = ""
        self._last_refresh = now
        record = StoredTokens.issued(
            tokens,
            client_id=self.spec.client_id,
            token_endpoint=self.spec.token_endpoint,
            scope=self.spec.scope,
            previous_refresh_token=stored.refresh_token if stored else None,
            now=now,
        )
        try:
            await self._put(record)
        except OAuth2StoreError as e:
            # The token is good; only a restart would have to fetch it again.
            log.error("oauth2 token store unavailable", account=self.account, error=str(e))
        if tokens.expires_at - now <= self._margin:
            log.warning(
                "oauth2 access tokens live shorter than the refresh margin: every use refreshes",
                account=self.account,
                lifetime_s=round(tokens.expires_at - now),
                refresh_margin_s=self._margin,
            )
        log.info(
            "oauth2 access token acquired",
            account=self.account,
            endpoint=self.spec.token_endpoint,
            grant=str(self.spec.grant),
            expires_in_s=round(tokens.expires_at - now),
            refresh_token_rotated=bool(tokens.refresh_token),
        )

    async def _grant_once(self, stored: StoredTokens | None) -> TokenSet:
        spec = self.spec
        refresh = stored.refresh_token if stored else None
        if spec.grant is Grant.AUTHORIZATION_CODE:
            if not refresh:
                raise NeedsAuthorization(self.account, "no refresh token is stored yet")
            return await self._post(grants.refresh_token(refresh, spec.scope))
        if spec.grant is Grant.PASSWORD:
            if refresh:
                try:
                    return await self._post(grants.refresh_token(refresh, spec.scope))
                except TokenEndpointError as e:
                    if not e.permanent:
                        raise
                    # The password is still configured: a new grant needs no person.
            form = grants.password(spec.resource_owner, spec.resource_owner_password, spec.scope)
            return await self._post(form)
        if spec.grant is Grant.CLIENT_CREDENTIALS:
            return await self._post(grants.client_credentials(spec.scope))
        issuer = spec.jwt_issuer
        if issuer is None:  # resolve_mode never builds this
            raise NeedsAuthorization(self.account, "the JWT bearer grant has no signing key")
        assertion = grants.jwt_bearer_assertion(
            key=issuer.key,
            alg=issuer.alg,
            kid=issuer.kid,
            issuer=issuer.issuer,
            subject=issuer.subject,
            audience=spec.token_endpoint,
            scope=spec.scope,
            now=self._clock(),
        )
        return await self._post(grants.jwt_bearer(assertion, spec.scope))

    async def _post(self, form: dict[str, str]) -> TokenSet:
        return await request_token(
            self._http,
            account=self.account,
            endpoint=self.spec.token_endpoint,
            form=form,
            auth=self.spec.client_auth,
            now=self._clock(),
        )


def provider_for_account(
    account: AccountSettings,
    store: TokenStore,
    http: httpx.AsyncClient,
    *,
    default_redirect_uri: str = "",
) -> AccountTokenProvider | None:
    """The provider for an account with `[accounts.oauth2]`, None for password accounts.
    Raises `ModeError` (one line per problem) when the oauth2 settings are incomplete."""
    if account.oauth2 is None or not account.oauth2.mode:
        return None
    spec = resolve_mode(
        account.oauth2, account.mailbox, account.name, default_redirect_uri, account.transport
    )
    return AccountTokenProvider(
        account.name, spec, store, http, refresh_margin_s=account.oauth2.refresh_margin_s
    )
