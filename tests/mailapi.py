"""A loopback stand-in for Microsoft Graph sendMail and the Gmail API's messages.send.

It checks what the real services check that matters to us: the bearer token is one the Authlib
test server issued (signature, expiry), carries the API's scope, and belongs to the mailbox
(or to an app allowed to send as any mailbox, as Graph's application permission Mail.Send
does); the body is the MIME message in the API's encoding. Accepted mails are decoded and kept.
Tests can script answers first (`answers`: status and headers, e.g. 429 with Retry-After).

    with AuthServer() as auth, MailApiServer(auth) as api:
        ... graph_url = api.url, gmail_url = api.url ...
        api.received[0].message["Subject"]
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, cast
from urllib.parse import unquote

import jwt

from tests.authserver import AuthServer
from tests.httpreceiver import QuietHandler, serve_in_thread

GRAPH_PATH = re.compile(r"^/v1\.0/users/([^/]+)/sendMail$")
GMAIL_PATH = "/gmail/v1/users/me/messages/send"
GRAPH_SCOPES = {"https://graph.microsoft.com/Mail.Send", "https://graph.microsoft.com/.default"}
GMAIL_SCOPES = {"https://www.googleapis.com/auth/gmail.send"}


@dataclass(frozen=True)
class ApiMail:
    """A mail the API took."""

    api: str  # "graph" or "gmail_api"
    mailbox: str  # the user in the Graph URL; the token's subject for Gmail ("me")
    message: EmailMessage
    raw: bytes
    claims: dict[str, Any]
    content_type: str


@dataclass
class MailApiServer:
    auth: AuthServer
    apps: tuple[str, ...] = ()  # client IDs allowed to send as any mailbox (app-only tokens)
    # Answers to give first: status, headers and (optionally) the JSON body.
    answers: deque[tuple[int, dict[str, str]] | tuple[int, dict[str, str], Any]] = field(
        default_factory=deque
    )
    received: list[ApiMail] = field(default_factory=list)
    requests: int = 0
    peer_ports: list[int] = field(default_factory=list)  # the client port of each request
    refused: list[tuple[int, str]] = field(default_factory=list)  # status, why
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MailApiServer:
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server._lock:
                    server.requests += 1
                    server.peer_ports.append(self.client_address[1])
                status, headers, reply = server.answer(
                    self.path, self.headers.get("Authorization", ""), self.headers, body
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                data = json.dumps(reply).encode() if reply is not None else b""
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = serve_in_thread(Handler)
        self.port = self._httpd.server_address[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- the checks -----------------------------------------------------------------------------

    def answer(
        self, path: str, authorization: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        if self.answers:
            status, extra, *body = self.answers.popleft()
            scripted = {"error": {"code": "Scripted", "message": f"scripted {status}"}}
            return status, extra, body[0] if body else scripted
        graph = GRAPH_PATH.match(path)
        if graph is None and path != GMAIL_PATH:
            return self._refuse(404, "no such API path")
        api = "graph" if graph else "gmail_api"
        token = authorization.removeprefix("Bearer ")
        try:
            claims = self.auth.verify(token)
        except jwt.InvalidTokenError as e:
            return self._refuse(401, f"InvalidAuthenticationToken: {e}")
        scopes = set(str(claims.get("scope", "")).split())
        if not scopes & (GRAPH_SCOPES if graph else GMAIL_SCOPES):
            return self._refuse(403, f"the token's scope {claims.get('scope')!r} is not for {api}")
        mailbox = unquote(graph.group(1)) if graph else str(claims["sub"])
        if claims["sub"] != mailbox and claims.get("client_id") not in self.apps:
            return self._refuse(403, f"ErrorAccessDenied: may not send as {mailbox}")
        content_type = str(headers.get("Content-Type", ""))
        try:
            raw = self._decode(api, content_type, body)
        except ValueError as e:
            return self._refuse(400, f"ErrorMimeContentInvalid: {e}")
        message = cast(EmailMessage, message_from_bytes(raw, policy=policy.default))
        self.received.append(ApiMail(api, mailbox, message, raw, claims, content_type))
        if graph:
            return 202, {}, None
        return 200, {}, {"id": f"m{len(self.received)}", "labelIds": ["SENT"]}

    @staticmethod
    def _decode(api: str, content_type: str, body: bytes) -> bytes:
        try:
            if api == "graph":
                if not content_type.startswith("text/plain"):
                    raise ValueError(f"Content-Type {content_type!r}, expected text/plain")
                return base64.b64decode(body, validate=True)
            if not content_type.startswith("application/json"):
                raise ValueError(f"Content-Type {content_type!r}, expected application/json")
            raw = json.loads(body)["raw"]
            if "+" in raw or "/" in raw:
                raise ValueError("raw is not base64url")
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(str(e)) from None

    def _refuse(self, status: int, why: str) -> tuple[int, dict[str, str], Any]:
        self.refused.append((status, why))
        return status, {}, {"error": {"code": why.split(":")[0], "message": why}}
