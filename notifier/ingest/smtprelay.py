"""The SMTP relay receiver: devices that only know SMTP passwords hand their mail to notifier.

Built on aiosmtpd. STARTTLS is offered when a certificate is configured, AUTH PLAIN / LOGIN only
after it, against `[smtp_relay] users`. Unauthenticated peers may relay from loopback only.
A mail is answered 250 only once the spool holds it durably (the relay's records are always
durable and never dropped for room: a full spool answers 451 and the device retries); the relay
consumer (`notifier/dispatch/relay.py`) then sends it on through the relay's account.

Every refusal is a counted 5xx (`notifier_ingest_rejected{receiver="smtp-relay"}`) with a reason
the device's log can show, and one warning, rate-limited per peer.
"""

from __future__ import annotations

import asyncio
import enum
import fnmatch
import ipaddress
import socket
import time
import weakref
from collections.abc import Callable, Sequence
from ssl import SSLContext
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from notifier.config import SmtpRelaySettings
from notifier.ingest.httpauth import Passwords
from notifier.ingest.parse.mail import mail_record
from notifier.ingest.parse.syslog import host_of
from notifier.ingest.stream import Refusals, format_peer
from notifier.log import get_logger
from notifier.metrics import Metrics
from notifier.records import SMTP_RELAY, MailEnvelope
from notifier.spool.base import Spool, SpoolFull

log = get_logger("notifier.ingest.smtprelay")

_CLOSE_S = 5.0


class Refusal(enum.StrEnum):
    """Why the relay refused a command; the `reason` label of the rejection counter."""

    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    SENDER_NOT_ALLOWED = "sender_not_allowed"
    RECIPIENT_NOT_ALLOWED = "recipient_not_allowed"
    TOO_BIG = "too_big"
    LINE_TOO_LONG = "line_too_long"
    SPOOL_FULL = "spool_full"
    SPOOL_UNAVAILABLE = "spool_unavailable"  # its storage failed (the database is down)
    SPOOL_ERROR = "spool_error"
    SESSION_ERROR = "session_error"  # a failed TLS handshake, a broken client, a bug


def is_loopback(peer: str) -> bool:
    """Whether a peer ("ip:port", "[v6]:port") is on this machine's loopback."""
    try:
        return ipaddress.ip_address(host_of(peer)).is_loopback
    except ValueError:
        return False


def address_allowed(address: str, patterns: Sequence[str]) -> bool:
    """Whether a mail address matches one of the globs (case-insensitive); [] allows any."""
    lowered = address.lower()
    return not patterns or any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


def may_relay(peer: str, user: str, is_local: Callable[[str], bool] = is_loopback) -> bool:
    """Relaying is for logged-in users and for loopback peers (the device on this host, or a
    local proxy); anyone else must log in first."""
    return bool(user) or is_local(peer)


# aiosmtpd refuses oversized mail and over-long lines itself, before any handler hook: the
# replies it pushes, by prefix, and what they mean here.
_LIBRARY_REFUSALS = {
    "552 Error: message size exceeds": Refusal.TOO_BIG,
    "552 Error: Too much mail data": Refusal.TOO_BIG,
    "500 Line too long": Refusal.LINE_TOO_LONG,
}


def library_refusal(status: str) -> Refusal | None:
    """The refusal an aiosmtpd reply stands for, or None for any other reply."""
    return next((r for p, r in _LIBRARY_REFUSALS.items() if status.startswith(p)), None)


class _RelaySMTP(SMTP):
    """aiosmtpd's session, with its own size and line refusals counted and worded for people."""

    def __init__(self, relay: SmtpRelay, **kw: Any) -> None:
        super().__init__(relay, **kw)
        self.relay = relay

    async def push(self, status: Any) -> None:
        refusal = library_refusal(status) if isinstance(status, str) else None
        if refusal is not None:
            status = self.relay.refuse(self.session, refusal)
        await super().push(status)

    async def handle_exception(self, error: Exception) -> str:
        """Counted and logged rate-limited, answered with a 4xx that shows no internals
        (aiosmtpd's own answer is a 500 with the error's text)."""
        detail = f"{type(error).__name__}: {error}"
        if error.__cause__ is not None:  # a failed TLS handshake says why in its cause
            detail += f" ({type(error.__cause__).__name__}: {error.__cause__})"
        return self.relay.refuse(self.session, Refusal.SESSION_ERROR, detail)


