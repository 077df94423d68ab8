"""A real SMTP server for tests: aiosmtpd on loopback, with STARTTLS, implicit TLS, AUTH
(PLAIN, LOGIN, XOAUTH2, OAUTHBEARER) and scripted replies.

    with SmtpTestServer(tls="starttls", pki=pki, users={"ops": "pw"}) as server:
        ... send to server.host:server.port ...
        assert server.received[0].message["Subject"] == "..."

The server runs in its own thread (aiosmtpd's Controller), so it serves async tests, sync tests
and subprocesses alike. Bearer tokens are checked by `token_validator(user, token) -> bool`;
by default a token is valid when it is in `valid_tokens`. OAuth2 tests plug in real JWT checks.
"""

from __future__ import annotations

import base64
import binascii
import collections
import email.policy
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.certs import TestPKI
from tests.conftest import free_port

TokenValidator = Callable[[str, str], bool]
TlsMode = Literal["none", "starttls", "implicit"]

# Big enough for a JWT access token of several KiB in an AUTH line (aiosmtpd's default is 512).
DEFAULT_COMMAND_LIMIT = 64 * 1024
GMAIL_ERROR = {"status": "400", "schemes": "Bearer", "scope": "https://mail.google.com/"}


@dataclass(frozen=True)
class ReceivedMail:
    """A mail as the server took it: the envelope, the raw bytes, and how the client got in."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    connection: int
    tls: bool
    auth_mechanism: str | None
    auth_identity: str | None
    # When the server took it (time.monotonic(), before its 250): a crash test tells a resend
    # in the at-least-once window (a kill between the 250 and the ack) by it.
    received_at: float = field(default_factory=time.monotonic)

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=email.policy.default).parsebytes(self.content)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(frozen=True)
class AuthAttempt:
    connection: int
    mechanism: str
    identity: str
    success: bool
    token: str = ""  # the bearer token the client sent (XOAUTH2 / OAUTHBEARER)
    host: str = ""  # OAUTHBEARER host= and port= as the client sent them
    port: str = ""


class _ServerSMTP(SMTP):
    """aiosmtpd's SMTP with room for long AUTH lines and a connection number."""

    line_length_limit = DEFAULT_COMMAND_LIMIT + 2

    def __init__(self, handler: Any, *, command_size_limit: int, connection: int, **kw: Any):
        super().__init__(handler, **kw)
        self.command_size_limit = command_size_limit
        # The class-level dict is shared by every instance; give each connection its own.
        self.command_size_limits = collections.defaultdict(lambda: command_size_limit)
        self.connection = connection

    @property
    def tls_active(self) -> bool:
        return self.transport is not None and (
            self.transport.get_extra_info("sslcontext") is not None
        )


def _session_value(session: Session, name: str) -> Any:
    return getattr(session, name, None)


