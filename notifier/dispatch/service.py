"""Starting the route workers of the configured routes, each with its account's transport."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from notifier.config import AccountSettings, Settings
from notifier.dispatch.mutes import Mutes
from notifier.dispatch.relay import RelayWorker
from notifier.dispatch.rules import RuleError, compile_routes
from notifier.dispatch.worker import RouteTarget, RouteWorker
from notifier.mail.accounts import build_transport, envelope_for
from notifier.mail.style import TemplateConfigError, route_styles
from notifier.mail.testmail import TestMailError, compose_test_mail
from notifier.mail.tokens import TokenProvider
from notifier.mail.transport import MailTransport, SendReport
from notifier.metrics import Metrics
from notifier.spool.base import Spool
from notifier.spool.cluster import Cluster, owned
from notifier.spool.state import StateStore


class Worker(Protocol):
    """A spool consumer that mails through an account: a route's worker, or the relay's."""

    @property
    def consumer(self) -> str: ...

    @property
    def account(self) -> str: ...

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    async def retry_now(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


@dataclass
class Dispatcher:
    """The running route workers (and the SMTP relay's) and the account transports they share."""

    settings: Settings
    workers: list[Worker]
    transports: dict[str, MailTransport]
    store: StateStore  # opened and closed by the caller
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cluster: Cluster | None = None  # None: every worker runs (one instance, as in tests)
    _nudges: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(owned(self.cluster, w, self._stopping)(), name=w.consumer)
            for w in self.workers
        ]

    async def stop_workers(self) -> None:
        """Stop leasing; a waiting mail goes out now (bounded), the rest stays spooled."""
        self._stopping.set()
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

    async def send_test(self, account: str = "", to: str = "") -> SendReport:
        """The test mail inside the running service, through the account's transport (and so
        its OAuth2 tokens). Raises `TestMailError` for an unknown account or recipient."""
        mail = compose_test_mail(self.settings, account, to)
        transport = self.transports.get(mail.account)
        if transport is None:
            raise TestMailError(f"account {mail.account!r} is used by no route")
        async with self.locks[mail.account]:
            return await transport.test(mail.message)


def build_dispatcher(
    settings: Settings,
    spool: Spool,
    store: StateStore,
    metrics: Metrics,
    token_providers: Mapping[str, TokenProvider] | None = None,
    cluster: Cluster | None = None,
    mutes: Mutes | None = None,
) -> Dispatcher:
    """One worker per route, one transport per account; raises ValueError for a bad rule or
    template. `store` is started, and closed by the caller after `close_transports`.

    `token_providers`: account name -> OAuth2 token provider, for OAuth2 accounts."""
    providers = token_providers or {}
    routes = settings.effective_routes()
    try:
        matchers = compile_routes(routes)
    except RuleError as e:
        raise ValueError(str(e)) from None
    try:
        styles = route_styles(settings)
    except TemplateConfigError as e:
        raise ValueError(str(e)) from None
    instance = settings.instance()
    transports: dict[str, MailTransport] = {}
    locks: dict[str, asyncio.Lock] = {}
    workers: list[Worker] = []

    def transport_of(account: AccountSettings) -> MailTransport:
        """One transport and one lock per account, whoever sends through it."""
        if account.name not in transports:
            transports[account.name] = build_transport(
                settings.data_dir, account, providers.get(account.name)
            )
            locks[account.name] = asyncio.Lock()
        return transports[account.name]

    for route, matcher in zip(routes, matchers, strict=True):
        account = settings.account(route.account)
        target = RouteTarget(
            account.name,
            transport_of(account),
            envelope_for(account, route.to, route.cc, route.bcc),
            locks[account.name],
            styles[route.name],
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
                instance=instance,
                mutes=mutes,
            )
        )
    if settings.smtp_relay.listen:
        account = settings.relay_account()
        workers.append(
            RelayWorker(
                account,
                transport_of(account),
                locks[account.name],
                spool,
                metrics,
                rewrite_from=settings.smtp_relay.rewrite_from,
                retry_base_s=settings.spool.retry_base_s,
                retry_max_s=settings.spool.retry_max_s,
            )
        )
    return Dispatcher(settings, workers, transports, store, locks, cluster=cluster)
