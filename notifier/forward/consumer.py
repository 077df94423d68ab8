"""One spool consumer per forward: lease, skip what is not wanted, send, then ack.

Like a route's worker: each forward has its own consumer name (``forward:NAME``), backoff, dead
letters and metrics, and runs in its own task, so a target that is down holds back nothing but
its own records. A record is acknowledged only after its target took it; a failed batch comes
back through the spool's backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from notifier.backoff import Backoff
from notifier.config import ForwardSettings, Settings
from notifier.dispatch.mutes import Mutes
from notifier.dispatch.rules import Matcher, RuleError, compile_match
from notifier.forward.encode import passed_through
from notifier.forward.errors import ForwardError
from notifier.log import get_logger
from notifier.metrics import Metrics, Reading, health_readings
from notifier.records import Kind, Record
from notifier.spool.base import Lease, Spool
from notifier.spool.cluster import Cluster, owned

log = get_logger("notifier.forward")

# A batch that failed this often for a reason that is not the target (a bug) is dead-lettered.
UNEXPECTED_FAILURES_BEFORE_DEAD = 8

# Records per lease. A syslog batch is one write (measured: 1000 a lease forwards over twice
# as fast as 200, bench/forward.py); HTTP sends a request per record, each up to timeout_s.
SYSLOG_BATCH = 1000
HTTP_BATCH = 20


class Sender(Protocol):
    @property
    def endpoint(self) -> str: ...

    async def send(self, records: Sequence[Record]) -> None: ...

    async def close(self) -> None: ...


def consumer_name(forward: ForwardSettings) -> str:
    return f"forward:{forward.name}"


def forward_interest(settings: Settings) -> dict[str, list[Kind]]:
    """Consumer name → the kinds it takes, for opening the spool (an empty list: every kind).

    A forward that wants log lines makes them wanted: the memory tier holds them for it."""
    return {consumer_name(f): f.match.kinds or list(Kind) for f in settings.effective_forwards()}


def forward_wants(settings: Settings) -> list[Callable[[Record], bool]]:
    """Each forward's match, for the spool to ask when it takes a record (`anyone_wants`).
    (Loop markers and silences are checked when the record is sent: they change.)"""
    return [
        compile_match(f.match, f"forwards.{i}.match").matches
        for i, f in enumerate(settings.effective_forwards())
    ]


def instance_name(settings: Settings) -> str:
    """This notifier's name in hop markers (`Settings.instance`)."""
    return settings.instance()


@dataclass(frozen=True)
class Skip:
    """Why a leased record is acknowledged without being sent."""

    unmatched: list[str] = field(default_factory=list)
    looped: list[str] = field(default_factory=list)
    muted: list[str] = field(default_factory=list)  # silenced (with respect_silences)


def select(
    leases: Sequence[Lease],
    matcher: Matcher,
    instance: str,
    muted: Callable[[Record], bool] = lambda record: False,
) -> tuple[list[Lease], Skip]:
    """(the leases to send, the ones to skip); pure. What passed through `instance` before is
    not forwarded again: the hop marker breaks forwarding loops. `muted`: what a silence or
    maintenance window mutes (only for a forward with `respect_silences`)."""
    send: list[Lease] = []
    skip = Skip()
    for lease in leases:
        if not matcher.matches(lease.record):
            skip.unmatched.append(lease.record.id)
        elif passed_through(lease.record, instance):
            skip.looped.append(lease.record.id)
        elif muted(lease.record):
            skip.muted.append(lease.record.id)
        else:
            send.append(lease)
    return send, skip


