"""One worker per route: lease records, decide, group into mails, send, then ack.

A record is acknowledged to the spool only after the mail that reports it was accepted (or it
was decided not to need one and that decision is stored), so a crash anywhere means redelivery,
never a lost alarm. Alarm state changes are kept in an overlay until the mail is accepted; a
failed mail drops the overlay and the records come back through the spool's backoff, to be
decided again from the stored state.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from notifier.backoff import Backoff
from notifier.config import RouteSettings
from notifier.dispatch.alarms import (
    Decision,
    ForgetReason,
    Reason,
    decide,
    threaded,
    to_forget,
)
from notifier.dispatch.control import (
    ack_of,
    acknowledged_text,
    alarm_record,
    apply_ack,
    apply_mute,
    silence_ended,
)
from notifier.dispatch.mutes import REFRESH_S, Mutes
from notifier.dispatch.rules import FirstMatch, Matcher
from notifier.log import RateLimiter, get_logger
from notifier.mail.compose import Envelope, MailItem, compose
from notifier.mail.compose import Reason as MailReason
from notifier.mail.style import MailStyle
from notifier.mail.transport import DeliveryError, MailTransport, Outcome
from notifier.metrics import Metrics
from notifier.records import Kind, Record
from notifier.spool.base import DropNotice, Lease, Spool, SpoolError
from notifier.spool.state import AlarmState, Key, StateStore

log = get_logger("notifier.dispatch")

_MAIL_REASON = {
    Reason.NEW_ALARM: MailReason.NEW,
    Reason.REPEAT_DUE: MailReason.REPEAT,
    Reason.CLEARED: MailReason.CLEAR,
    Reason.CLEAR_UNKNOWN: MailReason.CLEAR_UNKNOWN,
    Reason.EVENT: MailReason.EVENT,
    Reason.LOG: MailReason.LOG,
    Reason.SILENCE_ENDED: MailReason.SILENCE_ENDED,
}

# Order of records inside a digest: what needs action first.
_KIND_ORDER = {Kind.ALARM: 0, Kind.CLEAR: 1, Kind.EVENT: 2, Kind.LOG: 3}

# A group whose composing or sending raised this often is dead-lettered (a bug, not an outage).
UNEXPECTED_FAILURES_BEFORE_DEAD = 8

# Longest wait between retries while an account cannot send.
ACCOUNT_RETRY_MAX_S = 60.0

# How long cleared alarms are remembered (to recognise a repeated or late clear).
FORGET_CLEARED_AFTER_S = 7 * 24 * 3600.0

# How often a route forgets expired alarm states even when no record comes (wall-clock seconds);
# also how often state held in memory while the disk was full is written again.
SWEEP_INTERVAL_S = 60.0


class TokenBucket:
    """At most `per_minute` mails a minute, with a burst of the same size."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._capacity = float(per_minute)
        self._tokens = float(per_minute)
        self._clock = clock
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now

    def wait_s(self) -> float:
        """Seconds until one mail may go (0: now)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self._rate

    def take(self) -> None:
        self._refill()
        self._tokens -= 1


def flush_due(
    route: RouteSettings, first_at: float, last_at: float, last_mail_at: float, retry: bool = False
) -> float:
    """When a waiting group may go out (before the rate limit); pure.

    A `retry` (a group with records leased before) goes out at once: it waited for its group
    and then for its backoff already.

    The first record waits `group_wait_s` for others to join. While records keep coming, two
    mails of a route are at least `group_interval_s` apart (a storm becomes a few digests); once
    the route has been quiet for `group_wait_s` the rest goes out without waiting for the
    interval, so the tail of a storm is not held back for minutes.
    """
    if retry:
        return first_at
    after_interval = min(last_mail_at + route.group_interval_s, last_at + route.group_wait_s)
    return max(first_at + route.group_wait_s, after_interval)


async def keep_stepping(
    step: Callable[[], Awaitable[None]], stopping: asyncio.Event, **context: str
) -> None:
    """Run `step` until `stopping` is set. An exception is logged (with `context`) and the
    step runs again a second later: a bug must not stop mail for good. Logged at most a few
    times a minute: a step that fails each second (the spool's database is down) must not
    flood the log."""
    limiter = RateLimiter(burst=1, period_s=60.0)
    while not stopping.is_set():
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except SpoolError as e:
            # The storage failed (PostgreSQL down, disk gone): its message names it; a
            # traceback would add nothing.
            allowed, suppressed = limiter.allow("spool")
            if allowed:
                log.warning(
                    "dispatch paused: the spool failed",
                    error=str(e),
                    hint="dispatch resumes by itself once the spool answers again",
                    suppressed=suppressed,
                    **context,
                )
            await asyncio.sleep(1.0)
        except Exception as e:
            allowed, suppressed = limiter.allow("bug")
            if allowed:
                log.exception(
                    "dispatch step failed", error=str(e), suppressed=suppressed, **context
                )
            await asyncio.sleep(1.0)


def retry_in_s(error: DeliveryError, attempts: int, backoff: Backoff) -> float:
    """Seconds until a mail that failed temporarily (or for its account) is tried again.

    `attempts` counts the earlier leases of the failed records (0 on the first try), so the
    first retry is attempt 0 of the backoff.
    """
    delay = backoff.delay(attempts)
    if error.retry_after_s:
        # The API said when to come back (429, 503): sooner would only be refused again.
        delay = max(delay, error.retry_after_s)
    if error.account_error:
        # The account is broken (credentials, token, certificate), not the mail: keep it
        # spooled and look again often, so a fix (a new sign-in) takes effect within a minute.
        delay = min(delay, ACCOUNT_RETRY_MAX_S)
    return delay


@dataclass
class _Group:
    """Records waiting to go out in one mail, and records that only wait to be acked."""

    items: list[MailItem] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)  # decided, no mail: ack with the group
    attempts: int = 0
    retry: bool = False  # a mail of these records failed before: no group wait again
    first_at: float = 0.0  # monotonic time the first mail item joined
    last_at: float = 0.0  # monotonic time the latest mail item joined

    # Mail items made from alarm state, not from a spooled record (a silence that ended): their
    # ids are nobody's lease, so they are never acked or nacked.
    synthetic: set[str] = field(default_factory=set)

    @property
    def ids(self) -> list[str]:
        return [i.record.id for i in self.items if i.record.id not in self.synthetic] + self.silent


@dataclass(frozen=True)
class RouteTarget:
    """Where a route's mails go: the account's transport and the envelope."""

    account: str
    transport: MailTransport
    envelope: Envelope
    lock: asyncio.Lock  # one session at a time per account transport
    style: MailStyle = field(default_factory=MailStyle)  # the route's templates, time zone


class RouteWorker:
    """Runs one route until `stop()`."""

    def __init__(
        self,
        route: RouteSettings,
        matcher: Matcher | FirstMatch,
        spool: Spool,
        store: StateStore,
        target: RouteTarget,
        metrics: Metrics,
        *,
        retry_base_s: float = 5.0,
        retry_max_s: float = 900.0,
        instance: str = "notifier",
        lease_batch: int = 1000,
        clock: Callable[[], float] = time.time,
        mutes: Mutes | None = None,
    ) -> None:
        self.route = route
        self.consumer = f"route:{route.name}"
        self._matcher = matcher
        self._spool = spool
        self._store = store
        self._target = target
        self._metrics = metrics
        self._retry = Backoff(base_s=retry_base_s, cap_s=retry_max_s)
        self._instance = instance
        self._batch = lease_batch
        self._clock = clock  # unix time: alarm decisions and forgetting
        self._states: dict[Key, AlarmState] = {}
        self._loaded = False  # the stored states are read by the first step (see `_resume`)
        self._swept_at = -1e18  # the first step forgets what a lowered bound or age says
        self._forget_log = RateLimiter(burst=1, period_s=60.0)
        self._overlay: dict[Key, AlarmState] = {}
        self._group = _Group()
        self._bucket = TokenBucket(route.max_mails_per_minute)
        self._last_mail_at = -1e18  # monotonic
        self._pending_drops: DropNotice | None = None
        self._stopping = asyncio.Event()
        # Leases must outlive the longest wait a record can spend in a group.
        self._visibility = max(60.0, 2 * (route.group_wait_s + route.group_interval_s) + 60)
        self._extended_at = 0.0
        self._extend_task: asyncio.Future[None] | None = None
        # Records of a mail that went out but whose ack failed (the spool's database hiccuped):
        # acked before anything else, else the records come back when their lease ends and
        # the same mail goes out again.
        self._unacked: list[str] = []
        self.last_error = ""
        # What the status page tells during an outage (unix times; None: not so far).
        self._failing_since: float | None = None
        self._last_success: float | None = None
        self._next_retry_at: float | None = None
        self._retrying: dict[str, Record] = {}  # records of the failed mail, by id
        # Silences, maintenance windows and acknowledgements, read from the store now and then.
        self._mutes = mutes or Mutes(store, clock=clock)
        self._control_at = -1e18  # when this route last looked for alarms whose silence ended

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Dispatch until `stop()`. Started again each time this instance gains the route
        (several instances: `notifier.spool.cluster.while_owned`), so it starts from the
        stored state."""
        self._resume()
        await keep_stepping(self._step, self._stopping, route=self.route.name)
        if self._unacked:
            await self._commit_sent()
        if self._group.items:
            # Stopping: send what waits now rather than after the restart; if this fails or is
            # cut short, the records are still leased, not acked, and come back on the next start.
            await self._flush()

    def _resume(self) -> None:
        """The start path: the first step loads the stored alarm state again (another instance
        may have changed it while this one did not own the route); what this one held in
        memory is not its own anymore (its leases went to the owner that came between)."""
        self._loaded = False
        self._mutes.stale()  # silences and acks: read again at once, too
        self._overlay.clear()
        self._group = _Group()
        self._retrying.clear()
        # Leases of an earlier ownership went to the owner that came between.
        self._unacked = []

    async def _step(self) -> None:
        if self._unacked:
            await self._commit_sent()
        if not self._loaded:
            # Before the first lease: a record decided without its alarm's stored state
            # would mail a known alarm as new. A failure is logged and tried again.
            self._states = await self._store.load_alarms(self.consumer)
            self._loaded = True
            self._metrics.alarm_states.labels(self.route.name).set(len(self._states))
        if self._clock() - self._swept_at >= SWEEP_INTERVAL_S:
            await self._save_states({})
        looked = self._control_at
        if self._mutes.due() or self._mutes.read_at > looked or self._clock() - looked >= REFRESH_S:
            await self._refresh_control()
        leases = await self._spool.lease(self.consumer, self._batch, self._visibility)
        if leases:
            await self._take(leases)
        now = time.monotonic()
        if self._group.items:
            due = self._flush_due_in(now)
            if due <= 0:
                await self._flush()
                return
            self._keep_leases(now)
            if not leases:
                await self._sleep(min(due, 1.0))
        elif self._group.silent:
            await self._commit(self._group.silent)
            self._group = _Group()
        elif not leases:
            await self._sleep(1.0)

    async def _sleep(self, timeout: float) -> None:
        await self._spool.wait(timeout, self.consumer)

    def _flush_due_in(self, now: float) -> float:
        """Seconds until the waiting group may go out; see `flush_due`."""
        g = self._group
        due = flush_due(self.route, g.first_at, g.last_at, self._last_mail_at, retry=g.retry)
        return max(due - now, self._bucket.wait_s())

    def _keep_leases(self, now: float) -> None:
        if now - self._extended_at > self._visibility / 3:
            self._extended_at = now
            self._extend_task = asyncio.ensure_future(
                self._spool.extend(self.consumer, self._group.ids, self._visibility)
            )
            self._extend_task.add_done_callback(self._extend_done)

    def _extend_done(self, task: asyncio.Future[None]) -> None:
        # Nobody awaits the extension (the attribute only keeps it alive): say when it failed.
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning(
                "lease extension failed",
                route=self.route.name,
                error=str(error) or type(error).__name__,
                hint="the waiting records may be leased again when their lease ends and be "
                "mailed twice; check the spool's storage",
            )

    async def _take(self, leases: list[Lease]) -> None:
        unmatched: list[str] = []
        now = self._clock()
        for lease in leases:
            record = lease.record
            if not self._matcher.matches(record):
                unmatched.append(record.id)
                continue
            decision, acknowledged = self._decide(record, now)
            # A mail that failed is tried again; a record leased again after a crash (or an
            # ownership change) was never mailed by this process: it is decided and grouped anew.
            failed_before = bool(lease.last_error)
            self._decided(record, decision, lease.attempts if failed_before else 0)
            self._group.attempts = max(self._group.attempts, lease.attempts)
            self._group.retry = self._group.retry or failed_before
            if decision.notify:
                self._enqueue(record, decision, acknowledged)
            else:
                self._group.silent.append(record.id)
        if unmatched:
            await self._spool.ack(self.consumer, unmatched)

    def _decided(self, record: Record, decision: Decision, attempts: int = 0) -> None:
        """Count and log a decision. A record leased before was decided then (its mail failed,
        or the process stopped before the ack): deciding it again is a retry, not news."""
        if attempts == 0:
            self._metrics.dispatch_decisions.labels(decision.reason.value).inc()
        log.info(
            "decision" if attempts == 0 else "retry",
            route=self.route.name,
            reason=decision.reason.value,
            record=record.id,
            kind=record.kind.value,
            device=record.device,
            code=record.code,
            source=record.source,
            **({"attempt": attempts + 1} if attempts else {}),
        )

    def _enqueue(self, record: Record, decision: Decision, acknowledged: str = "") -> None:
        """Add a record the decision mails to the waiting group."""
        self._group.last_at = time.monotonic()
        if not self._group.items:
            self._group.first_at = self._group.last_at
        self._group.items.append(
            MailItem(
                record,
                _MAIL_REASON[decision.reason],
                active_since=decision.active_since,
                # The first set needs no count; reminders and clears say how often the device
                # sent it while active.
                repeat_count=0 if decision.reason is Reason.NEW_ALARM else decision.repeat_count,
                set_severity=decision.set_severity,
                thread_id=decision.set_message_id,
                acknowledged=acknowledged,
            )
        )

    def _decide(self, record: Record, now: float) -> tuple[Decision, str]:
        """The decision on `record` with silences, maintenance windows and acknowledgements
        applied, and for the clear of an acknowledged alarm who acknowledged it."""
        mute = self._mutes.of(record, self.route.name, now)
        if record.kind not in (Kind.ALARM, Kind.CLEAR):
            decision = decide(None, record, now, self.route.repeat_interval_s)
            return apply_mute(decision, None, mute, now), ""
        key = record.alarm_key
        prev = self._overlay.get(key, self._states.get(key))
        decision = decide(prev, record, now, self.route.repeat_interval_s)
        decision = apply_mute(decision, prev, mute, now)
        ack = ack_of(self._mutes.acks, prev)
        decision = apply_ack(decision, prev, ack)
        if decision.state is not None:
            self._overlay[key] = decision.state
        if decision.reason is Reason.CLEARED and ack is not None:
            return decision, acknowledged_text(ack, self._target.style.zone)
        return decision, ""

    async def _refresh_control(self) -> None:
        """Read the silences and acknowledgements again, and mail the alarms whose silence
        (or maintenance window) ended while they are still active."""
        if self._mutes.due():
            await self._mutes.refresh()  # else another consumer of this process just did
        now = self._clock()
        self._control_at = now
        if self._next_retry_at is not None and now < self._next_retry_at:
            return  # the mail is failing: the next refresh after the backoff mails them
        # Only alarms whose own mute is over: the silence that muted one may select on text or
        # receiver, which the state does not keep, so it is asked by name, not by matching.
        on = self._mutes.on(now)
        states = self._states | self._overlay
        over = [s for s in states.values() if s.silenced and s.silenced not in on]
        mutes = self._mutes
        for decision in silence_ended(over, self.route.name, mutes.silences, mutes.windows, now):
            assert decision.state is not None
            state = decision.state
            record = alarm_record(state)
            self._decided(record, decision)
            self._overlay[state.key] = state
            self._group.synthetic.add(record.id)
            self._enqueue(record, decision)

    async def _flush(self) -> None:
        if self._extend_task is not None and not self._extend_task.done():
            # The extension updates the rows the ack deletes: one after the other, never
            # two transactions locking them in different orders.
            await asyncio.wait([self._extend_task])
        group, self._group = self._group, _Group()
        notice = self._spool.take_drop_notice(self.consumer)
        if notice is not None:
            self._pending_drops = _merge_drops(self._pending_drops, notice)
        items = sorted(
            group.items,
            key=lambda i: (_KIND_ORDER[i.record.kind], -i.record.severity.rank, i.record.time),
        )
        self._bucket.take()
        self._last_mail_at = time.monotonic()
        if group.retry:
            self._metrics.mail_retries.labels(self.route.name).inc()
        step = "compose"
        try:
            message = compose(
                items,
                self._target.envelope,
                max_shown=self.route.max_records_per_mail,
                dropped=self._pending_drops.counts if self._pending_drops else None,
                instance=self._instance,
                style=self._target.style,
            )
            step = "send"
            async with self._target.lock:
                (result,) = await self._target.transport.send([message])
        except Exception as e:
            # A bug, not the server: the records go back through the spool (never half-decided),
            # and a group that fails this way again and again is dead-lettered, not retried forever.
            log.exception("composing or sending failed", route=self.route.name, error=str(e))
            poisoned = group.attempts >= UNEXPECTED_FAILURES_BEFORE_DEAD
            result = DeliveryError(
                f"{type(e).__name__}: {e}",
                outcome=Outcome.PERMANENT if poisoned else Outcome.TEMPORARY,
                step=step,
            )
        if isinstance(result, DeliveryError):
            await self._failed(group, result)
            return
        self._pending_drops = None
        self.last_error = ""
        self._failing_since = self._next_retry_at = None
        self._last_success = self._clock()
        for item in items:
            self._retrying.pop(item.record.id, None)
        self._metrics.mails_sent.labels(self._target.account).inc()
        # The clears of the alarms this mail reported as new will reply to it.
        firsts = (MailReason.NEW, MailReason.SILENCE_ENDED)
        new = [i.record.alarm_key for i in items if i.reason in firsts]
        sent_as = result.message_id or str(message["Message-ID"])
        self._overlay |= threaded(self._overlay, new, sent_as)
        if result.refused:
            self._refused(result.refused)
        self._unacked = group.ids
        sent = {
            "route": self.route.name,
            "account": self._target.account,
            "message_id": sent_as,
            "records": len(items),
            "subject": str(message["Subject"]),
            "reply": result.reply,
        }
        try:
            await self._commit_sent()
        except BaseException:
            # Sent, not yet recorded: the next step records it (or, if this process ends
            # first, the records are mailed again: at least once).
            log.info("mail sent", **sent, recorded=False)
            raise
        log.info("mail sent", **sent, recorded=True)

    async def _commit_sent(self) -> None:
        """Record the mail that went out (alarm state, then ack); on failure this is the first
        thing the next step tries again."""
        await self._commit(self._unacked)
        self._unacked = []

    def _refused(self, refused: Mapping[str, tuple[int, str]]) -> None:
        """Some recipients were refused while others got the mail: say so loudly. The mail is
        not sent again (the others would get it twice); the status page shows the refusal."""
        detail = "; ".join(f"{addr}: {code} {reply}" for addr, (code, reply) in refused.items())
        self.last_error = f"recipients refused: {detail}"
        self._metrics.mail_failures.labels(self._target.account, "recipient_refused").inc(
            len(refused)
        )
        log.warning(
            "mail sent, but some recipients were refused",
            route=self.route.name,
            account=self._target.account,
            refused=detail,
            hint="check the addresses in the route's to/cc/bcc",
        )

    async def _commit(self, ids: list[str]) -> None:
        """Store the overlay, then ack: the order that makes a crash redeliver, not lose."""
        if self._overlay:
            await self._save_states(self._overlay)
            self._overlay.clear()
        await self._spool.ack(self.consumer, ids)

    async def _save_states(self, changed: dict[Key, AlarmState]) -> None:
        """Store `changed` and forget what age and `max_alarm_states` say, in memory and in
        the store alike (one transaction)."""
        now = self._clock()
        self._swept_at = now
        states = self._states | changed
        forget = to_forget(states, now - FORGET_CLEARED_AFTER_S, self.route.max_alarm_states)
        kept = [state for key, state in changed.items() if key not in forget]
        await self._store.save_alarms(self.consumer, kept, forget)
        for key in forget:
            del states[key]
        self._states = states
        self._metrics.alarm_states.labels(self.route.name).set(len(self._states))
        if forget:
            self._forgotten(Counter(forget.values()))

    def _forgotten(self, reasons: Counter[ForgetReason]) -> None:
        for reason, n in reasons.items():
            self._metrics.alarm_states_forgotten.labels(self.route.name, reason.value).inc(n)
        counts = {reason.value: n for reason, n in reasons.items()}
        active = bool(reasons[ForgetReason.BOUND_ACTIVE])
        allowed, suppressed = self._forget_log.allow("active" if active else "cleared")
        if not allowed:
            return
        if active:
            log.warning(
                "alarm states over max_alarm_states: forgot active alarms",
                route=self.route.name,
                forgotten=counts,
                suppressed=suppressed,
                max_alarm_states=self.route.max_alarm_states,
                hint="their clears will be mailed as clear_unknown; raise max_alarm_states "
                "if this many alarms are really active",
            )
        else:
            log.info(
                "alarm states forgotten",
                route=self.route.name,
                forgotten=counts,
                suppressed=suppressed,
            )

    async def _failed(self, group: _Group, error: DeliveryError) -> None:
        self._overlay.clear()
        self.last_error = str(error)
        if self._failing_since is None:
            self._failing_since = self._clock()
        self._retrying.update(
            (i.record.id, i.record) for i in group.items if i.record.id not in group.synthetic
        )
        outcome = error.outcome.value
        self._metrics.mail_failures.labels(self._target.account, outcome).inc()
        ids = group.ids
        if error.permanent:
            log.error(
                "mail refused for good: records dead-lettered",
                route=self.route.name,
                account=self._target.account,
                records=len(ids),
                error=str(error),
                hint="see `notifier spool list --state dead`",
            )
            await self._spool.nack(self.consumer, ids, error=str(error), retry_in_s=None)
            for i in group.items:
                self._retrying.pop(i.record.id, None)
            return
        delay = retry_in_s(error, group.attempts, self._retry)
        log.warning(
            "mail not sent: will retry",
            route=self.route.name,
            account=self._target.account,
            records=len(ids),
            error=str(error),
            retry_in_s=round(delay, 1),
            outcome=outcome,
        )
        self._next_retry_at = self._clock() + delay
        await self._spool.nack(self.consumer, ids, error=str(error), retry_in_s=delay)

    @property
    def account(self) -> str:
        return self._target.account

    async def retry_now(self) -> None:
        """Records waiting for a retry of this route are due now."""
        count = await self._spool.retry_now(self.consumer)
        if count:
            log.info("retrying now", route=self.route.name, account=self.account, records=count)

    def status(self) -> dict[str, Any]:
        """What the status page shows; during an outage the mails waiting for their retry and
        the alarms in them count, so the page never reads "nothing waiting" while they wait."""
        waiting = {i.record.id for i in self._group.items} | self._retrying.keys()
        active = {k for k, s in self._states.items() if s.active}
        active |= {r.alarm_key for r in self._retrying.values() if r.kind is Kind.ALARM}
        return {
            "route": self.route.name,
            "account": self._target.account,
            "waiting": len(waiting),
            "active_alarms": len(active),
            "last_error": self.last_error,
            "failing_since": self._failing_since,
            "last_success": self._last_success,
            "next_retry_at": self._next_retry_at,
        }


def _merge_drops(old: DropNotice | None, new: DropNotice) -> DropNotice:
    if old is None:
        return new
    counts = Counter(old.counts)
    counts.update(new.counts)
    return DropNotice(dict(counts), min(old.since, new.since))
