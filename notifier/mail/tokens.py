"""Where SMTP gets OAuth2 access tokens from. The oauth2 package supplies the real providers."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


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