class SmtpRelay:
    """The listening relay; also the aiosmtpd handler of its sessions (the `handle_*` hooks)."""

    def __init__(
        self,
        settings: SmtpRelaySettings,
        spool: Spool,
        metrics: Metrics,
        tls: SSLContext | None = None,
        *,
        is_local: Callable[[str], bool] = is_loopback,
    ) -> None:
        """`is_local`: which peers may relay without AUTH (tests stand in a remote peer)."""
        self._s = settings
        self._is_local = is_local
        self._spool = spool
        self._metrics = metrics
        self._tls = tls
        self._passwords = Passwords({k: v.get_secret_value() for k, v in settings.users.items()})
        self._refusals = Refusals(SMTP_RELAY, metrics)
        self._received = metrics.received.labels(SMTP_RELAY)
        self._hostname = socket.gethostname()  # not getfqdn: that may wait for DNS
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[_RelaySMTP] = weakref.WeakSet()
        self.addresses: list[tuple[str, int]] = []

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, host, port)
        self.addresses = [s.getsockname()[:2] for s in self._server.sockets]

    def _session(self) -> _RelaySMTP:
        smtp = _RelaySMTP(
            self,
            data_size_limit=self._s.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=self._hostname,
            ident="notifier SMTP relay",
            tls_context=self._tls,
            # AUTH only inside TLS; without users, no mechanism is offered at all.
            auth_require_tls=True,
            auth_exclude_mechanism=[] if self._passwords else ["LOGIN", "PLAIN"],
            authenticator=self._authenticate,
            loop=asyncio.get_running_loop(),
        )
        self._sessions.add(smtp)
        return smtp

    async def close(self) -> None:
        """Stop listening and end open sessions; a mail not yet answered 250 is the sender's
        to send again."""
        if self._server is None:
            return
        self._server.close()
        for smtp in list(self._sessions):
            if smtp.transport is not None:
                smtp.transport.close()
        async with asyncio.timeout(_CLOSE_S):
            await self._server.wait_closed()
        self._server = None

    # -- decisions turned into replies -----------------------------------------------------

    def refuse(self, session: Session | None, refusal: Refusal, detail: str = "") -> str:
        """Count and log a refusal; returns the reply for the peer."""
        peer = format_peer(session.peer) if session else ""
        reply = self._reply(refusal, detail)
        self._refusals.reject(peer, refusal.value, detail or reply)
        return reply

    def _reply(self, refusal: Refusal, detail: str) -> str:
        s = self._s
        if refusal is Refusal.AUTH_REQUIRED:
            if not self._passwords:
                return (
                    "550 5.7.1 Relaying denied: this relay takes mail from loopback peers only "
                    "(no smtp_relay.users are configured)"
                )
            return "530 5.7.0 Authentication required: STARTTLS, then AUTH, to relay from here"
        if refusal is Refusal.AUTH_FAILED:
            return "535 5.7.8 Authentication credentials invalid"
        if refusal is Refusal.SENDER_NOT_ALLOWED:
            return f"550 5.7.1 Sender <{detail}> may not relay here (smtp_relay.allowed_senders)"
        if refusal is Refusal.RECIPIENT_NOT_ALLOWED:
            return f"550 5.7.1 Recipient <{detail}> is not allowed (smtp_relay.allowed_recipients)"
        if refusal is Refusal.TOO_BIG:
            return (
                f"552 5.3.4 Message too big: this relay takes at most {s.max_message_bytes} "
                "bytes (smtp_relay.max_message_bytes)"
            )
        if refusal is Refusal.LINE_TOO_LONG:
            return "500 5.5.2 Line too long: at most 1000 characters a line (RFC 5321 4.5.3.1.6)"
        if refusal is Refusal.SPOOL_FULL:
            return "451 4.3.1 The queue is full: try again later"
        if refusal is Refusal.SESSION_ERROR:
            return "451 4.3.0 Error in this session: try again later"
        return "451 4.3.0 The mail could not be stored: try again later"

    # -- aiosmtpd hooks --------------------------------------------------------------------

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if self._passwords.matches(user, password):
                return AuthResult(success=True, auth_data=user)
        else:
            user = ""
        reply = self.refuse(session, Refusal.AUTH_FAILED, f"AUTH {mechanism} as {user[:80]!r}")
        return AuthResult(success=False, handled=False, message=reply)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if not self._passwords:
            # aiosmtpd would still advertise an empty "AUTH" after STARTTLS.
            return [r for r in responses if not r[4:].upper().startswith("AUTH")]
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        peer = format_peer(session.peer)
        if not may_relay(peer, _user(session), self._is_local):
            return self.refuse(session, Refusal.AUTH_REQUIRED, f"MAIL FROM <{address[:200]}>")
        if not address_allowed(address, self._s.allowed_senders):
            return self.refuse(session, Refusal.SENDER_NOT_ALLOWED, address[:200])
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if not address_allowed(address, self._s.allowed_recipients):
            return self.refuse(session, Refusal.RECIPIENT_NOT_ALLOWED, address[:200])
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Store the mail; 250 only once the spool holds it durably."""
        self._received.inc()
        content = envelope.original_content or b""
        peer = format_peer(session.peer)
        user = _user(session)
        record = mail_record(
            content,
            MailEnvelope(envelope.mail_from or "", tuple(envelope.rcpt_tos)),
            sender=peer,
            received_at=time.time(),
            user=user,
        )
        try:
            await self._spool.put([record])
        except SpoolFull as e:  # full, or its storage failed (SpoolUnavailable)
            return self.refuse(session, Refusal(e.reason), str(e))
        except Exception as e:
            # Not the sender's fault and not theirs to see: a 4xx, so the device tries again.
            log.error("spool_put_failed", receiver=SMTP_RELAY, error=f"{type(e).__name__}: {e}")
            return self.refuse(session, Refusal.SPOOL_ERROR, "the spool could not store the mail")
        self._metrics.accepted.labels(SMTP_RELAY, record.kind.value).inc()
        log.info(
            "relay mail taken",
            record=record.id,
            sender=peer,
            user=user,
            mail_from=envelope.mail_from,
            recipients=len(envelope.rcpt_tos),
            bytes=len(content),
        )
        return f"250 2.0.0 OK: queued as {record.id}"


def _user(session: Session) -> str:
    """The logged-in user of a session, or ""."""
    if not session.authenticated:
        return ""
    data = session.auth_data
    return data if isinstance(data, str) else ""
