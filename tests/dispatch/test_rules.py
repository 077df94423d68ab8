"""Routing rules: which records a route takes."""

from __future__ import annotations

import pytest

from notifier.config import MatchSettings
from notifier.dispatch.rules import FirstMatch, RuleError, compile_match
from notifier.records import Kind, Record, Severity


def rec(**kw: object) -> Record:
    base: dict[str, object] = dict(
        kind=Kind.ALARM,
        received_at=0.0,
        sender="192.0.2.1",
        receiver="http",
        raw=b"",
        device="gw01",
        code="0x00010002",
        source="RELAY/RECH",
        severity=Severity.MAJOR,
        text="Registration down",
    )
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


def test_default_match_takes_alarms_clears_events_but_not_logs() -> None:
    m = compile_match(MatchSettings())
    assert m.matches(rec()) and m.matches(rec(kind=Kind.CLEAR)) and m.matches(rec(kind=Kind.EVENT))
    assert not m.matches(rec(kind=Kind.LOG))


@pytest.mark.parametrize(
    ("codes", "code", "expected"),
    [
        (["0x00010002"], "0x00010002", True),
        (["0x00010002"], "0X00010002", True),
        (["0x0001*"], "0x0001ffff", True),
        (["0x0002*"], "0x00010002", False),
        (["0x00010000-0x0001ffff"], "0x00010002", True),
        (["0x00020000-0x0002ffff"], "0x00010002", False),
    ],
)
def test_codes_match_exact_prefix_and_range(codes: list[str], code: str, expected: bool) -> None:
    assert compile_match(MatchSettings(codes=codes)).matches(rec(code=code)) is expected


def test_devices_sources_severities_receivers_and_text() -> None:
    m = compile_match(
        MatchSettings(
            devices=["gw*"],
            sources=["relay/*"],
            severities=["major", "critical"],
            receivers=["http"],
            text="down$",
        )
    )
    assert m.matches(rec())
    assert not m.matches(rec(device="pbx1"))
    assert not m.matches(rec(source="IP"))
    assert not m.matches(rec(severity=Severity.MINOR))
    assert not m.matches(rec(receiver="syslog-udp"))
    assert not m.matches(rec(text="Registration up"))


@pytest.mark.parametrize(
    ("match", "message"),
    [
        (MatchSettings(text="("), "match.text"),
        (MatchSettings(codes=["0x20-0x10"]), "match.codes"),
        (MatchSettings(severities=["bogus"]), "match.severities"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(match: MatchSettings, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        compile_match(match)


def test_first_match_wins_unless_the_earlier_route_continues() -> None:
    critical = compile_match(MatchSettings(severities=["critical"]))
    everything = compile_match(MatchSettings())
    second = FirstMatch(everything, (critical,))
    assert not second.matches(rec(severity=Severity.CRITICAL))
    assert second.matches(rec(severity=Severity.MAJOR))


def test_labels_match_with_globs_and_every_given_label_must_match() -> None:
    m = compile_match(MatchSettings(labels={"severity": "crit*", "team": "voice"}))
    assert m.matches(rec(labels={"severity": "critical", "team": "voice", "job": "pbx"}))
    assert m.matches(rec(labels={"severity": "Critical", "team": "VOICE"}))
    assert not m.matches(rec(labels={"severity": "critical", "team": "data"}))
    assert not m.matches(rec(labels={"severity": "critical"}))
    # Records of other senders carry no labels: a label rule never takes them.
    assert not m.matches(rec())


def test_a_missing_label_reads_as_empty_as_in_prometheus_matchers() -> None:
    no_team = compile_match(MatchSettings(labels={"team": ""}))
    assert no_team.matches(rec(labels={"severity": "critical"}))
    assert not no_team.matches(rec(labels={"team": "voice"}))
