"""The mail-or-not decision, one test per named reason; no server needed."""

from __future__ import annotations

from dataclasses import replace

from notifier.dispatch.alarms import ForgetReason, Reason, decide, threaded, to_forget
from notifier.records import Kind, Record, Severity
from notifier.spool.state import AlarmState

HOUR = 3600.0


def rec(
    kind: Kind, at: float, *, device_time: float | None = None, code: str = "0x00010002"
) -> Record:
    return Record(
        kind=kind,
        received_at=at,
        sender="192.0.2.7",
        receiver="http",
        raw=b"",
        device="gw01",
        code=code,
        source="RELAY/RECH",
        severity=Severity.MAJOR,
        text="Registration down",
        device_time=device_time,
    )


def test_first_set_of_an_alarm_is_mailed() -> None:
    d = decide(None, rec(Kind.ALARM, 1000), now=1000, repeat_interval_s=4 * HOUR)
    assert d.reason is Reason.NEW_ALARM and d.notify
    assert d.state is not None and d.state.active and d.state.count == 1


def test_alarm_resent_within_repeat_interval_sends_no_second_mail() -> None:
    first = decide(None, rec(Kind.ALARM, 1000), now=1000, repeat_interval_s=4 * HOUR)
    again = decide(first.state, rec(Kind.ALARM, 2800), now=2800, repeat_interval_s=4 * HOUR)
    assert again.reason is Reason.REPEAT_SUPPRESSED and not again.notify
    assert again.state is not None and again.state.count == 2 and again.state.last_seen == 2800


def test_alarm_still_active_after_repeat_interval_is_mailed_again() -> None:
    first = decide(None, rec(Kind.ALARM, 0), now=0, repeat_interval_s=4 * HOUR)
    later = decide(first.state, rec(Kind.ALARM, 4 * HOUR), now=4 * HOUR, repeat_interval_s=4 * HOUR)
    assert later.reason is Reason.REPEAT_DUE and later.notify
    assert later.active_since == 0 and later.state is not None
    assert later.state.last_notified == 4 * HOUR


def test_repeat_interval_zero_never_reminds() -> None:
    first = decide(None, rec(Kind.ALARM, 0), now=0, repeat_interval_s=0)
    later = decide(first.state, rec(Kind.ALARM, 99 * HOUR), now=99 * HOUR, repeat_interval_s=0)
    assert later.reason is Reason.REPEAT_SUPPRESSED


def test_clear_of_active_alarm_is_mailed_with_how_long_it_was_active() -> None:
    first = decide(None, rec(Kind.ALARM, 1000), now=1000, repeat_interval_s=HOUR)
    clear = decide(first.state, rec(Kind.CLEAR, 4900), now=4900, repeat_interval_s=HOUR)
    assert clear.reason is Reason.CLEARED and clear.notify
    assert clear.active_since == 1000
    assert clear.state is not None and not clear.state.active and clear.state.cleared_at == 4900


def test_clear_for_unknown_alarm_is_mailed_as_a_clear() -> None:
    d = decide(None, rec(Kind.CLEAR, 10), now=10, repeat_interval_s=HOUR)
    assert d.reason is Reason.CLEAR_UNKNOWN and d.notify


def test_repeated_clear_is_not_mailed_twice() -> None:
    first = decide(None, rec(Kind.ALARM, 0), now=0, repeat_interval_s=HOUR)
    clear = decide(first.state, rec(Kind.CLEAR, 10), now=10, repeat_interval_s=HOUR)
    again = decide(clear.state, rec(Kind.CLEAR, 20), now=20, repeat_interval_s=HOUR)
    assert again.reason is Reason.CLEAR_DUPLICATE and not again.notify


def test_set_delivered_late_after_its_clear_is_not_news() -> None:
    state = AlarmState("gw01", "0x00010002", "RELAY/RECH", False, 0, 100, 1, 100, cleared_at=100)
    late = decide(state, rec(Kind.ALARM, 200, device_time=50), now=200, repeat_interval_s=HOUR)
    assert late.reason is Reason.LATE_SET and not late.notify


