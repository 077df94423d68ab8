"""Silences and maintenance windows: is this record muted now, and by what? Pure decisions.

A silence (stored through `notifier/spool/state.py`) and a maintenance window (`[[maintenance]]`
in the config) select records with the route `match` keys plus `routes` (route names) and
`min_severity`; both need at least one matcher besides `kinds`, so that nothing mutes everything
by accident. A window starts each time its cron `schedule` fires in its `timezone` and lasts
`duration` of real time; across a DST switch a start in the skipped hour fires when the clocks
jump (02:00 -> 03:00), and a start in the repeated hour fires once, at its first occurrence.

What muting does to the alarm decision (`apply_mute`): a muted set is `silenced` and the state
keeps the mute, so when the mute ends with the alarm still active it is mailed
(`silence_ended`, found by `silence_ended`); the clear of a set that was never mailed is
`silenced_clear`; a clear of a set that was mailed is mailed, muted or not.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter
from pydantic import ValidationError

from notifier.config import MaintenanceSettings, Settings, SilenceMatchSettings, check_timezone
from notifier.dispatch.alarms import Decision, Reason
from notifier.dispatch.errors import DispatchError
from notifier.dispatch.rules import Matcher, RuleError, compile_match
from notifier.duration import DurationError, parse_duration
from notifier.records import Kind, Record, Severity
from notifier.spool.state import AlarmState, Silence

# The matcher keys a silence takes, each a list of patterns (`min_severity`, `text`: one value).
MATCHER_KEYS = tuple(k for k in SilenceMatchSettings.model_fields if k != "labels")
# Keys that select something: a silence or window needs one of these, `kinds` alone mutes all.
_SELECTING = tuple(k for k in SilenceMatchSettings.model_fields if k != "kinds")
# A naive wall-clock time and the instant it names differ by the zone's offset, which changes by
# at most this much within one zone (DST: 1 h, a few zones 2 h): a bound for the search below.
_MAX_OFFSET_CHANGE = timedelta(hours=3)


class ControlError(DispatchError):
    """A silence or maintenance window that cannot be used; the message names the key."""


class MuteKind(enum.StrEnum):
    SILENCE = "silence"
    MAINTENANCE = "maintenance"


@dataclass(frozen=True, slots=True)
class Mute:
    """Why a record is muted: the silence (id) or maintenance window (name), and until when."""

    kind: MuteKind
    name: str  # what `AlarmState.silenced` keeps
    until: float  # unix seconds


class Muting(Protocol):
    """A silence or a maintenance window, compiled."""

    def end(self, now: float) -> float | None:
        """When it ends, if it is on at `now`; else None."""

    def mutes(self, record: Record, route: str, now: float) -> Mute | None:
        """The mute it puts on `record` (sent on `route`) at `now`; None if it does not."""


@dataclass(frozen=True, slots=True)
class Scope:
    """The compiled matchers of a silence or window."""

    matcher: Matcher
    routes: frozenset[str]  # empty: every route

    def matches(self, record: Record, route: str) -> bool:
        return (not self.routes or route in self.routes) and self.matcher.matches(record)


@dataclass(frozen=True, slots=True)
class ActiveSilence:
    """A stored silence with its matchers compiled (`compile_silence`)."""

    silence: Silence
    scope: Scope

    def end(self, now: float) -> float | None:
        """When this silence ends, if it is on at `now`; else None."""
        s = self.silence
        if now < s.starts_at or s.ended(now):
            return None
        return s.ends_at if s.expired_at is None else min(s.ends_at, s.expired_at)

    def mutes(self, record: Record, route: str, now: float) -> Mute | None:
        end = self.end(now)
        if end is None or not self.scope.matches(record, route):
            return None
        return Mute(MuteKind.SILENCE, self.silence.id, end)


@dataclass(frozen=True, slots=True)
class Window:
    """A compiled `[[maintenance]]` entry (`compile_window`)."""

    name: str
    scope: Scope
    schedule: str
    duration_s: float
    zone: tzinfo
    # The last span computed: (from, until, end of the window on in it or None). Walking a cron
    # schedule takes milliseconds; the answer holds until the next start or end.
    _span: list[tuple[float, float, float | None]] = field(
        default_factory=list, compare=False, repr=False
    )

    def end(self, now: float) -> float | None:
        """When the window that covers `now` ends; None when none does."""
        for since, until, end in self._span:
            if since <= now < until:
                return end
        span = _span(self, now)
        self._span[:] = [span]
        return span[2]

    def mutes(self, record: Record, route: str, now: float) -> Mute | None:
        if not self.scope.matches(record, route):
            return None
        end = self.end(now)
        return None if end is None else Mute(MuteKind.MAINTENANCE, self.name, end)


# -- compiling ------------------------------------------------------------------------------


def compile_scope(match: SilenceMatchSettings, where: str) -> Scope:
    """Compile a silence's or window's matchers; raises `ControlError` naming the bad key.

    Refuses a set that selects nothing but kinds: it would mute everything."""
    if not any(getattr(match, key) for key in _SELECTING):
        raise ControlError(
            f"{where}: no matcher besides kinds: it would mute everything; give at least one of "
            + ", ".join(k for k in _SELECTING if k != "labels")
        )
    try:
        matcher = compile_match(match, where)
    except RuleError as e:
        raise ControlError(str(e)) from None
    return Scope(matcher, frozenset(match.routes))


def silence_scope(matchers: Mapping[str, Sequence[str]], where: str = "matchers") -> Scope:
    """Compile a silence's stored matchers (key -> patterns), as the API and CLI give them;
    raises `ControlError` naming the key. Several `text` patterns match if any does."""
    unknown = sorted(set(matchers) - set(MATCHER_KEYS))
    if unknown:
        raise ControlError(f"{where}.{unknown[0]}: unknown matcher; use {', '.join(MATCHER_KEYS)}")
    # A lone string is one pattern, not a list of its letters.
    lists = {k: [v] if isinstance(v, str) else list(v) for k, v in matchers.items()}
    fields: dict[str, object] = {k: v for k, v in lists.items() if v}
    if "text" in fields:
        texts = lists["text"]
        fields["text"] = "|".join(f"(?:{t})" for t in texts) if len(texts) > 1 else texts[0]
    if "min_severity" in fields:
        values = lists["min_severity"]
        if len(values) > 1:
            raise ControlError(f"{where}.min_severity: one severity, not {values!r}")
        fields["min_severity"] = values[0]
    try:
        match = SilenceMatchSettings.model_validate(fields)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ControlError(f"{where}.{key}: {first['msg']}") from None
    return compile_scope(match, where)


def compile_silence(silence: Silence) -> ActiveSilence:
    """A stored silence ready for `is_muted`; raises `ControlError` naming the silence."""
    return ActiveSilence(silence, silence_scope(silence.matchers, f"silence {silence.id}"))


def compile_window(window: MaintenanceSettings, where: str) -> Window:
    """A `[[maintenance]]` entry ready for `is_muted`; raises `ControlError` naming the key
    (`where`, e.g. ``maintenance.sunday-updates``) for a bad cron, zone, duration or match."""
    try:
        duration_s = parse_duration(window.duration)
    except DurationError as e:
        raise ControlError(f"{where}.duration: {e}") from None
    try:
        check_timezone(window.timezone)
    except ValueError as e:
        raise ControlError(f"{where}.timezone: {e}") from None
    zone: tzinfo = UTC if window.timezone.upper() == "UTC" else ZoneInfo(window.timezone)
    schedule = window.schedule.strip()
    fields = schedule.split()
    if not (len(fields) == 5 or (len(fields) == 1 and schedule.startswith("@"))):
        raise ControlError(
            f"{where}.schedule: {schedule!r} is not a cron expression of 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 2 * * SUN'"
        )
    compiled = Window(
        window.name, compile_scope(window.match, f"{where}.match"), schedule, duration_s, zone
    )
    try:
        next_start(compiled, 0.0)
    except (CroniterError, ValueError, KeyError) as e:
        raise ControlError(
            f"{where}.schedule: {schedule!r} is not a usable cron expression ({e}), "
            "e.g. '0 2 * * SUN'"
        ) from None
    return compiled


def compile_windows(settings: Settings) -> list[Window]:
    """Every `[[maintenance]]` window; raises `ControlError` on the first bad one."""
    return [compile_window(m, f"maintenance.{m.name}") for m in settings.effective_maintenance()]


def maintenance_problems(settings: Settings) -> list[str]:
    """One line per bad `[[maintenance]]` entry (for `config_problems`)."""
    problems = []
    for m in settings.effective_maintenance():
        try:
            compile_window(m, f"maintenance.{m.name}")
        except ControlError as e:
            problems.append(str(e))
    return problems


# -- maintenance schedules --------------------------------------------------------------------


def _wall(window: Window, at: float) -> datetime:
    """The naive wall-clock time in the window's zone at `at`."""
    return datetime.fromtimestamp(at, window.zone).replace(tzinfo=None)