class ForwardWorker:
    """Runs one forward until `stop()`."""

    def __init__(
        self,
        forward: ForwardSettings,
        matcher: Matcher,
        sender: Sender,
        spool: Spool,
        metrics: Metrics,
        *,
        instance: str,
        retry_base_s: float = 5.0,
        retry_max_s: float = 900.0,
        batch: int = 0,
        mutes: Mutes | None = None,
    ) -> None:
        self.forward = forward
        self.consumer = consumer_name(forward)
        self._matcher = matcher
        self._sender = sender
        self._spool = spool
        self._metrics = metrics
        self._instance = instance
        self._retry = Backoff(base_s=retry_base_s, cap_s=retry_max_s)
        http = forward.kind == "http"
        self._batch = batch or (HTTP_BATCH if http else SYSLOG_BATCH)
        # Leases must outlive the slowest batch that still succeeds: a timeout per request.
        self._visibility = 60.0 + 2 * forward.timeout_s * (self._batch if http else 1)
        self._stopping = asyncio.Event()
        self._mutes = mutes if forward.respect_silences else None
        self.last_error = ""
        # For the status page and /metrics: records sent, failed attempts, when.
        self.sent = 0
        self.failures = 0
        self.last_success: float | None = None
        self.failing_since: float | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug must not stop the forward for good
                log.exception("forward step failed", forward=self.forward.name, error=str(e))
                await asyncio.sleep(1.0)

    async def step(self) -> None:
        """One lease-send-ack round; sleeps until records come when there are none."""
        leases = await self._spool.lease(self.consumer, self._batch, self._visibility)
        if not leases:
            await self._spool.wait(1.0, self.consumer)
            return
        mutes = self._mutes
        if mutes is not None and mutes.due():
            await mutes.refresh()
        now = time.time()
        send, skip = select(
            leases,
            self._matcher,
            self._instance,
            lambda r: mutes is not None and mutes.of(r, self.consumer, now) is not None,
        )
        if skip.muted:
            log.info(
                "not forwarded: silenced",
                forward=self.forward.name,
                records=len(skip.muted),
            )
        if skip.looped:
            log.info(
                "not forwarded again: passed through this instance before",
                forward=self.forward.name,
                records=len(skip.looped),
                instance=self._instance,
            )
        if skip.unmatched or skip.looped or skip.muted:
            await self._spool.ack(self.consumer, skip.unmatched + skip.looped + skip.muted)
        if send:
            await self._deliver(send)

    async def _deliver(self, leases: list[Lease]) -> None:
        records = [lease.record for lease in leases]
        attempts = max(lease.attempts for lease in leases)
        try:
            await self._sender.send(records)
        except ForwardError as e:
            await self._failed(leases, e, attempts)
            return
        except Exception as e:
            log.exception("forward send failed", forward=self.forward.name, error=str(e))
            error = ForwardError(
                f"{type(e).__name__}: {e}",
                permanent=attempts >= UNEXPECTED_FAILURES_BEFORE_DEAD,
            )
            await self._failed(leases, error, attempts)
            return
        self.last_error = ""
        self._count_sent(len(records))
        self.failing_since = None
        await self._spool.ack(self.consumer, [r.id for r in records])

    async def _failed(self, leases: list[Lease], error: ForwardError, attempts: int) -> None:
        if error.sent:
            done = leases[: error.sent]
            self._count_sent(len(done))
            await self._spool.ack(self.consumer, [lease.record.id for lease in done])
        ids = [lease.record.id for lease in leases[error.sent :]]
        self.last_error = str(error)
        self.failures += 1
        self.failing_since = self.failing_since or time.time()
        self._metrics.forward_failures.labels(self.forward.name).inc()
        if error.permanent:
            log.error(
                "forward refused for good: records dead-lettered",
                forward=self.forward.name,
                records=len(ids),
                error=str(error),
                hint="see `notifier spool list --state dead`",
            )
            await self._spool.nack(self.consumer, ids, error=str(error), retry_in_s=None)
            return
        # `attempts` counts the earlier leases (0 on the first try): the first retry is
        # attempt 0 of the backoff, as for a route's mail (dispatch/worker.py, retry_in_s).
        delay = self._retry.delay(attempts)
        log.warning(
            "forward not sent: will retry",
            forward=self.forward.name,
            records=len(ids),
            error=str(error),
            retry_in_s=round(delay, 1),
        )
        await self._spool.nack(self.consumer, ids, error=str(error), retry_in_s=delay)

    def _count_sent(self, n: int) -> None:
        self.sent += n
        self.last_success = time.time()
        self._metrics.forward_sent.labels(self.forward.name).inc(n)

    async def close(self) -> None:
        await self._sender.close()

    def status(self) -> dict[str, Any]:
        """For the status page and /metrics; never a secret (the endpoint has no password)."""
        return {
            "forward": self.forward.name,
            "consumer": self.consumer,
            "kind": self.forward.kind,
            "endpoint": self._sender.endpoint,
            "state": "failing" if self.failing_since else ("ok" if self.last_success else "idle"),
            "sent": self.sent,
            "failures": self.failures,
            "last_success": self.last_success,
            "failing_since": self.failing_since,
            "last_error": self.last_error,
        }


