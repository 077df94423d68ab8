"""Starting the route workers, and the test-mail action."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from notifier.config import AccountSettings, Settings
from notifier.dispatch.rules import FirstMatch, Matcher, RuleError, compile_match
from notifier.dispatch.state import AlarmStore
from notifier.dispatch.worker import RouteTarget, RouteWorker
from notifier.log import get_logger
from notifier.mail.compose import Envelope, MailItem, Reason, compose
from notifier.mail.transport import MailTransport
from notifier.metrics import Metrics
from notifier.records import Kind, Record, Severity
from notifier.spool.base import Spool

log = get_logger("notifier.dispatch")


def build_transport(settings: Settings, account: AccountSettings) -> MailTransport:
    """The account's way out: SMTP when a server is set, else the file outbox."""
    if account.uses_outbox:
        from notifier.mail.outbox import Outbox

        return Outbox(Path(settings.data_dir) / "outbox")
    from notifier.mail.smtp import SmtpSender, SmtpSettings

    host, _, port = account.server.rpartition(":")
    return SmtpSender(
        SmtpSettings(
            host=host.strip("[]"),
            port=int(port),
            tls=account.tls,
            ca_file=account.ca_file,
            ehlo_name=account.ehlo_name,
            username=account.username,
            password=account.password.get_secret_value(),
            allow_plaintext_auth=account.allow_plaintext_auth,
            timeout_s=account.timeout_s,
        ),
        account=account.name,
    )


def envelope_for(
    account: AccountSettings, to: list[str], cc: list[str], bcc: list[str]
) -> Envelope:
    return Envelope(
        sender=account.sender_address,
        sender_name=account.sender_name,
        to=tuple(to),
        cc=tuple(cc),
        bcc=tuple(bcc),
    )


async def start_dispatchers(
    settings: Settings, spool: Spool, metrics: Metrics
) -> list[Callable[[], Awaitable[None]]]:
    """Start one worker per route; returns the closers, in the order to call them."""
    store = AlarmStore(Path(settings.data_dir) / "alarms.sqlite")
    transports: dict[str, MailTransport] = {}
    locks: dict[str, asyncio.Lock] = {}
    workers: list[RouteWorker] = []
    # First match wins: a route skips what an earlier route without `continue` took.
    taken_before: list[Matcher] = []
    for i, route in enumerate(settings.effective_routes()):
        try:
            own = compile_match(route.match, f"routes.{i}.match")
        except RuleError as e:
            raise ValueError(str(e)) from None
        matcher = FirstMatch(own, tuple(taken_before))
        if not route.continue_matching:
            taken_before.append(own)
        account = settings.account(route.account)
        if account.name not in transports:
            transports[account.name] = build_transport(settings, account)
            locks[account.name] = asyncio.Lock()
        target = RouteTarget(
            account.name,
            transports[account.name],
            envelope_for(account, route.to, route.cc, route.bcc),
            locks[account.name],
        )
        workers.append(
            RouteWorker(
                route,
                matcher,
                spool,
                store,
                target,
                metrics,
                retry_base_s=settings.spool.retry_base_s,
                retry_max_s=settings.spool.retry_max_s,
            )
        )
    tasks = [asyncio.create_task(w.run(), name=w.consumer) for w in workers]

    async def stop_workers() -> None:
        for w in workers:
            w.stop()
        _, pending = await asyncio.wait(tasks, timeout=5)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def close_transports() -> None:
        for t in transports.values():
            await t.close()
        store.close()

    return [stop_workers, close_transports]


async def test_mail(settings: Settings, account: str = "", to: str = "") -> int:
    """Send one test mail through an account and print what happened; 0 when it was accepted."""
    try:
        acct = settings.account(account) if account else settings.accounts[0]
    except KeyError:
        names = ", ".join(a.name for a in settings.accounts)
        print(f"notifier: no account named {account!r} (have {names})", file=sys.stderr)
        return 2
    routes = [r for r in settings.effective_routes() if r.account == acct.name]
    recipients = [to] if to else (routes[0].to if routes else [])
    if not recipients:
        print(f"notifier: account {acct.name!r} has no route: pass --to ADDRESS", file=sys.stderr)
        return 2
    now = time.time()
    record = Record(
        kind=Kind.EVENT,
        received_at=now,
        sender="notifier test-mail",
        receiver="cli",
        raw=b"",
        text=f"Test message from notifier: account {acct.name!r} can send mail",
        device="notifier",
        source="test-mail",
        severity=Severity.INFO,
    )
    message = compose([MailItem(record, Reason.TEST)], envelope_for(acct, recipients, [], []))
    transport = build_transport(settings, acct)
    try:
        report = await transport.test(message)
    finally:
        await transport.close()
    for line in describe_report(report):
        print(line)
    return 0 if report.ok else 1


def describe_report(report: object) -> list[str]:
    """The test-mail report in words, one fact a line."""
    from notifier.mail.transport import SendReport

    assert isinstance(report, SendReport)
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