def _instant(window: Window, wall: datetime) -> float:
    # fold=0: a time in the repeated autumn hour is its first occurrence; a time in the skipped
    # spring hour is read with the offset before the jump (02:30 -> 03:30 summer time).
    return wall.replace(tzinfo=window.zone, fold=0).timestamp()


def window_start(window: Window, now: float) -> float | None:
    """When the latest window that started at or before `now` started (unix seconds), or None.

    The schedule is walked in wall-clock time (croniter on naive times: no DST arithmetic in
    it) and each firing turned into an instant; since offsets shift the order near a switch,
    firings are looked at until none can be later."""
    wall_now = _wall(window, now)
    cron = croniter(window.schedule, wall_now + _MAX_OFFSET_CHANGE)
    best: tuple[float, datetime] | None = None
    while True:
        wall = cron.get_prev(datetime)
        if best is not None and wall < best[1] - _MAX_OFFSET_CHANGE:
            return best[0]
        at = _instant(window, wall)
        if at <= now and (best is None or at > best[0]):
            best = (at, wall)
        if best is None and wall < wall_now - timedelta(days=366 * 5):
            return None  # never fired in five years (a Feb 30 schedule is refused earlier)


def next_start(window: Window, now: float) -> float:
    """When the next window starts after `now` (unix seconds); raises `CroniterError` when the
    schedule never fires."""
    cron = croniter(window.schedule, _wall(window, now) - _MAX_OFFSET_CHANGE)
    best: tuple[float, datetime] | None = None
    while True:
        wall = cron.get_next(datetime)
        if best is not None and wall > best[1] + _MAX_OFFSET_CHANGE:
            return best[0]
        at = _instant(window, wall)
        if at > now and (best is None or at < best[0]):
            best = (at, wall)