class _Handler:
    def __init__(self, server: SmtpTestServer) -> None:
        self.server = server

    # -- envelope and data --------------------------------------------------------------

    async def handle_MAIL(
        self,
        smtp: _ServerSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        srv = self.server
        mails_here = _session_value(session, "mails") or 0
        if srv.max_mails_per_connection is not None and mails_here >= srv.max_mails_per_connection:
            return "421 4.7.0 too many mails on one connection, closing"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self,
        smtp: _ServerSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        refusal = self.server.rcpt_replies.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, smtp: _ServerSMTP, session: Session, envelope: Envelope) -> str:
        srv = self.server
        with srv._lock:
            scripted = srv.data_replies.popleft() if srv.data_replies else None
        if scripted is not None and not scripted.startswith("2"):
            return scripted
        content = envelope.original_content or b""
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=content,
            connection=smtp.connection,
            tls=smtp.tls_active,
            auth_mechanism=_session_value(session, "auth_mechanism"),
            auth_identity=_session_value(session, "auth_identity"),
        )
        with srv._lock:
            srv.received.append(mail)
        session.mails = (_session_value(session, "mails") or 0) + 1  # type: ignore[attr-defined]
        return scripted or "250 2.0.0 OK queued"

    # -- bearer token mechanisms ----------------------------------------------------------

    async def _initial_or_challenge(self, smtp: _ServerSMTP, args: list[str]) -> bytes | None:
        """The client's response: given with AUTH, or asked for with an empty 334."""
        if len(args) == 1:
            blob = await smtp.challenge_auth("")
            return blob if isinstance(blob, bytes) else None
        if self.server.bearer_two_step_only:
            await smtp.push("501 5.5.2 send the response after the 334 challenge")
            return None
        try:
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await smtp.push("501 5.5.2 Can't decode base64")
            return None

    def _record(self, smtp: _ServerSMTP, attempt: AuthAttempt) -> None:
        with self.server._lock:
            self.server.auth_attempts.append(attempt)
        if attempt.success:
            assert smtp.session is not None
            smtp.session.auth_mechanism = attempt.mechanism  # type: ignore[attr-defined]
            smtp.session.auth_identity = attempt.identity  # type: ignore[attr-defined]

    async def _refuse(self, smtp: _ServerSMTP, error: Mapping[str, str]) -> AuthResult:
        # Gmail / RFC 7628: a 334 with a base64 JSON error, the client answers, then 535.
        answer = await smtp.challenge_auth(json.dumps(error).encode())
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )

    async def auth_XOAUTH2(self, smtp: _ServerSMTP, args: list[str]) -> AuthResult:
        blob = await self._initial_or_challenge(smtp, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x01")
        fields = dict(p.split(b"=", 1) for p in parts if b"=" in p)
        user = fields.get(b"user", b"").decode("utf-8", "replace")
        auth = fields.get(b"auth", b"").decode("utf-8", "replace")
        well_formed = blob.endswith(b"\x01\x01") and auth.startswith("Bearer ")
        token = auth.removeprefix("Bearer ")
        ok = well_formed and self.server.token_validator(user, token)
        self._record(smtp, AuthAttempt(smtp.connection, "XOAUTH2", user, ok, token))
        if ok:
            return AuthResult(success=True, auth_data=user)
        return await self._refuse(smtp, GMAIL_ERROR)

    async def auth_OAUTHBEARER(self, smtp: _ServerSMTP, args: list[str]) -> AuthResult:
        blob = await self._initial_or_challenge(smtp, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        gs2, _, rest = blob.partition(b"\x01")
        user = ""
        for attr in gs2.split(b","):
            if attr.startswith(b"a="):
                user = attr[2:].replace(b"=2C", b",").replace(b"=3D", b"=").decode()
        fields = dict(p.split(b"=", 1) for p in rest.split(b"\x01") if b"=" in p)
        auth = fields.get(b"auth", b"").decode("utf-8", "replace")
        token = auth.removeprefix("Bearer ")
        ok = (
            gs2.startswith(b"n,")
            and blob.endswith(b"\x01\x01")
            and auth.startswith("Bearer ")
            and self.server.token_validator(user, token)
        )
        self._record(
            smtp,
            AuthAttempt(
                smtp.connection,
                "OAUTHBEARER",
                user,
                ok,
                token,
                host=fields.get(b"host", b"").decode(),
                port=fields.get(b"port", b"").decode(),
            ),
        )
        if ok:
            return AuthResult(success=True, auth_data=user)
        return await self._refuse(
            smtp, {"status": "invalid_token", "schemes": "bearer", "scope": "mail"}
        )


class SmtpTestServer:
    """aiosmtpd on 127.0.0.1 with the features mail tests need. Use as a context manager.

    tls: "none" (plain; add STARTTLS by tls="starttls"), "implicit" (TLS from the first byte).
    users: PLAIN / LOGIN accounts. valid_tokens / token_validator: bearer tokens accepted.
    mechanisms: AUTH mechanisms to offer (default all four). auth_over_plaintext: offer AUTH
    without TLS. bearer_two_step_only: refuse an initial response (501) and want the blob
    after a 334. command_size_limit: longest command line (default 64 KiB).
    Scripts: `data_replies` (popped per DATA: a non-2xx reply refuses that mail),
    `rcpt_replies` (address -> reply, every time), `max_mails_per_connection` (then 421).
    """

    def __init__(
        self,
        *,
        tls: TlsMode = "none",
        pki: TestPKI | None = None,
        require_starttls: bool = False,
        users: Mapping[str, str] | None = None,
        valid_tokens: Iterable[str] = (),
        token_validator: TokenValidator | None = None,
        mechanisms: Iterable[str] | None = None,
        auth_over_plaintext: bool = False,
        auth_required: bool = False,
        bearer_two_step_only: bool = False,
        command_size_limit: int = DEFAULT_COMMAND_LIMIT,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        if tls != "none" and pki is None:
            raise ValueError("TLS needs the pki fixture")
        self.host = host
        self.port = port or free_port(host=host)
        self.tls = tls
        self.users = dict(users or {})
        self.valid_tokens = set(valid_tokens)
        self.token_validator: TokenValidator = token_validator or (
            lambda user, token: token in self.valid_tokens
        )
        self.bearer_two_step_only = bearer_two_step_only
        self.data_replies: collections.deque[str] = collections.deque()
        self.rcpt_replies: dict[str, str] = {}
        self.max_mails_per_connection: int | None = None
        self.received: list[ReceivedMail] = []
        self.auth_attempts: list[AuthAttempt] = []
        self._connections = 0
        self._lock = threading.Lock()
        offered = {m.upper() for m in (mechanisms or ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"))}
        kwargs: dict[str, Any] = {
            "authenticator": self._password_check,
            "auth_exclude_mechanism": [
                m for m in ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER") if m not in offered
            ],
            "auth_required": auth_required,
            # aiosmtpd only counts STARTTLS as TLS; implicit TLS is encrypted from the start.
            "auth_require_tls": tls == "starttls" and not auth_over_plaintext,
            "server_hostname": "smtp.test",
        }
        if tls == "starttls":
            assert pki is not None
            kwargs["tls_context"] = pki.server_context()
            kwargs["require_starttls"] = require_starttls
        ssl_context = pki.server_context() if tls == "implicit" and pki is not None else None
        self._command_size_limit = command_size_limit
        server = self

        class _Controller(Controller):
            def factory(self) -> _ServerSMTP:
                with server._lock:
                    server._connections += 1
                    number = server._connections
                return _ServerSMTP(
                    self.handler,
                    command_size_limit=server._command_size_limit,
                    connection=number,
                    **self.SMTP_kwargs,
                )

        self._controller = _Controller(
            _Handler(self), hostname=host, port=self.port, ssl_context=ssl_context, **kwargs
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SmtpTestServer:
        self._controller.start()
        with self._lock:  # the controller's own readiness probe is not a client
            self._connections = 0
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what happened ----------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Client connections accepted so far."""
        with self._lock:
            return self._connections

    def refuse_recipient(self, address: str, reply: str = "550 5.1.1 no such user here") -> None:
        self.rcpt_replies[address.lower()] = reply

    def script_data(self, *replies: str) -> None:
        """Replies for the next DATA commands, in order (``"451 4.3.0 try later"``)."""
        self.data_replies.extend(replies)

    def _password_check(
        self, smtp: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        user = data.login.decode("utf-8", "replace")
        ok = user in self.users and self.users[user] == data.password.decode("utf-8", "replace")
        with self._lock:
            self.auth_attempts.append(AuthAttempt(smtp.connection, mechanism, user, ok))
        if ok:
            session.auth_mechanism = mechanism  # type: ignore[attr-defined]
            session.auth_identity = user  # type: ignore[attr-defined]
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


__all__ = ["AuthAttempt", "ReceivedMail", "SmtpTestServer"]
