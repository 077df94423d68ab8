"""Who may see the admin pages: with `web.admin_password` set, HTTP Basic with that password
(any user name); without one, only clients on loopback."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from notifier.ingest.httpauth import is_loopback

Handler = Callable[[Request], Awaitable[Response]]


def _password_of(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


class AdminGuard:
    """Wraps page handlers; refusals name the way in, never the password."""

    def __init__(self, admin_password: str) -> None:
        self._password = admin_password.encode("utf-8")

    def allows(self, request: Request) -> bool:
        if not self._password:
            return is_loopback(request.client.host if request.client else None)
        given = _password_of(request.headers.get("authorization", ""))
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self._password)

    def refusal(self) -> Response:
        if not self._password:
            return PlainTextResponse(
                "The admin pages answer on loopback only: set web.admin_password to open them "
                "to other addresses.\n",
                status_code=403,
            )
        return PlainTextResponse(
            "Admin password required.\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="notifier admin", charset="UTF-8"'},
        )

    def check(self, request: Request) -> Response | None:
        """The refusal for `request`, or None when it may pass."""
        return None if self.allows(request) else self.refusal()

    def __call__(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if not self.allows(request):
                return self.refusal()
            return await handler(request)

        return guarded
