"""Alertmanager and Grafana webhook payloads → one Record per alert."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from notifier.ingest.parse.webhook import fingerprint_of, parse_webhook
from notifier.records import Kind, ParseError, Severity, SeverityScheme


def at(hour: int, minute: int) -> float:
    """Unix seconds of that time on 2026-11-30 (UTC), the day of the payloads."""
    return dt.datetime(2026, 11, 30, hour, minute, tzinfo=dt.UTC).timestamp()


PAYLOADS = Path(__file__).resolve().parents[1] / "ingest" / "payloads"


def alertmanager_payload(status: str = "firing", **alert: Any) -> dict[str, Any]:
    """A version 4 Alertmanager webhook payload with one alert."""
    one: dict[str, Any] = {
        "status": status,
        "labels": {
            "alertname": "DiskFull",
            "instance": "pbx01:9100",
            "job": "node",
            "severity": "critical",
            "device": "sda1",
        },
        "annotations": {"summary": "Disk sda1 of pbx01 is full", "description": "0 bytes left"},
        "startsAt": "2026-11-30T09:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-30T09:30:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=disk",
        "fingerprint": "a1b2c3d4e5f60718",
    }
    one.update(alert)
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "notifier",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": one["labels"],
        "commonAnnotations": one["annotations"],
        "externalURL": "http://alertmanager:9093",
        "alerts": [one],
    }


def parse(payload: Any, receiver: str = "alertmanager", **kw: Any) -> list[Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_webhook(body, received_at=1.0e9, sender="192.0.2.9:40000", receiver=receiver, **kw)


def test_a_firing_alert_is_an_alarm_keyed_by_its_fingerprint() -> None:
    [r] = parse(alertmanager_payload())
    assert r.kind is Kind.ALARM
    assert (r.device, r.code, r.source) == ("pbx01:9100", "DiskFull", "a1b2c3d4e5f60718")
    assert r.severity is Severity.CRITICAL and r.severity_raw == "critical"
    assert r.text == "Disk sda1 of pbx01 is full"
    assert r.device_time == pytest.approx(at(9, 0) + 0.123456)
    assert r.receiver == "alertmanager"
    assert dict(r.labels) == {
        "alertname": "DiskFull",
        "device": "sda1",
        "instance": "pbx01:9100",
        "job": "node",
        "severity": "critical",
    }
    assert r.details.splitlines() == [
        "description: 0 bytes left",
        "summary: Disk sda1 of pbx01 is full",
        "generatorURL: http://prometheus:9090/graph?g0.expr=disk",
        "externalURL: http://alertmanager:9093",
    ]
    assert json.loads(r.raw)["fingerprint"] == "a1b2c3d4e5f60718"


def test_the_resolved_alert_is_its_clear_with_the_same_alarm_key_at_its_end_time() -> None:
    [fired] = parse(alertmanager_payload("firing"))
    [resolved] = parse(alertmanager_payload("resolved"))
    assert resolved.kind is Kind.CLEAR
    assert resolved.alarm_key == fired.alarm_key
    assert resolved.device_time == at(9, 30)


def test_two_alerts_of_one_name_on_one_host_are_two_alarms() -> None:
    payload = alertmanager_payload()
    other = {**payload["alerts"][0], "fingerprint": "ffff000011112222"}
    other["labels"] = {**other["labels"], "device": "sdb1"}
    payload["alerts"].append(other)
    first, second = parse(payload)
    assert first.alarm_key != second.alarm_key


def test_device_falls_back_to_the_job_then_the_sender_and_text_to_the_description() -> None:
    labels = {"alertname": "Down", "job": "pbx"}
    [r] = parse(alertmanager_payload(labels=labels, annotations={"description": "gone"}))
    assert (r.device, r.text) == ("pbx", "gone")
    [r] = parse(alertmanager_payload(labels={"alertname": "Down"}, annotations={}))
    assert (r.device, r.text) == ("192.0.2.9", "Down")


@pytest.mark.parametrize(
    ("label", "scheme", "expected"),
    [
        ("critical", SeverityScheme.EVENTS_API, Severity.CRITICAL),
        ("warning", SeverityScheme.EVENTS_API, Severity.WARNING),
        ("info", SeverityScheme.EVENTS_API, Severity.INFO),
        ("2", SeverityScheme.SDK, Severity.CRITICAL),
        ("2", SeverityScheme.EVENTS_API, Severity.MAJOR),
        ("0", SeverityScheme.EVENTS_API, Severity.MINOR),
    ],
)
def test_the_severity_label_maps_names_and_both_number_schemes(
    label: str, scheme: SeverityScheme, expected: Severity
) -> None:
    labels = {"alertname": "X", "severity": label}
    [r] = parse(alertmanager_payload(labels=labels), scheme=scheme)
    assert r.severity is expected


def test_an_unknown_severity_keeps_the_alert_and_notes_the_value() -> None:
    [r] = parse(alertmanager_payload(labels={"alertname": "X", "severity": "page"}))
    assert r.severity is Severity.INDETERMINATE and r.severity_raw == "page"
    assert "page" in r.extras["severity_error"]


def test_without_a_fingerprint_one_is_derived_from_the_labels() -> None:
    payload = alertmanager_payload(fingerprint=None)
    [r] = parse(payload)
    assert r.source == fingerprint_of(payload["alerts"][0]["labels"]) and len(r.source) == 16


def test_grafana_payload_from_the_documentation_shape() -> None:
    payload = json.loads((PAYLOADS / "grafana-firing.json").read_text())
    trunk, registrations = parse(payload, receiver="grafana")
    assert trunk.kind is registrations.kind is Kind.ALARM
    assert (trunk.device, trunk.code, trunk.source) == (
        "pbx01.example.net",
        "PBX trunk down",
        "c6eadffa33fcdf37",
    )
    assert trunk.text == "All SIP trunks of pbx01 are down"
    assert trunk.labels["team"] == "voice"
    details = trunk.details.splitlines()
    assert "runbook_url: https://wiki.example.net/runbooks/trunk-down" in details
    assert "dashboardURL: https://grafana.example.net/d/voice01?orgId=1" in details
    assert 'values: {"A":0,"C":1}' in details
    assert any(line.startswith("silenceURL: https://grafana.example.net/") for line in details)
    # No instance or job label: the device is Grafana's address; no summary: the description.
    assert registrations.device == "192.0.2.9"
    assert registrations.text == "Fewer than 50 phones registered in the last 5 minutes."
    assert registrations.severity is Severity.WARNING
    [resolved] = parse(json.loads((PAYLOADS / "grafana-resolved.json").read_text()), "grafana")
    assert resolved.kind is Kind.CLEAR and resolved.alarm_key == trunk.alarm_key


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[]", "bad_payload"),
        (b'{"status": "firing"}', "bad_payload"),
        (b'{"alerts": []}', "empty"),
        (b'{"alerts": ["x"]}', "bad_alert"),
        (b'{"alerts": [{"status": "pending"}]}', "bad_field"),
        (b'{"alerts": [{"status": "firing", "labels": ["a"]}]}', "bad_field"),
        (b'{"alerts": [{"status": "firing", "startsAt": "yesterday"}]}', "bad_field"),
    ],
)
def test_what_is_not_a_webhook_is_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(body)
    assert caught.value.reason == reason


def test_one_bad_alert_refuses_the_whole_payload_saying_so() -> None:
    payload = alertmanager_payload()
    payload["alerts"].append({"status": "firing", "labels": "oops"})
    with pytest.raises(ParseError, match=r"alert 1: labels must be an object.*nothing was"):
        parse(payload)


def test_more_alerts_than_allowed_are_refused_naming_max_alerts() -> None:
    payload = alertmanager_payload()
    payload["alerts"] *= 3
    with pytest.raises(ParseError, match="max_alerts") as caught:
        parse(payload, max_records=2)
    assert caught.value.reason == "too_many_records"
