"""The admin pages' forms: one anti-forgery token for every page that changes something
(`/oauth2/`, the alarm list, the silences), the Origin check, and a bounded form reader."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

MAX_FORM_BYTES = 8192


class FormToken:
    """The anti-forgery token of the page's forms: HMAC of a fixed label under a random key
    made at start (a restart makes open pages stale: reload them)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    @property
    def value(self) -> str:
        return hmac.new(self._key, b"notifier admin forms", hashlib.sha256).hexdigest()

    def check(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.value.encode())


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (Origin header)."""
    origin = request.headers.get("origin")
    # "null": the page's no-referrer policy hides it (kept so the callback's code never leaks
    # in a Referer); the form token still has to match.
    if not origin or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the pages post nothing else)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def checked_form(request: Request, token: FormToken, page: str) -> dict[str, str] | Response:
    """The posted form, or a 403 when it is stale or came from another site."""
    form = await read_form(request)
    if not same_origin(request) or not token.check(form.get("csrf", "")):
        return PlainTextResponse(
            f"This form is stale or came from another site: reload {page} and try again.\n",
            status_code=403,
        )
    return form
