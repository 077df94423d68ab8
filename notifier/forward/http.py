"""Forwarding to an HTTP server with the innovaphone device's three methods.

- ``get``: External(GET), the fields as the query of `url`;
- ``post``: External(POST), the same ``k=v&k=v`` string as a form body;
- ``standard``: the External(POST) body as the device's Standard method writes it (a leading
  ``?``, no form Content-Type: the reference documents neither path nor type).

One request per record, as the device does; the client keeps its connection open. A record
counts as sent when the server answered 2xx.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from notifier.config import ForwardSettings
from notifier.forward.encode import form_body, http_fields, next_hops
from notifier.forward.errors import ForwardError
from notifier.forward.tls import client_context
from notifier.records import Record

# Answers that say this request will never be taken (retrying the same record cannot help).
_PERMANENT = frozenset({400, 404, 405, 410, 413, 414, 422})


def answer_is_permanent(status: int) -> bool:
    """4xx answers other than auth, timeouts and throttling refuse the record for good."""
    return status in _PERMANENT


class HttpSender:
    """Sends records one request each to one URL, over one kept-alive client."""

    def __init__(self, forward: ForwardSettings, instance: str) -> None:
        self._f = forward
        self._instance = instance
        auth: httpx.Auth | None = None
        password = forward.password.get_secret_value()
        if forward.auth == "basic":
            auth = httpx.BasicAuth(forward.username, password)
        elif forward.auth == "digest":
            auth = httpx.DigestAuth(forward.username, password)
        verify = client_context(forward) if forward.url.startswith("https://") else True
        self._client = httpx.AsyncClient(
            auth=auth, verify=verify, timeout=forward.timeout_s, follow_redirects=False
        )

    @property
    def endpoint(self) -> str:
        # The URL without user info or query: neither belongs in a log line.
        url = httpx.URL(self._f.url)
        return f"{self._f.method} {url.copy_with(userinfo=b'', query=None)}"

    def request(self, record: Record) -> httpx.Request:
        body = form_body(http_fields(record, next_hops(record, self._instance)))
        url = httpx.URL(self._f.url)
        if self._f.method == "get":
            query = f"{url.query.decode()}&{body}" if url.query else body
            return self._client.build_request("GET", url.copy_with(query=query.encode()))
        if self._f.method == "standard":
            return self._client.build_request(
                "POST", url, content=f"?{body}", headers={"Content-Type": "text/plain"}
            )
        return self._client.build_request(
            "POST",
            url,
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    async def send(self, records: Sequence[Record]) -> None:
        """Send `records` in order; raises `ForwardError` at the first one not taken, with
        `sent` = how many went before it."""
        for sent, record in enumerate(records):
            try:
                response = await self._client.send(self.request(record))
                await response.aclose()
            except httpx.HTTPError as e:
                raise ForwardError(f"{self.endpoint}: {type(e).__name__}: {e}", sent=sent) from None
            if response.is_success:
                continue
            status = response.status_code
            hint = {
                401: ": check username and password",
                403: ": check username and password",
            }.get(status, "")
            raise ForwardError(
                f"{self.endpoint}: answered {status} {response.reason_phrase}{hint}",
                sent=sent,
                permanent=answer_is_permanent(status),
            )

    async def close(self) -> None:
        await self._client.aclose()
