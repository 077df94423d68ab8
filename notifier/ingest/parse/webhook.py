"""Alertmanager and Grafana webhooks: one JSON payload, one Record per alert.

Both send the same alert list (Alertmanager's webhook payload version 4; Grafana's contact point
adds `title`, `message`, `state`, `orgId` and per-alert links). Each alert becomes:

- a firing alert an alarm, a resolved one its clear;
- `source` the alert's fingerprint, so that set and clear pair up and two alerts never share an
  alarm key (device, code, source) — the mail shows the job and the labels instead;
- `device` the ``instance`` label (else ``job``, else the sender's address), `code` the
  ``alertname`` label, `severity` the ``severity`` label (a name, or a number of the configured
  scheme), `text` the ``summary`` annotation (else ``description``, else the alert name);
- `labels` every label; `details` every annotation and the links (generator, silence, dashboard,
  panel, the Alertmanager's external URL), one ``name: value`` a line.

Pure: raises only `ParseError`, and one bad alert refuses the whole payload (nothing of it is
accepted), since the sender retries a refused notification as a whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from notifier.ingest.parse.jsonrec import _compact, _json_type, _load, all_or_nothing
from notifier.ingest.parse.syslog import host_of
from notifier.records import (
    Kind,
    ParseError,
    Record,
    Severity,
    SeverityScheme,
    UnknownSeverity,
    frozen_extras,
    new_record,
    parse_severity,
)

ALERTMANAGER = "alertmanager"
GRAFANA = "grafana"

_KINDS = {"firing": Kind.ALARM, "resolved": Kind.CLEAR}
# Per-alert links, in the order the details show them (Grafana adds the last four).
_ALERT_LINKS = ("generatorURL", "silenceURL", "dashboardURL", "panelURL", "imageURL")
# Alertmanager and Grafana write "no end yet" as Go's zero time.
_ZERO_TIME_YEAR = 1


def parse_webhook(
    body: bytes,
    *,
    received_at: float,
    sender: str,
    receiver: str,
    scheme: SeverityScheme = SeverityScheme.EVENTS_API,
    max_records: int = 10_000,
) -> list[Record]:
    """The alerts of a webhook payload as Records, in order.

    Raises `ParseError` (naming the alert and field) for a body that is not a payload.
    """
    payload = _load(body)
    if not isinstance(payload, dict):
        raise ParseError(
            "bad_payload", f"expected a webhook payload (an object), got {_json_type(payload)}"
        )
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ParseError(
            "bad_payload",
            f"the payload has no 'alerts' array (got {_json_type(alerts)}): "
            "is this an Alertmanager or Grafana webhook?",
        )
    if not alerts:
        raise ParseError("empty", "the payload holds no alerts")
    if len(alerts) > max_records:
        raise ParseError(
            "too_many_records",
            f"{len(alerts)} alerts in one payload; at most {max_records}: "
            "set max_alerts in the sender's webhook config",
        )
    context = _payload_links(payload)
    fallback_status = payload.get("status")

    def build(index: int, alert: Any) -> Record:
        return _record(
            alert, fallback_status, context, received_at, sender, receiver, scheme, index
        )

    return all_or_nothing(alerts, build, "alert", "payload")


def _record(
    alert: Any,
    fallback_status: Any,
    context: list[tuple[str, str]],
    received_at: float,
    sender: str,
    receiver: str,
    scheme: SeverityScheme,
    index: int,
) -> Record:
    where = f"alert {index}"
    if not isinstance(alert, dict):
        raise ParseError("bad_alert", f"{where} is {_json_type(alert)}, expected an object")
    kind = _kind(alert.get("status", fallback_status), where)
    labels = _string_map(alert, "labels", where)
    annotations = _string_map(alert, "annotations", where)
    fingerprint = _text(alert, "fingerprint", where) or fingerprint_of(labels)
    severity, severity_raw, extras = _severity(labels.get("severity", ""), kind, scheme)
    extras["fingerprint"] = fingerprint
    text = (
        annotations.get("summary")
        or annotations.get("description")
        or labels.get("alertname")
        or "(no summary)"
    )
    return new_record(
        kind,
        received_at,
        sender,
        receiver,
        _compact(alert),
        text=text,
        device=labels.get("instance") or labels.get("job") or host_of(sender),
        code=labels.get("alertname", ""),
        severity=severity,
        severity_raw=severity_raw,
        source=fingerprint,
        details=_details(annotations, alert, where, context),
        device_time=_when(alert, kind, where),
        extras=frozen_extras(extras),
        labels=frozen_extras(dict(sorted(labels.items()))),
    )


def fingerprint_of(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit key from the label set, for senders that send no fingerprint."""
    digest = hashlib.sha256()
    for name, value in sorted(labels.items()):
        digest.update(f"{name}\0{value}\0".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def _kind(status: Any, where: str) -> Kind:
    kind = _KINDS.get(status) if isinstance(status, str) else None
    if kind is None:
        raise ParseError(
            "bad_field", f"{where}: status {str(status)[:40]!r} is neither 'firing' nor 'resolved'"
        )
    return kind


def _string_map(alert: Mapping[str, Any], name: str, where: str) -> dict[str, str]:
    value = alert.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParseError("bad_field", f"{where}: {name} must be an object, got {_json_type(value)}")
    return {
        str(k): v if isinstance(v, str) else _compact(v).decode("utf-8") for k, v in value.items()
    }


def _text(alert: Mapping[str, Any], name: str, where: str) -> str:
    value = alert.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParseError("bad_field", f"{where}: {name} must be a string, got {_json_type(value)}")
    return value.strip()


def _severity(
    value: str, kind: Kind, scheme: SeverityScheme
) -> tuple[Severity, str, dict[str, str]]:
    """The ``severity`` label read as a name or a number; an unknown one is kept and noted."""
    if not value:
        return (Severity.INDETERMINATE if kind is Kind.ALARM else Severity.INFO), "", {}
    try:
        return parse_severity(value, scheme), value, {}
    except UnknownSeverity as e:
        # A label the team chose ("page", "sev1"): the alert still counts, routes can match the
        # label itself, and the unknown value is counted as a degraded record.
        return Severity.INDETERMINATE, value, {"severity_error": str(e)}


def _when(alert: Mapping[str, Any], kind: Kind, where: str) -> float | None:
    """When the alert fired (a firing alert) or ended (a resolved one); None when not said."""
    ends = _time(alert, "endsAt", where) if kind is Kind.CLEAR else None
    return ends if ends is not None else _time(alert, "startsAt", where)


def _time(alert: Mapping[str, Any], name: str, where: str) -> float | None:
    text = _text(alert, name, where)
    if not text:
        return None
    try:
        # Go writes nanoseconds; Python reads at most microseconds of them.
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ParseError(
            "bad_field", f"{where}: {name} {text[:40]!r} is not an RFC 3339 time"
        ) from None
    if parsed.year == _ZERO_TIME_YEAR:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _payload_links(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What every alert of the payload shares: the sender's own address (to silence there)."""
    url = payload.get("externalURL")
    return [("externalURL", url)] if isinstance(url, str) and url else []


def _details(
    annotations: Mapping[str, str],
    alert: Mapping[str, Any],
    where: str,
    context: list[tuple[str, str]],
) -> str:
    lines = [f"{name}: {value}" for name, value in sorted(annotations.items())]
    if value_string := _text(alert, "valueString", where):
        lines.append(f"valueString: {value_string}")
    if isinstance(values := alert.get("values"), dict) and values:
        lines.append(f"values: {_compact(values).decode('utf-8')}")
    for name in _ALERT_LINKS:
        if link := _text(alert, name, where):
            lines.append(f"{name}: {link}")
    lines += [f"{name}: {value}" for name, value in context]
    return "\n".join(lines)
