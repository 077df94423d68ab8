"""What every way of delivering mail shares: the outgoing mail, the results, the errors.

`SmtpSender` (smtp.py) and `Outbox` (outbox.py) both satisfy `MailTransport`, so the dispatcher
never knows which one it holds.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import MappingProxyType
from typing import Protocol

from aiosmtplib.email import extract_recipients, extract_sender

from notifier.metrics import Metrics, Reading, health_readings


@dataclass(frozen=True)
class Outgoing:
    """A message and its SMTP envelope (Bcc recipients are only here, never in a header)."""

    message: EmailMessage
    mail_from: str
    rcpt_to: tuple[str, ...]

    @classmethod
    def of(cls, item: EmailMessage | Outgoing) -> Outgoing:
        """Wrap a bare message, taking the envelope from its From / To / Cc / Bcc headers."""
        if isinstance(item, Outgoing):
            return item
        sender = extract_sender(item) or ""
        recipients = dict.fromkeys(extract_recipients(item))  # To, Cc and Bcc, each once
        return cls(item, sender, tuple(recipients))

    @property
    def message_id(self) -> str:
        return str(self.message.get("Message-ID", ""))


def one_line(text: str, limit: int = 300) -> str:
    """A server's answer as one line of at most `limit` characters, for errors and logs."""
    return " ".join(str(text).split())[:limit]


class Outcome(enum.StrEnum):
    """How a failed delivery should be handled; also the `outcome` label of the failure counter."""

    # Connection refused, timeout, 4xx, dropped connection: retry later with backoff.
    TEMPORARY = "temporary"
    # The server refused this message for good (5xx on RCPT or DATA): retrying cannot help.
    PERMANENT = "permanent"
    # The account cannot send at all (credentials refused, certificate not trusted, TLS or AUTH
    # not available, sender address refused): keep the mail spooled, mark the account, tell ops.
    ACCOUNT = "account"


class MailError(Exception):
    """The root of the mail package's errors."""


class DeliveryError(MailError):
    """A delivery that did not happen. `str()` is one line a person can act on, never a secret.

    `permanent`: dead-letter the message. `account_error`: the account is broken (the message is
    fine; keep it spooled until the account works). `auth_failed`: the server refused the
    credentials or token (a subset of account errors). Otherwise: temporary, retry with backoff.
    """

    def __init__(
        self,
        detail: str,
        *,
        outcome: Outcome,
        step: str,
        endpoint: str = "",
        reply_code: int | None = None,
        reply: str = "",
        auth_failed: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        where = f"{endpoint}: " if endpoint else ""
        answered = f" (server answered {reply_code} {reply})" if reply_code is not None else ""
        super().__init__(f"{where}{step} failed: {detail}{answered}")
        self.outcome = outcome
        self.step = step
        self.endpoint = endpoint
        self.reply_code = reply_code
        self.reply = reply
        self.auth_failed = auth_failed
        # How long the server asked us to wait (HTTP Retry-After); None when it did not say.
        self.retry_after_s = retry_after_s

    @property
    def permanent(self) -> bool:
        return self.outcome is Outcome.PERMANENT

    @property
    def account_error(self) -> bool:
        return self.outcome is Outcome.ACCOUNT

    @property
    def temporary(self) -> bool:
        return self.outcome is Outcome.TEMPORARY


_NO_REFUSALS: Mapping[str, tuple[int, str]] = MappingProxyType({})


@dataclass(frozen=True)
class SendResult:
    """A message the server (or the outbox) took. `refused`: recipients the server refused
    while accepting the others, address -> (code, reply)."""

    message_id: str
    accepted: tuple[str, ...]
    reply: str = ""
    refused: Mapping[str, tuple[int, str]] = field(default_factory=lambda: _NO_REFUSALS)
    path: str = ""  # the outbox file, when written to the outbox


@dataclass(frozen=True)
class SendReport:
    """What `notifier test-mail` shows: how the session went, step by step."""

    transport: str  # "smtp", "outbox", "graph" or "gmail_api"
    endpoint: str  # host:port, the outbox directory, or the API's URL
    result: SendResult | None = None
    error: DeliveryError | None = None
    banner: str = ""
    tls_version: str = ""  # e.g. "TLSv1.3"; "" when unencrypted
    tls_cipher: str = ""
    tls_mode: str = ""  # "implicit", "starttls", "none"
    server_certificate: str = ""  # subject of the server certificate
    extensions: tuple[str, ...] = ()
    auth_offered: tuple[str, ...] = ()
    mechanism: str = ""  # the AUTH mechanism used; "" for none
    auth_reply: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class TransportHealth:
    """How one account's transport is doing, for the status page and /metrics. Times are Unix
    seconds. A permanent failure is about one message, not the transport: it changes nothing."""

    kind: str  # "smtp", "outbox", "graph", "gmail_api"
    endpoint: str
    last_success: float | None = None
    failing_since: float | None = None
    last_error: str = ""
    next_retry: float | None = None  # the server asked for quiet until then (Retry-After)

    def note(self, results: Sequence[SendResult | DeliveryError], now: float) -> None:
        for result in results:
            if isinstance(result, SendResult):
                self.last_success, self.failing_since, self.last_error = now, None, ""
            elif not result.permanent:
                self.failing_since = self.failing_since or now
                self.last_error = str(result)

    @property
    def state(self) -> str:
        if self.failing_since is not None:
            return "failing"
        return "ok" if self.last_success is not None else "idle"


def transport_readings(health: Mapping[str, TransportHealth]) -> list[Reading]:
    """The /metrics gauges of each account's transport (account -> its health)."""
    readings = []
    for account, h in health.items():
        readings += health_readings(
            "notifier_mail_transport",
            "account's mail transport",
            {"account": account, "transport": h.kind},
            h.failing_since is not None,
            [
                ("last_success", h.last_success, "Last mail the transport delivered"),
                ("failing_since", h.failing_since, "First failure since the last delivered mail"),
                ("next_retry", h.next_retry, "Until when the server asked for quiet (Retry-After)"),
            ],
        )
    return readings


class MailTransport(Protocol):
    health: TransportHealth

    async def send(
        self, messages: Sequence[EmailMessage | Outgoing]
    ) -> list[SendResult | DeliveryError]:
        """Deliver each message; one result per message, in order. Never raises DeliveryError."""
        ...

    async def test(self, message: EmailMessage | Outgoing) -> SendReport: ...

    async def close(self) -> None: ...


def count_results(
    metrics: Metrics | None,
    account: str,
    results: Sequence[SendResult | DeliveryError],
    health: TransportHealth | None = None,
) -> None:
    """Count sent mails and failures (by outcome) for `account`, and note them in `health`."""
    if health is not None:
        health.note(results, time.time())
    if metrics is None:
        return
    for result in results:
        if isinstance(result, DeliveryError):
            metrics.mail_failures.labels(account, result.outcome.value).inc()
        else:
            metrics.mails_sent.labels(account).inc()
