"""Silences and maintenance windows: what is muted, by what, and what muting does to a mail."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.config import MaintenanceSettings, MatchSettings, load_settings
from notifier.dispatch.alarms import Reason, decide
from notifier.dispatch.control import (
    ControlError,
    MuteKind,
    Window,
    apply_mute,
    compile_silence,
    compile_window,
    is_muted,
    maintenance_active,
    mutes_end,
    next_start,
    silence_ended,
    silence_scope,
    window_start,
)
from notifier.dispatch.rules import compile_match
from notifier.prepare import config_problems
from notifier.records import Kind, Record, Severity
from notifier.spool.state import AlarmState, Silence
from tests.dispatch.test_alarms import rec
from tests.test_config import notifier

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()
ROUTE = "ops"


def record(
    kind: Kind = Kind.ALARM,
    device: str = "gw01",
    code: str = "0x00010001",
    severity: Severity = Severity.MAJOR,
    at: float = NOW,
    text: str = "Trunk down",
) -> Record:
    return rec(kind, at, code=code).evolve(device=device, severity=severity, text=text)


def silence(
    *,
    starts_at: float = NOW - 60,
    ends_at: float = NOW + 3600,
    expired_at: float | None = None,
    id: str = "s1",
    **matchers: tuple[str, ...],
) -> Silence:
    return Silence(
        id=id,
        matchers=matchers or {"devices": ("gw*",)},
        starts_at=starts_at,
        ends_at=ends_at,
        comment="firmware update",
        created_by="alice",
        created_at=starts_at,
        expired_at=expired_at,
    )


def window(
    schedule: str = "0 2 * * SUN",
    duration: str | float = "2h",
    timezone: str = "Europe/Berlin",
    **match: object,
) -> Window:
    settings = MaintenanceSettings(
        name="sunday-updates",
        match={"devices": ["gw*"], **match},
        schedule=schedule,
        duration=duration,
        timezone=timezone,
    )
    return compile_window(settings, "maintenance.sunday-updates")


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- matchers --------------------------------------------------------------------------------


@pytest.mark.parametrize("matchers", [{}, {"kinds": ("alarm",)}, {"devices": ()}])
def test_a_silence_that_would_mute_everything_is_refused(
    matchers: dict[str, tuple[str, ...]],
) -> None:
    with pytest.raises(ControlError, match="no matcher besides kinds: it would mute everything"):
        silence_scope(matchers)


@pytest.mark.parametrize(
    ("matchers", "message"),
    [
        ({"device": ("gw01",)}, "matchers.device: unknown matcher; use kinds, severities"),
        ({"severities": ("urgent",)}, "matchers.severities: unknown severity 'urgent'"),
        ({"min_severity": ("loud",)}, "matchers.min_severity: unknown severity 'loud'"),
        ({"min_severity": ("major", "minor")}, "matchers.min_severity: one severity"),
        ({"text": ("(",)}, "matchers.text: '(' is not a valid regular expression"),
        ({"codes": ("0x20-0x10",)}, "matchers.codes: '0x20-0x10' is not a range"),
        ({"kinds": ("alarms",), "devices": ("gw1",)}, "matchers.kinds.0: Input should be"),
    ],
)
def test_a_bad_matcher_is_refused_naming_the_key_and_value(
    matchers: dict[str, tuple[str, ...]], message: str
) -> None:
    with pytest.raises(ControlError) as refused:
        silence_scope(matchers)
    assert str(refused.value).startswith(message), refused.value


def test_route_min_severity_takes_that_severity_and_above() -> None:
    major_and_up = compile_match(MatchSettings(min_severity="major"))
    assert major_and_up.matches(record(severity=Severity.MAJOR))
    assert major_and_up.matches(record(severity=Severity.CRITICAL))
    assert not major_and_up.matches(record(severity=Severity.MINOR))
    assert not major_and_up.matches(record(severity=Severity.INFO))


def test_a_bad_route_min_severity_is_a_config_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text('[[routes]]\nname = "ops"\n[routes.match]\nmin_severity = "loud"\n')
    assert config_problems(load_settings(cfg, environ={})) == [
        "routes.0.match.min_severity: unknown severity 'loud': use a name "
        "(critical, major, minor, warning, indeterminate, info) or a number 0..2"
    ]


# -- silences --------------------------------------------------------------------------------


def test_a_silence_mutes_what_matches_while_it_is_on_and_names_itself() -> None:
    on = [compile_silence(silence(devices=("gw*",), codes=("0x0001*",)))]
    mute = is_muted(record(), ROUTE, on, [], NOW)
    assert mute is not None
    assert (mute.kind, mute.name, mute.until) == (MuteKind.SILENCE, "s1", NOW + 3600)
    assert is_muted(record(device="pbx1"), ROUTE, on, [], NOW) is None
    assert is_muted(record(code="0x00020001"), ROUTE, on, [], NOW) is None


@pytest.mark.parametrize(
    ("kwargs", "muted"),
    [
        ({"starts_at": NOW + 1}, False),  # not yet
        ({"ends_at": NOW}, False),  # ended
        ({"expired_at": NOW - 1}, False),  # expired early by an operator
        ({"expired_at": NOW + 1}, True),  # expiry scheduled, not reached
        ({"starts_at": NOW, "ends_at": NOW + 1}, True),  # the start counts, the end does not
    ],
)
def test_a_silence_mutes_from_its_start_until_its_end_or_expiry(
    kwargs: dict[str, float], muted: bool
) -> None:
    on = [compile_silence(silence(**kwargs))]  # type: ignore[arg-type]
    assert (is_muted(record(), ROUTE, on, [], NOW) is not None) is muted


def test_routes_and_min_severity_narrow_a_silence() -> None:
    on = [compile_silence(silence(routes=("ops",), min_severity=("major",)))]
    assert is_muted(record(severity=Severity.CRITICAL), "ops", on, [], NOW) is not None
    assert is_muted(record(severity=Severity.MINOR), "ops", on, [], NOW) is None
    assert is_muted(record(), "management", on, [], NOW) is None


def test_several_text_patterns_mute_if_any_matches() -> None:
    on = [compile_silence(silence(text=("Trunk", "^Fan")))]
    assert is_muted(record(text="Fan failure"), ROUTE, on, [], NOW) is not None
    assert is_muted(record(text="Trunk down"), ROUTE, on, [], NOW) is not None
    assert is_muted(record(text="Power"), ROUTE, on, [], NOW) is None


def test_a_silence_comes_before_a_window_and_the_first_silence_wins() -> None:
    on = [compile_silence(silence(id="a")), compile_silence(silence(id="b"))]
    always = window(schedule="* * * * *", duration="1d", timezone="UTC")
    mute = is_muted(record(), ROUTE, on, [always], NOW)
    assert mute is not None and mute.name == "a"
    mute = is_muted(record(), ROUTE, [], [always], NOW)
    assert mute is not None and (mute.kind, mute.name) == (MuteKind.MAINTENANCE, "sunday-updates")


def test_mutes_end_says_when_to_look_for_ended_silences_again() -> None:
    on = [compile_silence(silence(ends_at=NOW + 600)), compile_silence(silence(ends_at=NOW + 60))]
    later = [compile_silence(silence(starts_at=NOW + 10, ends_at=NOW + 20))]
    assert mutes_end([*on, *later], [], NOW) == NOW + 60
    assert mutes_end(later, [], NOW) is None


# -- what muting does to the decision --------------------------------------------------------


def decided(prev: AlarmState | None, r: Record, muted: bool, now: float = NOW) -> tuple:
    mute = is_muted(r, ROUTE, [compile_silence(silence())], [], now) if muted else None
    d = apply_mute(decide(prev, r, now, repeat_interval_s=3600), prev, mute, now)
    return d.reason, d.notify, d.state


def test_a_muted_set_is_not_mailed_and_its_state_keeps_the_silence() -> None:
    reason, notify, state = decided(None, record(), muted=True)
    assert (reason, notify) == (Reason.SILENCED, False)
    assert state is not None and state.active and state.silenced == "s1"


def test_muted_events_and_reminders_are_not_mailed() -> None:
    assert decided(None, record(kind=Kind.EVENT), muted=True)[:2] == (Reason.SILENCED, False)
    _, _, mailed = decided(None, record(at=NOW - 7200), muted=False, now=NOW - 7200)
    reason, notify, state = decided(mailed, record(), muted=True)
    assert (reason, notify) == (Reason.SILENCED, False)
    assert state.last_notified == mailed.last_notified  # the reminder is still owed
    assert state.silenced == ""  # its set was mailed: people know it is down


def test_the_clear_of_a_muted_set_is_not_mailed_muted_or_not() -> None:
    _, _, muted_set = decided(None, record(at=NOW - 10), muted=True)
    for muted in (True, False):
        reason, notify, state = decided(muted_set, record(kind=Kind.CLEAR), muted=muted)
        assert (reason, notify) == (Reason.SILENCED_CLEAR, False)
        assert state is not None and not state.active


def test_a_clear_during_a_silence_of_a_set_mailed_before_is_mailed() -> None:
    _, _, mailed = decided(None, record(at=NOW - 10), muted=False)
    reason, notify, _ = decided(mailed, record(kind=Kind.CLEAR), muted=True)
    assert (reason, notify) == (Reason.CLEARED, True)


def test_clear_unknown_keeps_its_meaning_during_a_silence() -> None:
    assert decided(None, record(kind=Kind.CLEAR), muted=True)[:2] == (Reason.CLEAR_UNKNOWN, True)


def test_a_resend_of_a_muted_set_after_the_silence_is_mailed_as_silence_ended() -> None:
    _, _, muted_set = decided(None, record(at=NOW - 10), muted=True)
    reason, notify, state = decided(muted_set, record(), muted=False)
    assert (reason, notify) == (Reason.SILENCE_ENDED, True)
    assert state.silenced == "" and state.last_notified == NOW


def test_unmuted_decisions_are_unchanged() -> None:
    for r in (record(), record(kind=Kind.EVENT), record(kind=Kind.CLEAR)):
        d = decide(None, r, NOW, 3600)
        assert apply_mute(d, None, None, NOW) == d


# -- silence_ended ---------------------------------------------------------------------------


def state(silenced: str = "s1", active: bool = True, device: str = "gw01") -> AlarmState:
    return AlarmState(
        device, "0x00010001", "RELAY/RECH", active, NOW - 600, NOW - 60, 3, NOW - 600,
        severity=Severity.CRITICAL, silenced=silenced,
    )  # fmt: skip


def test_silence_ended_finds_active_muted_alarms_that_nothing_mutes_any_more() -> None:
    ended = silence(ends_at=NOW - 1)
    states = [state(), state(silenced=""), state(active=False), state(device="gw02")]
    still = [compile_silence(silence(id="s2", devices=("gw02",)))]
    decisions = silence_ended(states, ROUTE, [compile_silence(ended), *still], [], NOW)
    assert [(d.reason, d.state.device) for d in decisions] == [  # type: ignore[union-attr]
        (Reason.SILENCE_ENDED, "gw01")
    ]
    (d,) = decisions
    assert d.notify and d.state is not None
    assert (d.state.silenced, d.state.last_notified) == ("", NOW)
    assert (d.active_since, d.set_severity, d.repeat_count) == (NOW - 600, Severity.CRITICAL, 3)


def test_silence_ended_mails_rather_than_hides_when_a_silence_needs_what_state_lacks() -> None:
    by_text = [compile_silence(silence(text=("Trunk",)))]
    assert len(silence_ended([state()], ROUTE, by_text, [], NOW)) == 1


# -- maintenance windows ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "active"),
    [
        # An ordinary Sunday in winter: 02:00-04:00 CET is 01:00-03:00 UTC.
        ("2026-03-22T00:59:59", False),
        ("2026-03-22T01:00:00", True),
        ("2026-03-22T02:59:59", True),
        ("2026-03-22T03:00:00", False),
        # 29 March: 02:00 does not exist; the window starts when the clocks jump (03:00 CEST,
        # 01:00 UTC) and lasts two real hours.
        ("2026-03-29T00:59:59", False),
        ("2026-03-29T01:00:00", True),
        ("2026-03-29T02:59:59", True),
        ("2026-03-29T03:00:00", False),
        # Summer: 02:00-04:00 CEST is 00:00-02:00 UTC.
        ("2026-04-05T00:00:00", True),
        ("2026-04-05T02:00:00", False),
        # 25 October: 02:00 comes twice; the window starts once, at the first (CEST, 00:00
        # UTC), and is not started again an hour later.
        ("2026-10-24T23:59:59", False),
        ("2026-10-25T00:00:00", True),
        ("2026-10-25T01:30:00", True),  # 02:30 CET, the second pass
        ("2026-10-25T02:00:00", False),
        ("2026-10-25T02:30:00", False),
        # Winter again: 01:00-03:00 UTC.
        ("2026-11-01T00:30:00", False),
        ("2026-11-01T01:00:00", True),
        ("2026-11-01T03:00:00", False),
        # Not on other days.
        ("2026-10-26T01:00:00", False),
    ],
)
def test_sunday_0200_for_2h_in_berlin_across_the_dst_switches(at: str, active: bool) -> None:
    assert maintenance_active(window(), utc(at)) is active


@pytest.mark.parametrize(
    ("now", "start"),
    [
        ("2026-03-22T12:00:00", "2026-03-29T01:00:00"),
        ("2026-03-29T01:00:00", "2026-04-05T00:00:00"),
        ("2026-10-18T12:00:00", "2026-10-25T00:00:00"),
        ("2026-10-25T00:30:00", "2026-11-01T01:00:00"),
    ],
)
def test_next_start_across_the_dst_switches(now: str, start: str) -> None:
    assert next_start(window(), utc(now)) == utc(start)


def test_a_window_mutes_only_what_its_match_selects() -> None:
    sunday = window(min_severity="major")
    at = utc("2026-03-22T01:30:00")
    assert is_muted(record(at=at), ROUTE, [], [sunday], at) is not None
    assert is_muted(record(device="pbx1", at=at), ROUTE, [], [sunday], at) is None
    assert is_muted(record(severity=Severity.MINOR, at=at), ROUTE, [], [sunday], at) is None
    assert is_muted(record(at=at + 7200), ROUTE, [], [sunday], at + 7200) is None


SCHEDULES = ["0 2 * * SUN", "30 1 * * *", "*/20 * * * *", "0 0 1 * *", "15 2,3 * * *"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
# 2025 to 2028: several DST switches of every zone above.
INSTANTS = st.floats(min_value=utc("2025-01-01T00:00:00"), max_value=utc("2028-12-31T00:00:00"))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SCHEDULES), st.sampled_from(ZONES), INSTANTS)
def test_a_window_starts_at_its_latest_start_and_the_next_one_is_later(
    schedule: str, zone: str, now: float
) -> None:
    w = window(schedule=schedule, duration="45m", timezone=zone)
    start = window_start(w, now)
    upcoming = next_start(w, now)
    assert start is not None and start <= now < upcoming
    assert maintenance_active(w, now) is (now < start + w.duration_s)
    # No start between the latest one and the next: the next one's latest start is itself.
    assert window_start(w, upcoming) == upcoming
    assert window_start(w, upcoming - 1e-3) == start
    assert next_start(w, start) == upcoming


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            {"schedule": "0 2 * * SUNDAY"},
            "maintenance.sunday-updates.schedule: '0 2 * * SUNDAY' is not a usable cron",
        ),
        (
            {"schedule": "0 2 * *"},
            "maintenance.sunday-updates.schedule: '0 2 * *' is not a cron expression of 5 fields",
        ),
        ({"schedule": "0 0 30 2 *"}, "maintenance.sunday-updates.schedule: '0 0 30 2 *'"),
        (
            {"timezone": "Europe/Berlyn"},
            "maintenance.sunday-updates.timezone: unknown time zone 'Europe/Berlyn'",
        ),
        (
            {"duration": "2 hours"},
            "maintenance.sunday-updates.duration: duration '2 hours' is not a duration",
        ),
        (
            {"match": {"kinds": ["alarm"]}},
            "maintenance.sunday-updates.match: no matcher besides kinds",
        ),
    ],
)
def test_a_bad_window_is_one_config_problem_naming_the_key(
    tmp_path: Path, entry: dict[str, object], problem: str
) -> None:
    fields: dict[str, object] = {
        "name": "sunday-updates",
        "schedule": "0 2 * * SUN",
        "duration": "2h",
        "timezone": "Europe/Berlin",
        "match": {"devices": ["gw*"]},
        **entry,
    }
    settings = load_settings(environ={}).model_copy(
        update={"maintenance": [MaintenanceSettings.model_validate(fields)]}
    )
    (line,) = config_problems(settings)
    assert line.startswith(problem), line


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_check_config_and_run_refuse_a_bad_schedule_with_one_line(
    tmp_path: Path, command: str
) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        '[[maintenance]]\nname = "sunday-updates"\nschedule = "0 2 * * SUNDAY"\n'
        'duration = "2h"\ntimezone = "Europe/Berlin"\n'
        '[maintenance.match]\ndevices = ["gw*"]\n'
    )
    out = notifier(command, "--config", str(cfg))
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(
        "notifier: config: maintenance.sunday-updates.schedule: '0 2 * * SUNDAY' is not a usable"
    )


def test_the_example_window_compiles(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent.parent / "examples" / "notifier.toml"
    # The example's window is commented out (it would mute a user's gateways): uncommented,
    # it must be valid.
    text = example.read_text()
    block = text[text.index("# [[maintenance]]") : text.index("\n\n[oauth2]")]
    uncommented = tmp_path / "notifier.toml"
    uncommented.write_text("\n".join(line[1:] for line in block.splitlines()))
    settings = load_settings(uncommented, environ={})
    assert config_problems(settings) == []
    assert [m.name for m in settings.effective_maintenance()] == ["sunday-updates"]


def test_a_lone_string_is_one_pattern() -> None:
    on = [compile_silence(silence(devices="gw0*"))]  # type: ignore[arg-type]
    assert is_muted(record(device="gw01"), ROUTE, on, [], NOW) is not None
    assert is_muted(record(device="w"), ROUTE, on, [], NOW) is None


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from(SCHEDULES),
    st.sampled_from(ZONES),
    st.lists(INSTANTS, min_size=1, max_size=30),
)
def test_one_window_asked_many_times_answers_as_if_asked_once(
    schedule: str, zone: str, instants: list[float]
) -> None:
    w = window(schedule=schedule, duration="90m", timezone=zone)
    base = instants[0]
    for now in [*instants, *(base + k * 600 for k in range(-20, 20))]:
        start = window_start(w, now)
        direct = start + w.duration_s if start is not None and now < start + 5400 else None
        assert w.end(now) == direct