def test_set_after_clear_is_a_new_alarm() -> None:
    state = AlarmState("gw01", "0x00010002", "RELAY/RECH", False, 0, 100, 1, 100, cleared_at=100)
    d = decide(state, rec(Kind.ALARM, 300), now=300, repeat_interval_s=HOUR)
    assert d.reason is Reason.NEW_ALARM


def test_events_and_logs_are_mailed_without_alarm_state() -> None:
    assert decide(None, rec(Kind.EVENT, 1), now=1, repeat_interval_s=HOUR).reason is Reason.EVENT
    assert decide(None, rec(Kind.LOG, 1), now=1, repeat_interval_s=HOUR).reason is Reason.LOG


def test_clear_older_than_a_set_seen_since_leaves_the_alarm_active() -> None:
    first = decide(None, rec(Kind.ALARM, 0), now=0, repeat_interval_s=HOUR)
    again = decide(first.state, rec(Kind.ALARM, 30), now=30, repeat_interval_s=HOUR)
    # The clear from t=20 is retried only now (its mail had failed): it is history.
    stale = decide(again.state, rec(Kind.CLEAR, 20), now=40, repeat_interval_s=HOUR)
    assert stale.reason is Reason.STALE_CLEAR and not stale.notify
    assert stale.state is not None and stale.state.active


def state(code: str, *, active: bool, last_seen: float) -> AlarmState:
    return AlarmState("gw01", code, "RELAY/RECH", active, 0.0, last_seen, 1, 0.0)


def by_key(*states: AlarmState) -> dict[tuple[str, str, str], AlarmState]:
    return {s.key: s for s in states}


def test_cleared_alarm_not_seen_for_the_forget_age_is_forgotten_an_active_one_is_not() -> None:
    old_clear = state("a", active=False, last_seen=100)
    old_active = state("b", active=True, last_seen=100)
    new_clear = state("c", active=False, last_seen=900)
    forget = to_forget(by_key(old_clear, old_active, new_clear), 500, max_states=10)
    assert forget == {old_clear.key: ForgetReason.EXPIRED}


def test_over_the_bound_the_oldest_cleared_go_before_any_active() -> None:
    states = by_key(
        state("active-oldest", active=True, last_seen=1),
        state("clear-old", active=False, last_seen=2),
        state("clear-new", active=False, last_seen=3),
        state("active-new", active=True, last_seen=4),
    )
    forget = to_forget(states, 0, max_states=3)
    assert forget == {("gw01", "clear-old", "RELAY/RECH"): ForgetReason.BOUND_CLEARED}


def test_over_the_bound_with_only_active_alarms_the_least_recently_seen_go() -> None:
    states = by_key(*(state(f"a{i}", active=True, last_seen=i) for i in range(5)))
    forget = to_forget(states, 0, max_states=3)
    assert forget == {
        ("gw01", "a0", "RELAY/RECH"): ForgetReason.BOUND_ACTIVE,
        ("gw01", "a1", "RELAY/RECH"): ForgetReason.BOUND_ACTIVE,
    }


def test_a_clear_carries_the_set_mails_message_id_and_severity_for_its_mail() -> None:
    stored = AlarmState(
        "gw01", "0x00010002", "RELAY/RECH", True, 1000.0, 1000.0, 1, 1000.0,
        severity=Severity.CRITICAL, message_id="<set@notifier.example>",
    )  # fmt: skip
    d = decide(stored, rec(Kind.CLEAR, 2000), now=2000, repeat_interval_s=HOUR)
    assert d.reason is Reason.CLEARED
    assert d.set_message_id == "<set@notifier.example>"
    assert d.set_severity is Severity.CRITICAL


def test_an_accepted_set_mail_is_remembered_only_by_active_alarms_without_one() -> None:
    new = decide(None, rec(Kind.ALARM, 1000), now=1000, repeat_interval_s=HOUR).state
    assert new is not None and new.message_id == ""
    known = replace(new, code="0x2", message_id="<old@x>")
    gone = replace(new, code="0x3", active=False)
    states = {s.key: s for s in (new, known, gone)}

    out = threaded(states, [new.key, known.key, gone.key, ("gw09", "0x9", "")], "<new@x>")

    assert out == {new.key: replace(new, message_id="<new@x>")}
