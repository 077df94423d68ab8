"""A small loopback HTTP receiver for forwarding tests: keeps every request, checks auth.

Runs `http.server` (HTTP/1.1, keep-alive) in a background thread. Authentication is checked
by notifier's own server-side Basic / Digest code (`notifier.ingest.httpauth`), the same that
guards notifier's receiver; `statuses` lets a test script the answers (e.g. 503, then 200).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from notifier.ingest.httpauth import HttpAuth
from notifier.ingest.parse.innovaphone import form_fields


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, no request log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass


def serve_in_thread(
    handler: type[BaseHTTPRequestHandler], ssl_context: Any = None
) -> ThreadingHTTPServer:
    """A threading HTTP server on a free loopback port, serving in a daemon thread; stop it
    with `shutdown()` and `server_close()`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if ssl_context is not None:
        httpd.socket = ssl_context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    content_type: str
    body: bytes
    user: str
    peer_port: int

    @property
    def fields(self) -> dict[str, str]:
        """The innovaphone fields, from the query (GET) or the body (POST)."""
        return form_fields(self.query.encode() if self.method == "GET" else self.body)


@dataclass
class HttpReceiver:
    auth: HttpAuth | None = None
    ssl_context: Any = None
    statuses: deque[int] = field(default_factory=deque)  # answers to give first; then 200
    requests: list[Request] = field(default_factory=list)
    refused: int = 0  # requests answered 401
    port: int = 0

    def __enter__(self) -> HttpReceiver:
        receiver = self

        class Handler(QuietHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                user = ""
                if receiver.auth is not None:
                    result = receiver.auth.check(
                        self.command, self.path, self.headers.get("Authorization")
                    )
                    if not result.ok:
                        receiver.refused += 1
                        self.send_response(401)
                        for challenge in receiver.auth.challenges(stale=result.stale):
                            self.send_header("WWW-Authenticate", challenge)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    user = result.user
                status = receiver.statuses.popleft() if receiver.statuses else 200
                if status == 200:
                    url = urlsplit(self.path)
                    receiver.requests.append(
                        Request(
                            self.command,
                            url.path,
                            url.query,
                            self.headers.get("Content-Type", ""),
                            body,
                            user,
                            self.client_address[1],
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _handle

        self._httpd = serve_in_thread(Handler, self.ssl_context)
        self.port = self._httpd.server_address[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str = "/log", scheme: str = "http") -> str:
        host = "localhost" if scheme == "https" else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}{path}"
