"""Interactive authorization: the authorization-code flow with PKCE and the device flow.

`start_authorization` gives the URL to open and its `state`; the state is single-use, expires
after `ttl_s`, and the PKCE verifier never leaves this process. `complete_authorization` (the
callback page) trades the code for tokens and stores them; the running provider sees them on
its next refresh. The device flow (RFC 8628) is for machines without a browser on the way back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from notifier.log import get_logger
from notifier.oauth2 import grants
from notifier.oauth2.client_auth import ClientAuth, NoClientAuth
from notifier.oauth2.endpoint import request_device_authorization, request_token
from notifier.oauth2.errors import AuthorizationFlowError, TokenEndpointError
from notifier.oauth2.grants import DeviceAuthorization, TokenSet
from notifier.oauth2.modes import ModeSpec
from notifier.oauth2.pkce import Pkce, new_pkce, new_state
from notifier.oauth2.store import StoredTokens, TokenStore

log = get_logger("notifier.oauth2")

# Microsoft's device endpoint takes client_id and scope only.
_PUBLIC_DEVICE_MODES = frozenset({"exchange"})


@dataclass(frozen=True)
class _Pending:
    account: str
    spec: ModeSpec = field(repr=False)
    pkce: Pkce = field(repr=False)
    redirect_uri: str
    expires_at: float


class AuthorizationFlows:
    """Pending interactive authorizations of this process, and the code / device exchanges."""

    def __init__(
        self,
        store: TokenStore,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
        *,
        ttl_s: float = 600.0,
        max_pending: int = 64,
    ) -> None:
        self._store = store
        self._http = http
        self._clock = clock
        self._ttl = ttl_s
        self._max_pending = max_pending
        self._pending: dict[str, _Pending] = {}

    def start_authorization(
        self, account: str, spec: ModeSpec, redirect_uri: str = ""
    ) -> tuple[str, str]:
        """(URL for the user's browser, state). Raises `AuthorizationFlowError` when the mode
        is not interactive or no redirect URI is known."""
        if not spec.interactive:
            raise AuthorizationFlowError(
                f"account {account}: mode {spec.mode} ({spec.grant}) needs no browser sign-in"
            )
        redirect = redirect_uri or spec.redirect_uri
        if not redirect:
            raise AuthorizationFlowError(
                f"account {account}: no redirect URI: set accounts.{account}.oauth2.redirect_uri "
                "or enable the web pages ([http] listen)"
            )
        now = self._clock()
        self._expire(now)
        while len(self._pending) >= self._max_pending:
            self._pending.pop(next(iter(self._pending)))
        state, pkce = new_state(), new_pkce()
        self._pending[state] = _Pending(account, spec, pkce, redirect, now + self._ttl)
        url = grants.authorization_url(
            spec.authorization_url,
            client_id=spec.client_id,
            redirect_uri=redirect,
            scope=spec.scope,
            state=state,
            pkce=pkce,
            login_hint=spec.login_hint,
            extra=spec.authorize_params,
        )
        return url, state

    def pending_account(self, state: str) -> str | None:
        """The account a state belongs to, if it is still pending (for the callback page)."""
        pending = self._pending.get(state)
        return pending.account if pending and pending.expires_at > self._clock() else None

    def discard(self, state: str) -> None:
        """Forget a pending state (the provider answered with an error for it)."""
        self._pending.pop(state, None)

    async def complete_authorization(self, state: str, code: str) -> str:
        """Trade `code` for tokens and store them; returns the account name.

        Raises `AuthorizationFlowError` for an unknown, used or expired state and
        `TokenEndpointError` when the provider refuses the code.
        """
        self._expire(self._clock())
        pending = self._pending.pop(state, None)
        if pending is None:
            raise AuthorizationFlowError(
                "this authorization is unknown, already used or expired: start it again"
            )
        form = grants.authorization_code(code, pending.redirect_uri, pending.pkce.verifier)
        tokens = await request_token(
            self._http,
            account=pending.account,
            endpoint=pending.spec.token_endpoint,
            form=form,
            auth=pending.spec.client_auth,
            now=self._clock(),
        )
        await self._keep(pending.account, pending.spec, tokens)
        return pending.account

    async def start_device(self, account: str, spec: ModeSpec) -> DeviceAuthorization:
        """RFC 8628 §3.1: the user code and the URI to show the user."""
        if not spec.interactive:
            raise AuthorizationFlowError(
                f"account {account}: mode {spec.mode} ({spec.grant}) needs no sign-in"
            )
        if not spec.device_authorization_url:
            raise AuthorizationFlowError(
                f"account {account}: mode {spec.mode} has no device authorization endpoint "
                f"(set accounts.{account}.oauth2.device_authorization_url)"
            )
        return await request_device_authorization(
            self._http,
            account=account,
            endpoint=spec.device_authorization_url,
            form=grants.device_authorization(spec.scope),
            auth=self._device_auth(spec),
            now=self._clock(),
            audience=spec.token_endpoint,
        )

    async def poll_device(
        self,
        account: str,
        spec: ModeSpec,
        device: DeviceAuthorization,
        *,
        slow_down_step_s: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Poll the token endpoint until the user approves (tokens stored), denies or the code
        expires (`AuthorizationFlowError`). Honours `interval` and `slow_down` (RFC 8628 §3.5)."""
        interval = device.interval_s
        while True:
            await sleep(interval)
            if self._clock() >= device.expires_at:
                raise AuthorizationFlowError(
                    f"account {account}: the code {device.user_code} expired before it was "
                    "approved: start again"
                )
            try:
                tokens = await request_token(
                    self._http,
                    account=account,
                    endpoint=spec.token_endpoint,
                    form=grants.device_code(device.device_code),
                    auth=spec.client_auth,
                    now=self._clock(),
                )
            except TokenEndpointError as e:
                if e.error == "slow_down":
                    interval += slow_down_step_s
                    continue
                if e.error == "authorization_pending" or not e.permanent:
                    continue
                if e.error == "expired_token":
                    raise AuthorizationFlowError(
                        f"account {account}: the code {device.user_code} expired before it was "
                        "approved: start again"
                    ) from None
                if e.error == "access_denied":
                    raise AuthorizationFlowError(
                        f"account {account}: the sign-in was denied at {device.verification_uri}"
                    ) from None
                raise
            await self._keep(account, spec, tokens)
            return

    def _device_auth(self, spec: ModeSpec) -> ClientAuth:
        if spec.mode in _PUBLIC_DEVICE_MODES:
            return NoClientAuth(spec.client_id)
        return spec.client_auth

    async def _keep(self, account: str, spec: ModeSpec, tokens: TokenSet) -> None:
        if not tokens.refresh_token:
            raise AuthorizationFlowError(
                f"account {account}: the provider returned no refresh token (Microsoft: include "
                "offline_access in the scope; Google: access_type=offline and prompt=consent)"
            )
        now = self._clock()
        record = StoredTokens.issued(
            tokens,
            client_id=spec.client_id,
            token_endpoint=spec.token_endpoint,
            scope=spec.scope,
            previous_refresh_token=None,
            now=now,
        )
        await self._store.put(account, record)
        log.info("oauth2 account authorized", account=account, endpoint=spec.token_endpoint)

    def _expire(self, now: float) -> None:
        for state in [s for s, p in self._pending.items() if p.expires_at <= now]:
            del self._pending[state]
