"""The one place that talks to token and device-authorization endpoints (httpx)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx

from notifier.oauth2.client_auth import ClientAuth
from notifier.oauth2.errors import TokenEndpointError
from notifier.oauth2.grants import (
    DeviceAuthorization,
    TokenSet,
    parse_device_authorization,
    parse_token_response,
)

T = TypeVar("T")


async def _post(
    http: httpx.AsyncClient,
    account: str,
    endpoint: str,
    form: dict[str, str],
    auth: ClientAuth,
    now: float,
    parse: Callable[[str, str, int, bytes, float], T],
    audience: str = "",
) -> T:
    parts = auth.apply(audience or endpoint, now)
    headers = {"Accept": "application/json", **parts.headers}
    try:
        response = await http.post(endpoint, data={**form, **parts.form}, headers=headers)
    except httpx.HTTPError as e:
        # The exception text names the host and the failure, never the request body.
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise TokenEndpointError(account, endpoint, "unreachable", reason, None) from None
    return parse(account, endpoint, response.status_code, response.content, now)


async def request_token(
    http: httpx.AsyncClient,
    *,
    account: str,
    endpoint: str,
    form: dict[str, str],
    auth: ClientAuth,
    now: float,
) -> TokenSet:
    """POST one grant to the token endpoint; raises `TokenEndpointError` (see `.permanent`)."""
    return await _post(http, account, endpoint, form, auth, now, parse_token_response)


async def request_device_authorization(
    http: httpx.AsyncClient,
    *,
    account: str,
    endpoint: str,
    form: dict[str, str],
    auth: ClientAuth,
    now: float,
    audience: str,
) -> DeviceAuthorization:
    """RFC 8628 §3.1: ask for a device code and the user code to show. `audience` (the token
    endpoint) is what a private_key_jwt assertion names as its `aud`."""
    return await _post(
        http, account, endpoint, form, auth, now, parse_device_authorization, audience
    )
