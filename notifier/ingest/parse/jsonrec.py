"""The JSON records API: one object, or an array of objects, with the Events API field names.

Fields: type (alarm | clear | error) or its alias kind (alarm | clear | event | log), severity (a
name or a number of the configured scheme), active, code, date, host, serial, source, text (alias
msg), xsl, details. Other fields are kept in `extras`. Strict where the innovaphone form parser is
lenient: the sender is a program that can be fixed, so bad input is refused with the reason, and
one bad record refuses the whole batch (nothing of it is accepted).
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from notifier.ingest.parse.innovaphone import clock_set, read_time
from notifier.ingest.parse.syslog import host_of
from notifier.records import (
    Kind,
    ParseError,
    Record,
    Severity,
    SeverityScheme,
    UnknownSeverity,
    frozen_extras,
    parse_severity,
)

_KINDS = {
    "alarm": Kind.ALARM,
    "clear": Kind.CLEAR,
    "error": Kind.EVENT,
    "event": Kind.EVENT,
    "log": Kind.LOG,
}
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_TEXT_FIELDS = ("code", "host", "serial", "source", "text", "msg", "xsl")
_MAPPED = frozenset({"type", "kind", "severity", "active", "date", "details", *_TEXT_FIELDS})


def parse_json_records(
    body: bytes,
    *,
    received_at: float,
    sender: str,
    receiver: str,
    scheme: SeverityScheme = SeverityScheme.EVENTS_API,
    max_records: int = 10000,
) -> list[Record]:
    """The records in a JSON body, in order; raises only `ParseError` (naming record and field)."""
    value = _load(body)
    if isinstance(value, dict):
        items: list[Any] = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise ParseError(
            "bad_record", f"expected an object or an array of objects, got {_json_type(value)}"
        )
    if not items:
        raise ParseError("empty", "the array holds no records")
    if len(items) > max_records:
        raise ParseError(
            "too_many_records",
            f"{len(items)} records in one request; at most {max_records}: split the batch",
        )

    def build(index: int, item: Any) -> Record:
        raw = body if len(items) == 1 else _compact(item)
        return _record(item, index, raw, received_at, sender, receiver, scheme)

    return all_or_nothing(items, build, "record", "batch")


def all_or_nothing(
    items: Sequence[Any], build: Callable[[int, Any], Record], item_noun: str, whole_noun: str
) -> list[Record]:
    """`build(index, item)` for every item, in order. One `ParseError` refuses them all, its
    message saying so (the sender retries the request as a whole, so none may be kept)."""
    records: list[Record] = []
    for index, item in enumerate(items):
        try:
            records.append(build(index, item))
        except ParseError as e:
            if len(items) == 1:
                raise
            raise ParseError(
                e.reason,
                f"{e}; one bad {item_noun} rejects the whole {whole_noun} of {len(items)}: "
                "nothing was accepted",
            ) from None
    return records


def _load(body: bytes) -> Any:
    try:
        # What decode("utf-8-sig") does (one leading BOM dropped), without its Python codec.
        text = (body[3:] if body.startswith(codecs.BOM_UTF8) else body).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParseError(
            "invalid_utf8", f"the body is not UTF-8: invalid byte at offset {e.start}"
        ) from None
    try:
        if text.startswith("\ufeff"):  # a second BOM: what json.loads says of it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise ParseError(
            "invalid_json", f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise ParseError("invalid_json", "JSON nested too deeply") from None
    except ValueError as e:  # NaN / Infinity, integers with thousands of digits
        raise ParseError("invalid_json", f"invalid JSON: {str(e)[:120]}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# json.loads(text, parse_constant=_no_constant) without a new decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _compact(item: Any) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _record(
    item: Any,
    index: int,
    raw: bytes,
    received_at: float,
    sender: str,
    receiver: str,
    scheme: SeverityScheme,
) -> Record:
    where = f"record {index}"
    if not isinstance(item, dict):
        raise ParseError("bad_record", f"{where} is {_json_type(item)}, expected an object")
    fields: Mapping[str, Any] = {k: v for k, v in item.items() if v is not None}
    strings = {name: _string(fields, name, where) for name in _TEXT_FIELDS}
    extras = {k: _extra(v) for k, v in fields.items() if k not in _MAPPED}

    active = _active(fields, where)
    kind = _kind(fields, where, active)
    if "kind" in fields and "type" in fields:
        extras["type"] = _string(fields, "type", where)
    if active is not None:
        extras["active"] = "true" if active else "false"
    if strings["xsl"]:
        extras["xsl"] = strings["xsl"]
    if strings["text"] and strings["msg"]:
        extras["msg"] = strings["msg"]

    text = strings["text"] or strings["msg"]
    if not (text or strings["code"]):
        raise ParseError("empty", f"{where} has no text, msg or code")
    severity, severity_raw = _severity(fields, where, kind, scheme)
    when = _date(fields, where)
    if when is None and "date" in fields:
        extras["date"] = _extra(fields["date"])
    return Record(
        kind=kind,
        received_at=received_at,
        sender=sender,
        receiver=receiver,
        raw=raw,
        text=text,
        device=strings["host"] or host_of(sender),
        serial=strings["serial"],
        code=strings["code"],
        severity=severity,
        severity_raw=severity_raw,
        source=strings["source"],
        details=_details(fields, where),
        device_time=when,
        extras=frozen_extras(extras),
    )


def _wrong_type(where: str, name: str, expected: str, value: Any) -> ParseError:
    return ParseError(
        "bad_field", f"{where}: field {name!r} must be {expected}, got {_json_type(value)}"
    )


def _string(fields: Mapping[str, Any], name: str, where: str) -> str:
    """A text field; numbers are taken as their text (serials and codes often are)."""
    value = fields.get(name, "")
    if isinstance(value, str):
        return value if name in ("text", "msg") else value.strip()
    if name == "code" and isinstance(value, int) and not isinstance(value, bool):
        # Codes are 32-bit hex strings such as 0x00010002: the same alarm must get the same key.
        return f"0x{value:08x}" if 0 <= value < 1 << 32 else str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _wrong_type(where, name, "a string", value)


def _active(fields: Mapping[str, Any], where: str) -> bool | None:
    if "active" not in fields:
        return None
    value = fields["active"]
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str) and str(value).strip().lower() in _TRUE:
        return _TRUE[str(value).strip().lower()]
    raise _wrong_type(where, "active", "true or false", value)


def _kind(fields: Mapping[str, Any], where: str, active: bool | None) -> Kind:
    name = "kind" if "kind" in fields else "type" if "type" in fields else ""
    if not name:
        # No type: an alarm state when `active` says so, else a one-shot event.
        return Kind.EVENT if active is None else Kind.ALARM if active else Kind.CLEAR
    value = fields[name]
    if not isinstance(value, str):
        raise _wrong_type(where, name, "a string", value)
    kind = _KINDS.get(value.strip().lower())
    if kind is None:
        raise ParseError(
            "unknown_kind",
            f"{where}: {name} {value[:40]!r} is not one of alarm, clear, error, event, log",
        )
    # An alarm that is no longer active is its clear.
    return Kind.CLEAR if kind is Kind.ALARM and active is False else kind


def _severity(
    fields: Mapping[str, Any], where: str, kind: Kind, scheme: SeverityScheme
) -> tuple[Severity, str]:
    value = fields.get("severity")
    if value is None:
        return (Severity.INDETERMINATE if kind is Kind.ALARM else Severity.INFO), ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _wrong_type(where, "severity", "a name or a number", value)
    try:
        return parse_severity(value, scheme), str(value)
    except UnknownSeverity as e:
        raise ParseError("unknown_severity", f"{where}: {e}") from None


def _date(fields: Mapping[str, Any], where: str) -> float | None:
    """Unix seconds, ``YYYYMMDD-HHMMSS`` (UTC) or ISO 8601; None for a clock that was not set."""
    value = fields.get("date")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _wrong_type(where, "date", "unix seconds or a date string", value)
    text = str(value).strip()
    try:
        return clock_set(read_time(text))
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ParseError(
            "bad_field",
            f"{where}: field 'date' {text[:40]!r} is not unix seconds, YYYYMMDD-HHMMSS or ISO 8601",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return clock_set(parsed.timestamp())


def _details(fields: Mapping[str, Any], where: str) -> str:
    value = fields.get("details", "")
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return _compact(value).decode("utf-8")
    raise _wrong_type(where, "details", "a string (an XML fragment) or JSON", value)


def _extra(value: Any) -> str:
    return value if isinstance(value, str) else _compact(value).decode("utf-8")