def build_sender(forward: ForwardSettings, instance: str) -> Sender:
    """The sender for a forward's kind; raises ValueError for unusable TLS files."""
    if forward.kind == "http":
        from notifier.forward.http import HttpSender

        return HttpSender(forward, instance)
    from notifier.forward.syslog import SyslogSender

    return SyslogSender(forward, instance)


@dataclass
class Forwards:
    """The running forward workers."""

    workers: list[ForwardWorker]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cluster: Cluster | None = None  # None: every forward runs (one instance)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(owned(self.cluster, w, self._stopping)(), name=w.consumer)
            for w in self.workers
        ]

    async def stop(self) -> None:
        """Stop leasing and close the connections; what was not acked stays spooled."""
        self._stopping.set()
        for w in self.workers:
            w.stop()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=5)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for w in self.workers:
            await w.close()

    def status(self) -> list[dict[str, Any]]:
        return [w.status() for w in self.workers]

    def readings(self) -> list[Reading]:
        """The /metrics gauges of each forward (its counters are counted as they happen)."""
        readings = []
        for row in self.status():
            readings += health_readings(
                "notifier_forward",
                "forward",
                {"forward": row["forward"], "kind": row["kind"]},
                row["failing_since"] is not None,
                [
                    ("last_success", row["last_success"], "Last batch the forward's target took"),
                    (
                        "failing_since",
                        row["failing_since"],
                        "First failure since the last one taken",
                    ),
                ],
            )
        return readings


def forward_problems(settings: Settings) -> list[str]:
    """One line per forward whose match rule or TLS files cannot be used ([] when all can),
    for `check-config` and `run` before anything starts."""
    from notifier.forward.tls import client_context

    problems = []
    for i, forward in enumerate(settings.effective_forwards()):
        try:
            compile_match(forward.match, f"forwards.{i}.match")
        except RuleError as e:
            problems.append(str(e))
        tls = forward.protocol == "tls" if forward.kind == "syslog" else forward.url[:6] == "https:"
        if tls:
            try:
                client_context(forward)
            except ValueError as e:
                problems.append(str(e))
    return problems


def start_forwards(
    settings: Settings,
    spool: Spool,
    metrics: Metrics,
    cluster: Cluster | None = None,
    mutes: Mutes | None = None,
) -> Forwards:
    """One running worker per configured forward; raises ValueError for a bad rule or TLS file."""
    instance = instance_name(settings)
    workers = []
    for i, forward in enumerate(settings.effective_forwards()):
        try:
            matcher = compile_match(forward.match, f"forwards.{i}.match")
        except RuleError as e:
            raise ValueError(str(e)) from None
        workers.append(
            ForwardWorker(
                forward,
                matcher,
                build_sender(forward, instance),
                spool,
                metrics,
                instance=instance,
                retry_base_s=settings.spool.retry_base_s,
                retry_max_s=settings.spool.retry_max_s,
                mutes=mutes,
            )
        )
    forwards = Forwards(workers, cluster=cluster)
    forwards.start()
    return forwards
