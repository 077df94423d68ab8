"""The SMTP session: connect, TLS, AUTH, and send a batch of mails over one connection.

Built on aiosmtplib's connection and command primitives; the decisions (TLS use, mechanism,
how a failure is handled) are pure functions here and in auth.py. Every error names host:port,
the step and the server's reply, and never the password or the token.

Failure handling (DeliveryError.outcome):
- temporary: connection refused or dropped, timeouts, every 4xx. The dispatcher retries later.
- permanent: a 5xx to RCPT (all recipients) or DATA. Retrying the same mail cannot help.
- account: the mail is fine but the account cannot send: AUTH refused (535, 534, 530, 538;
  `auth_failed` is set), no usable AUTH mechanism, credentials refused on an unencrypted
  connection, STARTTLS required but not offered, certificate not trusted, a 5xx to EHLO or to
  MAIL FROM (our sender address is refused; 552/555 there are about the message and permanent).
  The dispatcher keeps such mails spooled and marks the account instead of dead-lettering every
  mail because of one wrong password.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

import aiosmtplib
from aiosmtplib.email import flatten_message

from notifier.config import host_port
from notifier.log import get_logger
from notifier.mail.auth import (
    ERROR_CHALLENGE_ANSWER,
    AuthUnavailable,
    Mechanism,
    choose_mechanism,
    describe_error_challenge,
    login_responses,
    oauthbearer_response,
    plain_response,
    xoauth2_response,
)
from notifier.mail.tokens import TokenProvider, fetch_token
from notifier.mail.transport import (
    DeliveryError,
    MailError,
    MailTransport,
    Outcome,
    Outgoing,
    SendReport,
    SendResult,
    TransportHealth,
    count_results,
    one_line,
)
from notifier.metrics import Metrics

__all__ = [
    "DeliveryError",
    "MailTransport",
    "Outcome",
    "SendReport",
    "SendResult",
    "SmtpSender",
    "SmtpSettings",
    "classify_reply",
]

log = get_logger(__name__)

TlsMode = Literal["auto", "starttls", "tls", "none"]
TokenMechanism = Literal["xoauth2", "oauthbearer"]

# Steps that open the connection: a failure there fails every mail of the batch alike.
CONNECTION_STEPS = frozenset({"tls setup", "connect", "ehlo", "starttls", "auth"})
# Replies that say the account, not the message, is the problem.
_ACCOUNT_CODES = frozenset({530, 534, 535, 538})
# How long a closed connection may take to say goodbye (the TLS close_notify exchange) before
# it is cut, and how often at most to look whether it has gone.
_CLOSE_WAIT_S = 2.0
_CLOSE_POLL_S = 0.01


@dataclass(frozen=True)
class SmtpSettings:
    """One mail account's server. `port` 587 is submission with STARTTLS, 465 implicit TLS.

    `tls`: auto (STARTTLS when the server offers it), starttls (required), tls (implicit, from
    the first byte), none. `verify` checks the server certificate and name (against `ca_file`
    when set, else the system's CAs). Credentials: `username` with `password`, or `username`
    (the mailbox) with a `token_provider` for XOAUTH2 / OAUTHBEARER. They are never sent over an
    unencrypted connection unless `allow_plaintext_auth`. `timeout_s` bounds every step.
    """

    host: str
    port: int = 587
    tls: TlsMode = "auto"
    ca_file: str = ""
    verify: bool = True
    ehlo_name: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    token_provider: TokenProvider | None = field(default=None, repr=False, compare=False)
    mechanism: TokenMechanism = "xoauth2"
    allow_plaintext_auth: bool = False
    timeout_s: float = 30.0

    @property
    def endpoint(self) -> str:
        return host_port(self.host, self.port)


def classify_reply(step: str, code: int) -> Outcome:
    """What a server reply code at `step` means for the mail (see the module docstring)."""
    if 400 <= code < 500:
        return Outcome.TEMPORARY
    if code < 500:  # an unexpected 2xx/3xx: a confused server, worth another try later
        return Outcome.TEMPORARY
    if code in _ACCOUNT_CODES:
        return Outcome.ACCOUNT
    if step == "mail from":
        return Outcome.PERMANENT if code in (552, 555) else Outcome.ACCOUNT
    if step in CONNECTION_STEPS:
        return Outcome.ACCOUNT
    return Outcome.PERMANENT


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _closed(task: asyncio.Future[None]) -> None:
    """Nobody awaits a batch's QUIT and close: say when they failed unexpectedly."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("closing the SMTP connection failed", error=str(error) or type(error).__name__)


async def _close(smtp: aiosmtplib.SMTP, quit_timeout: float | None = None) -> None:
    """Close the connection (after QUIT, when `quit_timeout` is given) and return once its
    socket is released.

    asyncio releases a socket a loop turn after close(), and a TLS one only after the server
    has answered close_notify: without the wait, a batch would return with its socket still
    open, and a service stopping right after would end its loop with sockets in it.
    """
    protocol, transport = smtp.protocol, smtp.transport
    try:
        if quit_timeout is not None and smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit(timeout=quit_timeout)
    finally:
        smtp.close()
    if protocol is None or transport is None:
        return
    waited = pause = 0.0
    # SMTPProtocol forgets its transport in connection_lost, after the socket is closed. A plain
    # socket goes within a loop turn: look at once, then back off to _CLOSE_POLL_S. (A first
    # 10 ms sleep held each batch that long after its mail, and the records behind it too:
    # +28 % alarm -> mail p50 one at a time, BENCHMARKS.md.)
    while protocol.transport is not None and waited < _CLOSE_WAIT_S:
        await asyncio.sleep(pause)
        waited += pause
        pause = min(_CLOSE_POLL_S, pause * 2 or 0.001)
    if protocol.transport is not None and isinstance(transport, asyncio.Transport):
        transport.abort()  # no close_notify from the server: cut the connection
        await asyncio.sleep(0)  # abort releases the socket on the next loop turn


@dataclass
class _Session:
    smtp: aiosmtplib.SMTP
    banner: str = ""
    tls_mode: str = "none"
    mechanism: Mechanism | None = None
    auth_reply: str = ""
    sent: int = 0

    @property
    def encrypted(self) -> bool:
        return self.tls_mode != "none"


class _Dropped(MailError):
    """The connection broke during a transaction; `before_data` says no mail text was sent."""

    def __init__(self, error: DeliveryError, before_data: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.before_data = before_data


class SmtpSender:
    """Sends mails for one account. Safe to share between tasks (batches run one at a time)."""

    def __init__(
        self, settings: SmtpSettings, account: str = "", metrics: Metrics | None = None
    ) -> None:
        if settings.token_provider is not None and not settings.username:
            raise ValueError(
                f"account {account or settings.endpoint}: OAuth2 needs username set to the "
                "mailbox the token belongs to"
            )
        if settings.tls not in ("auto", "starttls", "tls", "none"):
            raise ValueError(f"tls = {settings.tls!r}: use auto, starttls, tls or none")
        self._s = settings
        self._account = account
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._session: _Session | None = None
        self._closing: asyncio.Future[None] | None = None  # the last batch's QUIT and close
        self._context: ssl.SSLContext | None = None
        self.health = TransportHealth("smtp", settings.endpoint)

    @property
    def endpoint(self) -> str:
        return self._s.endpoint

    # -- the public interface -------------------------------------------------------------

    async def send(
        self, messages: Sequence[EmailMessage | Outgoing]
    ) -> list[SendResult | DeliveryError]:
        """Send each message over one connection (reopened if the server drops it).

        Returns one SendResult or DeliveryError per message, in order; raises nothing else
        for delivery problems. The connection is closed when the batch is done: QUIT and the
        close run after this returns, still holding the lock, so the next batch and `close()`
        wait for them but the caller does not (a route records its mail a round trip sooner,
        and the next alarm's commit no longer queues behind that one: alarm -> mail p50 one at
        a time 1.14x of c8ed6b7 with the wait, 1.00x without, BENCHMARKS.md).
        """
        results: list[SendResult | DeliveryError] = []
        await self._lock.acquire()
        try:
            for index, item in enumerate(messages):
                result = await self._send_one(Outgoing.of(item))
                results.append(result)
                if isinstance(result, DeliveryError) and result.step in CONNECTION_STEPS:
                    # No connection: every other mail of the batch fails the same way, and
                    # the server is not asked again until the next batch.
                    results.extend(result for _ in messages[index + 1 :])
                    break
        except BaseException:
            await self._quit_and_release()
            raise
        self._closing = asyncio.ensure_future(self._quit_and_release())
        self._closing.add_done_callback(_closed)
        count_results(self._metrics, self._account, results, self.health)
        return results

    async def test(self, message: EmailMessage | Outgoing) -> SendReport:
        """Send one mail and report how: TLS version and cipher, AUTH mechanism, replies."""
        out = Outgoing.of(message)
        async with self._lock:
            session: _Session | None = None
            try:
                session = await self._ensure_session()
                outcome: SendResult | DeliveryError = await self._transact(session, out)
            except _Dropped as dropped:
                outcome = dropped.error
            except DeliveryError as error:
                outcome = error
            report = self._report(session, outcome)
            await self._quit()
        count_results(self._metrics, self._account, [outcome], self.health)
        return report

    async def close(self) -> None:
        async with self._lock:
            await self._quit()

    # -- one mail ---------------------------------------------------------------------------

    async def _send_one(self, out: Outgoing) -> SendResult | DeliveryError:
        for attempt in (1, 2):
            try:
                session = await self._ensure_session()
            except DeliveryError as error:
                return error
            reused = session.sent > 0
            try:
                result = await self._transact(session, out)
            except _Dropped as dropped:
                await self._drop()
                # A kept connection the server closed meanwhile: safe to try again at once
                # when no mail text went out (a retry after DATA could deliver twice).
                if reused and dropped.before_data and attempt == 1:
                    log.info("smtp_reconnect", account=self._account, endpoint=self.endpoint)
                    continue
                return dropped.error
            except DeliveryError as error:
                return error
            session.sent += 1
            return result
        raise AssertionError("unreachable")

    async def _transact(self, session: _Session, out: Outgoing) -> SendResult:
        smtp = session.smtp
        utf8 = not all(a.isascii() for a in (out.mail_from, *out.rcpt_to))
        if not out.rcpt_to:
            raise self._error("mail from", "the mail has no recipients", Outcome.PERMANENT)
        if utf8 and not smtp.supports_extension("smtputf8"):
            raise self._error(
                "mail from",
                "an address has non-ASCII characters and the server does not offer SMTPUTF8",
                Outcome.PERMANENT,
            )
        data = flatten_message(out.message, utf8=utf8, cte_type="7bit")
        options = ["SMTPUTF8"] if utf8 else []
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(data)}")
        encoding = "utf-8" if utf8 else "ascii"
        step = "mail from"
        try:
            await smtp.mail(out.mail_from, options=options, encoding=encoding)
            step = "rcpt"
            accepted: list[str] = []
            refused: dict[str, tuple[int, str]] = {}
            for recipient in out.rcpt_to:
                try:
                    await smtp.rcpt(recipient, encoding=encoding)
                    accepted.append(recipient)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused[recipient] = (exc.code, one_line(exc.message))
            if not accepted:
                await self._rset(smtp)
                # Any temporary refusal makes the whole mail worth retrying.
                code, reply = min(refused.values())
                who = ", ".join(refused)
                raise self._error(
                    "rcpt",
                    f"every recipient was refused ({who})",
                    classify_reply("rcpt", code),
                    code,
                    reply,
                )
            step = "data"
            response = await smtp.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421 or not smtp.is_connected:
                # The server is closing the connection (aiosmtplib has closed it on 421).
                error = self._error(
                    step,
                    "the server closed the connection",
                    Outcome.TEMPORARY,
                    exc.code,
                    one_line(exc.message),
                )
                raise _Dropped(error, before_data=step != "data") from None
            await self._rset(smtp)
            what = "the sender address was refused" if step == "mail from" else "refused"
            raise self._error(
                step, what, classify_reply(step, exc.code), exc.code, one_line(exc.message)
            ) from None
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            error = self._error(step, self._describe(exc), Outcome.TEMPORARY)
            raise _Dropped(error, before_data=step != "data") from None
        except ValueError as exc:  # an address aiosmtplib will not put on a command line
            raise self._error(step, one_line(str(exc)), Outcome.PERMANENT) from None
        return SendResult(
            message_id=out.message_id,
            accepted=tuple(accepted),
            reply=f"{response.code} {one_line(response.message)}",
            refused=refused,
        )

    # -- the connection ---------------------------------------------------------------------

    async def _ensure_session(self) -> _Session:
        if self._session is not None and self._session.smtp.is_connected:
            return self._session
        self._session = None
        self._session = await self._open()
        return self._session

    def _tls_context(self) -> ssl.SSLContext:
        if self._context is None:
            try:
                context = ssl.create_default_context(cafile=self._s.ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise self._error(
                    "tls setup", f"cannot load ca_file {self._s.ca_file!r}: {exc}", Outcome.ACCOUNT
                ) from None
            if not self._s.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._context = context
        return self._context

    async def _open(self) -> _Session:
        s = self._s
        context = self._tls_context() if s.tls != "none" else None
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout_s,
            local_hostname=s.ehlo_name or None,
            use_tls=s.tls == "tls",
            start_tls=False,  # decided below, so "required" can fail with a clear message
            tls_context=context,
        )
        session = _Session(smtp)
        step = "connect"
        try:
            session.banner = one_line((await smtp.connect()).message)
            if s.tls == "tls":
                session.tls_mode = "implicit"
            step = "ehlo"
            await self._ehlo(smtp)
            if s.tls in ("auto", "starttls"):
                if smtp.supports_extension("starttls"):
                    step = "starttls"
                    await smtp.starttls(tls_context=context, server_hostname=s.host)
                    session.tls_mode = "starttls"
                    step = "ehlo"
                    await self._ehlo(smtp)
                elif s.tls == "starttls":
                    raise self._error(
                        "starttls",
                        'the server does not offer STARTTLS, and tls = "starttls" requires it: '
                        'check the port (587 for STARTTLS, 465 for tls = "tls")',
                        Outcome.ACCOUNT,
                    )
            step = "auth"
            await self._authenticate(session)
        except (DeliveryError, aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await _close(smtp)
            raise self._open_error(step, exc) from None
        except BaseException:
            smtp.close()  # cancelled (the service stops): no waiting, but no socket left open
            raise
        return session

    def _open_error(self, step: str, exc: Exception) -> DeliveryError:
        if isinstance(exc, DeliveryError):
            return exc
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return self._error(
                step, "refused", classify_reply(step, exc.code), exc.code, one_line(exc.message)
            )
        return self._connection_error(step, exc)

    async def _ehlo(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not smtp.is_connected:
                raise
            await smtp.helo()

    def _connection_error(self, step: str, exc: BaseException) -> DeliveryError:
        for cause in _chain(exc):
            if isinstance(cause, ssl.SSLCertVerificationError):
                where = f"ca_file {self._s.ca_file}" if self._s.ca_file else "the system CAs"
                return self._error(
                    step,
                    f"the server certificate is not trusted ({cause.verify_message}; checked "
                    f"against {where}): set ca_file to the CA that issued it, or fix the "
                    "server's certificate chain",
                    Outcome.ACCOUNT,
                )
            if isinstance(cause, ssl.SSLError):
                return self._error(
                    step,
                    f"TLS failed ({cause.reason or cause}): check that the port speaks "
                    'implicit TLS for tls = "tls" (465) or STARTTLS (587)',
                    Outcome.ACCOUNT,
                )
        return self._error(step, self._describe(exc), Outcome.TEMPORARY)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self._s.timeout_s:g} s"
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            return "the server closed the connection"
        for cause in _chain(exc):
            if isinstance(cause, OSError) and cause.errno:
                return f"cannot connect: {os.strerror(cause.errno)}"
        return one_line(str(exc)) or type(exc).__name__

    async def _rset(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            await _close(smtp)  # the next mail opens a fresh connection

    async def _quit_and_release(self) -> None:
        """The end of `send`: QUIT, close, then let the next batch in."""
        try:
            await self._quit()
        finally:
            self._lock.release()

    async def _quit(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await _close(session.smtp, quit_timeout=min(self._s.timeout_s, 5.0))

    async def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await _close(session.smtp)

    # -- AUTH -------------------------------------------------------------------------------

    async def _authenticate(self, session: _Session) -> None:
        s = self._s
        smtp = session.smtp
        try:
            mechanism = choose_mechanism(
                smtp.server_auth_methods,
                has_password=bool(s.username) and s.token_provider is None,
                has_token=s.token_provider is not None,
                preferred_token_mechanism=Mechanism(s.mechanism.upper()),
                encrypted=session.encrypted,
                allow_plaintext=s.allow_plaintext_auth,
            )
        except AuthUnavailable as exc:
            raise self._error("auth", str(exc), Outcome.ACCOUNT) from None
        if mechanism is None:
            return
        session.mechanism = mechanism
        if mechanism.uses_token:
            response, detail = await self._token_auth(smtp, mechanism)
        else:
            response, detail = await self._password_auth(smtp, mechanism)
        session.auth_reply = f"{response.code} {one_line(response.message)}"
        if response.code != 235:
            raise self._auth_refused(mechanism, response, detail)

    async def _password_auth(
        self, smtp: aiosmtplib.SMTP, mechanism: Mechanism
    ) -> tuple[aiosmtplib.SMTPResponse, str]:
        s = self._s
        if mechanism is Mechanism.PLAIN:
            return await smtp.execute_command(
                b"AUTH", b"PLAIN", plain_response(s.username, s.password)
            ), ""
        user, password = login_responses(s.username, s.password)
        response = await smtp.execute_command(b"AUTH", b"LOGIN")
        for answer in (user, password):
            if response.code != 334:
                return response, ""
            response = await smtp.execute_command(answer)
        return response, ""

    async def _token_auth(
        self, smtp: aiosmtplib.SMTP, mechanism: Mechanism
    ) -> tuple[aiosmtplib.SMTPResponse, str]:
        provider = self._s.token_provider
        assert provider is not None
        token = await self._token(provider)
        response, detail = await self._bearer_exchange(smtp, mechanism, token)
        if response.code == 235 or 400 <= response.code < 500 or not smtp.is_connected:
            return response, detail
        # Refused: the token may have been revoked or expired early. One fresh one, once.
        log.info(
            "smtp_token_refused",
            account=self._account,
            endpoint=self.endpoint,
            reply=f"{response.code} {one_line(response.message)}",
            detail=detail,
        )
        await provider.invalidate(token)
        fresh = await self._token(provider)
        return await self._bearer_exchange(smtp, mechanism, fresh)

    async def _token(self, provider: TokenProvider) -> str:
        return await fetch_token(provider, self._s.timeout_s, endpoint=self.endpoint, step="auth")

    async def _bearer_exchange(
        self, smtp: aiosmtplib.SMTP, mechanism: Mechanism, token: str
    ) -> tuple[aiosmtplib.SMTPResponse, str]:
        s = self._s
        if mechanism is Mechanism.XOAUTH2:
            blob = xoauth2_response(s.username, token)
        else:
            blob = oauthbearer_response(s.username, token, s.host, s.port)
        name = mechanism.value.encode("ascii")
        response = await smtp.execute_command(b"AUTH", name, blob)
        if response.code in (500, 501):
            # Initial response refused (too long a line for the server, or not supported):
            # the two-step form Microsoft documents, AUTH XOAUTH2 / 334 / the blob.
            response = await smtp.execute_command(b"AUTH", name)
            if response.code == 334:
                response = await smtp.execute_command(blob)
        detail = ""
        if response.code == 334:
            # An error challenge (base64 JSON); answering it ends the exchange with the failure.
            detail = describe_error_challenge(response.message)
            response = await smtp.execute_command(ERROR_CHALLENGE_ANSWER[mechanism])
        return response, detail

    def _auth_refused(
        self, mechanism: Mechanism, response: aiosmtplib.SMTPResponse, detail: str
    ) -> DeliveryError:
        outcome = classify_reply("auth", response.code)
        user = self._s.username
        if mechanism.uses_token:
            what = (
                f"the server refused the OAuth2 token for {user} (a fresh one too)"
                + (f" [{detail}]" if detail else "")
                + ": check that SMTP AUTH is enabled for the mailbox and that the token has "
                "the mail scope; re-authorize with `notifier oauth2 authorize`"
            )
        else:
            what = (
                f"the server refused the password for {user} (AUTH {mechanism.value}): check "
                "username and password; Microsoft 365 answers 535 5.7.139 when basic auth is "
                "disabled (use OAuth2 there)"
            )
        return self._error(
            "auth",
            what,
            outcome,
            response.code,
            one_line(response.message),
            auth_failed=outcome is Outcome.ACCOUNT,
        )

    # -- reporting --------------------------------------------------------------------------

    def _error(
        self,
        step: str,
        detail: str,
        outcome: Outcome,
        code: int | None = None,
        reply: str = "",
        *,
        auth_failed: bool = False,
    ) -> DeliveryError:
        return DeliveryError(
            detail,
            outcome=outcome,
            step=step,
            endpoint=self.endpoint,
            reply_code=code,
            reply=reply,
            auth_failed=auth_failed,
        )

    def _report(self, session: _Session | None, outcome: SendResult | DeliveryError) -> SendReport:
        base = SendReport(
            transport="smtp",
            endpoint=self.endpoint,
            result=outcome if isinstance(outcome, SendResult) else None,
            error=outcome if isinstance(outcome, DeliveryError) else None,
        )
        if session is None or not session.smtp.is_connected:
            return base
        smtp = session.smtp
        ssl_object = smtp.get_transport_info("ssl_object")
        version = cipher = subject = ""
        if isinstance(ssl_object, ssl.SSLObject):
            version = ssl_object.version() or ""
            cipher = (ssl_object.cipher() or ("",))[0]
            cert: dict[str, Any] = dict(ssl_object.getpeercert() or {})
            names: list[tuple[str, str]] = [pair for rdn in cert.get("subject", ()) for pair in rdn]
            subject = ", ".join(f"{key}={value}" for key, value in names)
        return SendReport(
            transport="smtp",
            endpoint=self.endpoint,
            result=base.result,
            error=base.error,
            banner=session.banner,
            tls_version=version,
            tls_cipher=cipher,
            tls_mode=session.tls_mode,
            server_certificate=subject,
            extensions=tuple(sorted(smtp.esmtp_extensions)),
            auth_offered=tuple(m.upper() for m in smtp.server_auth_methods),
            mechanism=session.mechanism.value if session.mechanism else "",
            auth_reply=session.auth_reply,
        )
