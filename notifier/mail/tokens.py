"""Where SMTP gets OAuth2 access tokens from. The oauth2 package supplies the real providers."""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from notifier.mail.transport import DeliveryError, Outcome, one_line


@runtime_checkable
class TokenProvider(Protocol):
    async def token(self) -> str:
        """A currently valid access token (refreshing it first when needed).

        Raises an exception whose message a person can act on when no token can be had
        (e.g. "refresh token expired: run `notifier oauth2 authorize ops`").
        """
        ...

    async def invalidate(self, token: str) -> None:
        """The server refused `token` (535): the next `token()` must not return it again."""
        ...


class StaticTokenProvider:
    """A fixed token, e.g. from the environment for a quick test. `invalidate` is only counted:
    a static token cannot be renewed, so a refused one fails again."""

    def __init__(self, token: str) -> None:
        self._token = token
        self.invalidated = 0

    async def token(self) -> str:
        return self._token

    async def invalidate(self, token: str) -> None:
        self.invalidated += 1

    def __repr__(self) -> str:
        return "StaticTokenProvider(token=...)"


async def fetch_token(
    provider: TokenProvider, timeout_s: float, *, endpoint: str, step: str
) -> str:
    """A token from `provider` within `timeout_s`, or a DeliveryError: temporary on timeout,
    an account error (with the provider's advice) when no token can be had."""
    try:
        async with asyncio.timeout(timeout_s):
            return await provider.token()
    except TimeoutError:
        raise DeliveryError(
            f"no OAuth2 token within {timeout_s:g} s",
            outcome=Outcome.TEMPORARY,
            step=step,
            endpoint=endpoint,
        ) from None
    except Exception as exc:  # the provider's message says what to do (re-authorize, ...)
        raise DeliveryError(
            f"cannot get an OAuth2 token: {one_line(str(exc))}",
            outcome=Outcome.ACCOUNT,
            step=step,
            endpoint=endpoint,
            auth_failed=True,
        ) from None
