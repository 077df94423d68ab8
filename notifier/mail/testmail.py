"""The test mail: what `notifier test-mail` and the page's "Send test mail" button send, and the
report of how the session went, in words. One message builder for both."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.message import EmailMessage

from notifier.config import Settings
from notifier.mail.accounts import envelope_for
from notifier.mail.compose import MailItem, Reason, compose
from notifier.mail.style import MailStyle, mail_zone
from notifier.mail.transport import MailError, SendReport
from notifier.records import Kind, Record, Severity


class TestMailError(MailError):
    """A test mail cannot start: unknown account or no recipient. The message says what to do."""

    __test__ = False  # not a pytest test class, whatever its name


@dataclass(frozen=True)
class TestMail:
    """The test message and the account it goes out through."""

    __test__ = False

    account: str
    message: EmailMessage


def compose_test_mail(
    settings: Settings, account: str = "", to: str = "", now: float | None = None
) -> TestMail:
    """The test mail through `account` (default: the first) to `to` (default: the recipients
    of the account's first route).

    Raises `TestMailError` for an unknown account or when no recipient is known."""
    try:
        acct = settings.account(account) if account else settings.accounts[0]
    except KeyError:
        names = ", ".join(a.name for a in settings.accounts)
        raise TestMailError(f"no account named {account!r} (have {names})") from None
    routes = [r for r in settings.effective_routes() if r.account == acct.name]
    recipients = [to] if to else (routes[0].to if routes else [])
    if not recipients:
        raise TestMailError(f"account {acct.name!r} has no route: pass --to ADDRESS")
    when = time.time() if now is None else now
    record = Record(
        kind=Kind.EVENT,
        received_at=when,
        sender="local",
        receiver="test-mail",
        raw=b"",
        text=f"This is a test mail from notifier through account {acct.name!r}. "
        "No action is needed.",
        device="notifier",
        source="test-mail",
        severity=Severity.INFO,
    )
    envelope = envelope_for(acct, recipients, [], [])
    message = compose(
        [MailItem(record, Reason.TEST)],
        envelope,
        instance=settings.instance(),
        style=MailStyle(zone=mail_zone(settings)),
        now=when,
    )
    return TestMail(acct.name, message)


def describe_report(report: SendReport) -> list[str]:
    """The test-mail report in words, one fact a line."""
    lines = [f"transport: {report.transport} ({report.endpoint})"]
    if report.banner:
        lines.append(f"server: {report.banner}")
    if report.transport == "smtp":
        tls = (
            f"{report.tls_mode} {report.tls_version} {report.tls_cipher}".strip()
            if report.tls_version
            else "none (unencrypted)"
        )
        lines.append(f"tls: {tls}")
        if report.server_certificate:
            lines.append(f"certificate: {report.server_certificate}")
        lines.append(f"auth offered: {' '.join(report.auth_offered) or '-'}")
        lines.append(
            f"auth used: {report.mechanism or 'none'}"
            + (f" ({report.auth_reply})" if report.auth_reply else "")
        )
    elif report.mechanism:
        lines.append(f"auth used: {report.mechanism}")
    if report.result is not None:
        where = f" -> {report.result.path}" if report.result.path else ""
        lines.append(
            f"result: accepted for {', '.join(report.result.accepted)}"
            f" {report.result.reply}{where}".rstrip()
        )
        lines.append(f"message-id: {report.result.message_id}")
    if report.error is not None:
        lines.append(f"error: {report.error}")
    return lines
