"""Alarm state and the one decision that matters: should this record be mailed now, and why.

An alarm is keyed by (device, code, source). innovaphone devices re-send an active alarm about
every 30 minutes and queue records while we are unreachable, so repeats and late deliveries are
normal: only transitions are news.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from notifier.records import Kind, Record, Severity
from notifier.spool.state import AlarmState, Key


class Reason(enum.StrEnum):
    """Why a record was (or was not) mailed; logged with every decision and counted."""

    NEW_ALARM = "new_alarm"  # first set of an alarm: mail
    REPEAT_SUPPRESSED = "repeat_suppressed"  # re-sent while active, repeat interval not over
    REPEAT_DUE = "repeat_due"  # still active after the repeat interval: remind
    CLEARED = "cleared"  # clear of an active alarm: mail with how long it was active
    CLEAR_UNKNOWN = "clear_unknown"  # clear for an alarm never seen (or forgotten): mail
    CLEAR_DUPLICATE = "clear_duplicate"  # clear repeated after the alarm was already cleared
    LATE_SET = "late_set"  # a set older than the clear we already have: the device's queue
    STALE_CLEAR = "stale_clear"  # a clear older than a set seen since: the alarm is active again
    EVENT = "event"  # one-shot event: mail
    LOG = "log"  # log line on a route that mails logs: mail
    # A silence or maintenance window mutes it (see dispatch/control.py): not mailed; an alarm
    # set keeps the mute in its state, so its end is mailed if it is still active then.
    SILENCED = "silenced"
    SILENCE_ENDED = "silence_ended"  # muted set still active when its silence ended: mail now
    # Clear of an alarm whose set was muted and never mailed: nobody was told it is down.
    SILENCED_CLEAR = "silenced_clear"

    @property
    def notifies(self) -> bool:
        return self not in _SILENT


_SILENT = frozenset(
    {
        Reason.REPEAT_SUPPRESSED,
        Reason.CLEAR_DUPLICATE,
        Reason.LATE_SET,
        Reason.STALE_CLEAR,
        Reason.SILENCED,
        Reason.SILENCED_CLEAR,
    }
)


class ForgetReason(enum.StrEnum):
    """Why an alarm state was forgotten; counted per route."""

    EXPIRED = "expired"  # cleared and not seen for FORGET_CLEARED_AFTER_S
    BOUND_CLEARED = "bound_cleared"  # over max_alarm_states: the oldest cleared go first
    # Over the bound with only active alarms left: the least recently seen go, and their clear
    # will be mailed as clear_unknown.
    BOUND_ACTIVE = "bound_active"


def to_forget(
    states: Mapping[Key, AlarmState], forget_before: float, max_states: int
) -> dict[Key, ForgetReason]:
    """Which states to forget and why; pure.

    Cleared states last seen before `forget_before` expire. If more than `max_states` remain,
    the oldest (by `last_seen`) cleared ones go, then the oldest active ones: the bound holds
    whatever devices send, since alarm keys come from the network.
    """
    out = {k: ForgetReason.EXPIRED for k, s in states.items() if _expired(s, forget_before)}
    over = len(states) - len(out) - max_states
    if over > 0:
        kept = (s for k, s in states.items() if k not in out)
        for s in heapq.nsmallest(over, kept, key=lambda s: (s.active, s.last_seen)):
            out[s.key] = ForgetReason.BOUND_ACTIVE if s.active else ForgetReason.BOUND_CLEARED
    return out


def _expired(state: AlarmState, forget_before: float) -> bool:
    return not state.active and state.last_seen < forget_before


@dataclass(frozen=True, slots=True)
class Decision:
    reason: Reason
    state: AlarmState | None  # the state to keep after this record (None: nothing to keep)
    active_since: float | None = None  # for clears and reminders: when the alarm was set
    repeat_count: int = 0
    set_severity: Severity | None = None  # for clears: the severity the alarm was set with
    set_message_id: str = ""  # for clears: the Message-ID of the mail that reported the set

    @property
    def notify(self) -> bool:
        return self.reason.notifies


def decide(
    prev: AlarmState | None, record: Record, now: float, repeat_interval_s: float
) -> Decision:
    """Decide what `record` means given the alarm's previous state; pure.

    `now` is when a mail would go out; `repeat_interval_s` of 0 disables reminders.
    """
    if record.kind is Kind.EVENT:
        return Decision(Reason.EVENT, prev)
    if record.kind is Kind.LOG:
        return Decision(Reason.LOG, prev)
    at = record.time
    device, code, source = record.alarm_key
    if record.kind is Kind.ALARM:
        if prev is None or not prev.active:
            if prev is not None and prev.cleared_at is not None and at < prev.cleared_at:
                # Set older than the clear we already mailed: delivered late from a device queue.
                return Decision(Reason.LATE_SET, prev)
            state = AlarmState(device, code, source, True, at, at, 1, now, severity=record.severity)
            return Decision(Reason.NEW_ALARM, state, active_since=at, repeat_count=1)
        seen = replace(prev, last_seen=max(prev.last_seen, at), count=prev.count + 1)
        if repeat_interval_s > 0 and now - prev.last_notified >= repeat_interval_s:
            return Decision(
                Reason.REPEAT_DUE,
                replace(seen, last_notified=now),
                active_since=prev.first_set,
                repeat_count=seen.count,
            )
        return Decision(
            Reason.REPEAT_SUPPRESSED, seen, active_since=prev.first_set, repeat_count=seen.count
        )
    # Kind.CLEAR
    if prev is None:
        state = AlarmState(device, code, source, False, at, at, 0, now, cleared_at=at)
        return Decision(Reason.CLEAR_UNKNOWN, state)
    if not prev.active:
        return Decision(Reason.CLEAR_DUPLICATE, replace(prev, last_seen=max(prev.last_seen, at)))
    if at < prev.last_seen:
        # A clear from before the latest set (retried after a failed mail, or queued on the
        # device): the alarm came back since, so it stays active.
        return Decision(Reason.STALE_CLEAR, prev, active_since=prev.first_set)
    state = replace(prev, active=False, last_seen=at, cleared_at=at, last_notified=now)
    return Decision(
        Reason.CLEARED,
        state,
        active_since=prev.first_set,
        repeat_count=prev.count,
        set_severity=prev.severity,
        set_message_id=prev.message_id,
    )


def threaded(
    states: Mapping[Key, AlarmState], reported: Iterable[Key], message_id: str
) -> dict[Key, AlarmState]:
    """The states of the alarms whose set a mail `message_id` reported, now remembering that
    mail (their clear will reply to it); pure. An alarm that cleared meanwhile, or whose set
    mail is known already, is left out."""
    out = {}
    for key in reported:
        state = states.get(key)
        if state is not None and state.active and not state.message_id:
            out[key] = replace(state, message_id=message_id)
    return out