def _span(window: Window, now: float) -> tuple[float, float, float | None]:
    """Around `now`: since when and until when the answer of `Window.end` stays the same,
    and that answer (the end of the window on at `now`, or None)."""
    start, upcoming = window_start(window, now), next_start(window, now)
    if start is None:
        return -math.inf, upcoming, None
    end = start + window.duration_s
    if now < end:
        return start, min(end, upcoming), end  # a next start within the window moves its end
    return end, upcoming, None


def maintenance_active(window: Window, now: float) -> bool:
    """Whether a window of this schedule covers `now`."""
    return window.end(now) is not None


# -- the decisions ----------------------------------------------------------------------------


def is_muted(
    record: Record,
    route: str,
    silences: Iterable[ActiveSilence],
    windows: Iterable[Window],
    now: float,
) -> Mute | None:
    """The first silence, then maintenance window, that mutes `record` on `route` at `now`;
    None when nothing does."""
    mutings: list[Muting] = [*silences, *windows]
    for muting in mutings:
        mute = muting.mutes(record, route, now)
        if mute is not None:
            return mute
    return None


def apply_mute(
    decision: Decision, prev: AlarmState | None, mute: Mute | None, now: float
) -> Decision:
    """What `decision` (from `alarms.decide`) becomes given the mute on its record now.

    - a muted set (or due reminder, or event, or log line) is `silenced`; a set keeps the mute
      in its state (`silenced`), a reminder keeps the reminder clock where it was;
    - a re-send of a set that was muted and never mailed, with no mute now: `silence_ended`;
    - the clear of a set that was muted and never mailed: `silenced_clear`, muted now or not;
    - a clear of a set that was mailed goes out, muted or not, and `clear_unknown` is unchanged.
    """
    never_mailed = prev is not None and prev.active and bool(prev.silenced)
    reason, state = decision.reason, decision.state
    if reason is Reason.CLEARED and never_mailed:
        return replace(decision, reason=Reason.SILENCED_CLEAR)
    if reason in (Reason.REPEAT_DUE, Reason.REPEAT_SUPPRESSED) and never_mailed:
        assert prev is not None and state is not None
        if mute is None:
            return _ended(state, now)
        return replace(
            decision,
            reason=Reason.SILENCED,
            state=replace(state, silenced=mute.name, last_notified=prev.last_notified),
        )
    if mute is None or reason in (Reason.CLEARED, Reason.CLEAR_UNKNOWN) or not reason.notifies:
        return decision
    if reason is Reason.NEW_ALARM and state is not None:
        return replace(decision, reason=Reason.SILENCED, state=replace(state, silenced=mute.name))
    if reason is Reason.REPEAT_DUE and prev is not None and state is not None:
        state = replace(state, last_notified=prev.last_notified)
    return replace(decision, reason=Reason.SILENCED, state=state)


def silence_ended(
    states: Iterable[AlarmState],
    route: str,
    silences: Iterable[ActiveSilence],
    windows: Iterable[Window],
    now: float,
) -> list[Decision]:
    """The `silence_ended` mails due now: active alarms whose set was muted and never mailed,
    and that nothing mutes any more. Each decision's state is the one to keep (no mute, mailed
    now). An alarm is matched by what its state knows (device, code, source, severity): a
    silence that also needs a text or receiver no longer holds it, so it is mailed rather than
    left hidden."""
    silences, windows = list(silences), list(windows)
    return [
        _ended(state, now)
        for state in sorted(states, key=lambda s: s.first_set)
        if state.active
        and state.silenced
        and is_muted(_as_record(state), route, silences, windows, now) is None
    ]


def _ended(state: AlarmState, now: float) -> Decision:
    return Decision(
        Reason.SILENCE_ENDED,
        replace(state, silenced="", last_notified=now),
        active_since=state.first_set,
        repeat_count=state.count,
        set_severity=state.severity,
    )


def _as_record(state: AlarmState) -> Record:
    return Record(
        kind=Kind.ALARM,
        received_at=state.last_seen,
        sender="",
        receiver="",
        raw=b"",
        device=state.device,
        code=state.code,
        source=state.source,
        severity=state.severity or Severity.INFO,
    )


def mutes_end(
    silences: Iterable[ActiveSilence], windows: Iterable[Window], now: float
) -> float | None:
    """The next time a silence or window that is on now ends (when `silence_ended` is worth
    asking again), or None when nothing is on."""
    mutings: list[Muting] = [*silences, *windows]
    ends = (muting.end(now) for muting in mutings)
    return min((end for end in ends if end is not None), default=None)
