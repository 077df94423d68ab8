"""Starting the route workers, and the test-mail action."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from notifier.config import AccountSettings, Settings
from notifier.dispatch.rules import RuleError, compile_routes
from notifier.dispatch.state import AlarmStore
from notifier.dispatch.worker import RouteTarget, RouteWorker
from notifier.log import get_logger
from notifier.mail.compose import Envelope, MailItem, Reason, compose
from notifier.mail.tokens import TokenProvider
from notifier.mail.transport import MailTransport, SendReport
from notifier.metrics import Metrics
from notifier.records import Kind, Record, Severity
from notifier.spool.base import Spool

log = get_logger("notifier.dispatch")


def build_transport(
    settings: Settings, account: AccountSettings, token_provider: TokenProvider | None = None
) -> MailTransport:
    """The account's way out: SMTP when a server is set, else the file outbox.

    With a `token_provider` (an OAuth2 account) the SMTP login is XOAUTH2 / OAUTHBEARER as the
    mailbox `username` (default: the sender address) instead of a password.
    """
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
            username=account.username
            or (account.sender_address if token_provider is not None else ""),
            password=account.password.get_secret_value(),
            token_provider=token_provider,
            mechanism=account.oauth2.mechanism if account.oauth2 else "xoauth2",
            allow_plaintext_auth=account.allow_plaintext_auth,
            timeout_s=account.timeout_s,
        ),
        account=account.name,
    )


def address_problems(settings: Settings) -> list[str]:
    """One line per configured mail address that cannot be used, naming its key."""
    from notifier.mail.compose import parse_mailbox

    problems = []
    checks = [(f"accounts.{a.name}.sender_address", a.sender_address) for a in settings.accounts]
    for i, r in enumerate(settings.routes):
        for key in ("to", "cc", "bcc"):
            checks += [(f"routes.{i}.{key}", entry) for entry in getattr(r, key)]
        if not r.to and not r.cc and not r.bcc:
            problems.append(f"routes.{i}.to: a route needs at least one recipient")
    for key, entry in checks:
        try:
            parse_mailbox(entry)
        except ValueError as e:
            problems.append(f"{key}: {e}")
    return problems


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


@dataclass
class Dispatcher:
    """The running route workers and the account transports they share."""

    workers: list[RouteWorker]
    transports: dict[str, MailTransport]
    store: AlarmStore
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _nudges: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(w.run(), name=w.consumer) for w in self.workers]

    async def stop_workers(self) -> None:
        """Stop leasing; a waiting mail goes out now (bounded), the rest stays spooled."""
        for w in self.workers:
            w.stop()
        if not self.tasks:
            return
        _, pending = await asyncio.wait(self.tasks, timeout=5)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def close_transports(self) -> None:
        for t in self.transports.values():
            await t.close()
        await self.store.close()

    def status(self) -> list[dict[str, Any]]:
        return [w.status() for w in self.workers]

    def nudge(self, account: str) -> None:
        """Mails waiting for `account` go out now rather than at their next retry time (the
        account was just fixed, e.g. signed in again)."""
        for w in self.workers:
            if w.account == account:
                task = asyncio.create_task(w.retry_now(), name=f"nudge {w.consumer}")
                self._nudges.add(task)
                task.add_done_callback(self._nudges.discard)

    async def send_test(self, settings: Settings, account: str = "", to: str = "") -> SendReport:
        """The test-mail action inside the running service, through the account's transport
        (and so its OAuth2 tokens). Raises `TestMailError` for an unknown account."""
        name, message = test_message(settings, account, to)
        transport = self.transports.get(name)
        if transport is None:
            raise TestMailError(f"account {name!r} is used by no route")
        async with self.locks[name]:
            return await transport.test(message)


def build_dispatcher(
    settings: Settings,
    spool: Spool,
    metrics: Metrics,
    token_providers: Mapping[str, TokenProvider] | None = None,
) -> Dispatcher:
    """One worker per route, one transport per account; raises ValueError for a bad rule.

    `token_providers`: account name -> OAuth2 token provider, for OAuth2 accounts."""
    providers = token_providers or {}
    routes = settings.effective_routes()
    try:
        matchers = compile_routes(routes)
    except RuleError as e:
        raise ValueError(str(e)) from None
    store = AlarmStore(Path(settings.data_dir) / "alarms.sqlite")
    transports: dict[str, MailTransport] = {}
    locks: dict[str, asyncio.Lock] = {}
    workers: list[RouteWorker] = []
    for route, matcher in zip(routes, matchers, strict=True):
        account = settings.account(route.account)
        if account.name not in transports:
            transports[account.name] = build_transport(
                settings, account, providers.get(account.name)
            )
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
    return Dispatcher(workers, transports, store, locks)


class TestMailError(ValueError):
    """test-mail cannot start: unknown account or no recipient. The message says what to do."""


def test_message(settings: Settings, account: str = "", to: str = "") -> tuple[str, EmailMessage]:
    """(account name, the test message) for `notifier test-mail` and the page's button.

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
    record = Record(
        kind=Kind.EVENT,
        received_at=time.time(),
        sender="notifier test-mail",
        receiver="cli",
        raw=b"",
        text=f"Test message from notifier: account {acct.name!r} can send mail",
        device="notifier",
        source="test-mail",
        severity=Severity.INFO,
    )
    message = compose([MailItem(record, Reason.TEST)], envelope_for(acct, recipients, [], []))
    return acct.name, message


async def test_mail(settings: Settings, account: str = "", to: str = "") -> int:
    """Send one test mail through an account and print what happened; 0 when it was accepted."""
    from notifier.oauth2.runtime import OAuth2Runtime

    try:
        name, message = test_message(settings, account, to)
    except TestMailError as e:
        print(f"notifier: {e}", file=sys.stderr)
        return 2
    runtime = OAuth2Runtime.open(settings)
    provider = runtime.providers.get(name) if runtime else None
    transport = build_transport(settings, settings.account(name), provider)
    try:
        report = await transport.test(message)
    finally:
        await transport.close()
        if runtime is not None:
            await runtime.close()
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
