"""Turning records into one e-mail: subject, safe headers, a text and an HTML part.

Pure: no I/O, no clock unless `now` is left out. Every piece of device text passes through
`text.header_text` before it reaches a header and `text.body_text` before it reaches a body,
and the message is built with `email.policy.default`, which refuses CR/LF in header values as a
second line of defence.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import enum
import functools
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email import headerregistry
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address, Group
from email.message import EmailMessage
from functools import cache
from typing import Any

import jinja2

from notifier.log import RateLimiter, get_logger
from notifier.mail.style import TEMPLATE_OPTIONS, MailStyle
from notifier.mail.text import body_text, format_duration, format_time, header_text, one_line
from notifier.mail.transport import Outgoing
from notifier.records import Kind, Record, Severity

log = get_logger("notifier.mail")

SUBJECT_LIMIT = 180  # characters; long subjects are cut on screens and by some servers anyway
_IDS_IN_HEADER = 8  # more record ids than this: a count and a hash instead
_DEVICES_IN_SUBJECT = 3
_DEVICES_IN_HEADER = 5


class Reason(enum.StrEnum):
    """Why a record is in a mail (the dispatcher decides; the mail says it)."""

    NEW = "new"  # an alarm was set
    REPEAT = "repeat"  # an alarm is still active after the repeat interval
    SILENCE_ENDED = "silence_ended"  # an alarm muted by a silence is still active as it ends
    CLEAR = "clear"  # an alarm we mailed was cleared
    CLEAR_UNKNOWN = "clear_unknown"  # a clear for an alarm whose set we never saw
    EVENT = "event"
    LOG = "log"
    TEST = "test"


@dataclass(frozen=True)
class MailItem:
    """One record and why it is mailed.

    `active_since`: when the alarm was set, unix seconds on the same clock as `Record.time` (the
    set record's `.time`); for a clear the mail shows how long the alarm was active.
    `repeat_count`: how many times the device sent this alarm while it was active (REPEAT,
    CLEAR); devices re-send an active alarm about every 30 minutes.
    `set_severity`: for a clear, the severity the alarm was set with (a clear often carries
    another one); None when unknown, then the clear's own is shown.
    `thread_id`: for a clear, the Message-ID of the mail that reported the set ("" unknown):
    the clear's mail replies to it, so mail clients show the two as one thread.
    `acknowledged`: for a clear, "bob at 2026-11-30 12:00 UTC: on it" when an operator had
    acknowledged the alarm.
    """

    record: Record
    reason: Reason
    active_since: float | None = None
    repeat_count: int = 0
    set_severity: Severity | None = None
    thread_id: str = ""
    acknowledged: str = ""  # for a clear: who acknowledged the alarm, when, and their comment


_MSG_ID = re.compile(r"<[!-;=?-~]+>\Z")  # <...>: printable ASCII, no space, no < or >

# A digest's References lists at most this many set mails (headers stay a sane size).
MAX_REFERENCES = 20


def thread_headers(items: Sequence[MailItem]) -> dict[str, str]:
    """In-Reply-To / References of a mail about `items`; pure.

    A mail about one clear replies to its alarm's mail (both headers: clients thread by either).
    A digest references the set mails of the clears it reports, at most `MAX_REFERENCES`, and
    replies to none of them: it belongs to no single thread."""
    # Stored state is read back from a database: only a well-formed id goes into a header.
    ids = list(
        dict.fromkeys(
            i.thread_id for i in items if i.reason is Reason.CLEAR and _MSG_ID.match(i.thread_id)
        )
    )
    if not ids:
        return {}
    if len(items) == 1:
        return {"In-Reply-To": ids[0], "References": ids[0]}
    return {"References": " ".join(ids[:MAX_REFERENCES])}


# Configured addresses repeat on every mail; parsing them is a good part of composing one.
@functools.lru_cache(maxsize=256)
def parse_mailbox(entry: str) -> Address:
    """One address as configured: ``Ops Team <ops@example.com>`` or ``ops@example.com``.

    Raises ValueError naming the entry when it is not exactly one valid address (a list, a
    missing domain, a control character). Non-ASCII local parts are allowed (they need a server
    offering SMTPUTF8).
    """
    if header_text(entry) != entry.strip():
        raise ValueError(f"mail address {entry!r} contains control characters")
    parsed = email.policy.default.header_factory("To", entry)
    addresses = parsed.addresses
    defects = [d for d in parsed.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if len(addresses) != 1 or defects or not addresses[0].domain or not addresses[0].username:
        raise ValueError(
            f"not one valid mail address: {entry!r} (write it as name@domain or "
            "'Name <name@domain>'; list several addresses as separate entries)"
        )
    found = addresses[0]
    return Address(
        display_name=header_text(found.display_name), username=found.username, domain=found.domain
    )


@dataclass(frozen=True)
class Envelope:
    """Who a mail is from and to. `to`, `cc`, `bcc`: entries as `parse_mailbox` takes them.

    Bcc recipients get the mail (they are in `recipients`, the SMTP envelope) but never appear
    in a header.
    """

    sender: str  # the address
    sender_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()

    @functools.cached_property
    def from_address(self) -> Address:
        address = parse_mailbox(self.sender)
        return Address(
            display_name=header_text(self.sender_name, limit=100),
            username=address.username,
            domain=address.domain,
        )

    @property
    def mail_from(self) -> str:
        return self.from_address.addr_spec

    @functools.cached_property
    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient (To, Cc, Bcc), each once, in order."""
        seen: dict[str, None] = {}
        for entry in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(parse_mailbox(entry).addr_spec, None)
        return tuple(seen)

    @property
    def domain(self) -> str:
        return self.from_address.domain


# BaseHeader as a base too: the registry mixes it in anyway, and so mypy sees `fold` and `name`.
class _SubjectHeader(headerregistry.UniqueUnstructuredHeader, headerregistry.BaseHeader):  # type: ignore[misc]
    """A Subject that never leaves its first line empty.

    Python's folder moves a whole value that fits on a line of its own (70 to 77 characters)
    to the next line: ``Subject:`` CRLF `` value``, which readers show with a leading space.
    Here the value starts after ``Subject: `` and that line may run to 87 characters, far below
    the 998 that RFC 5322 allows; longer values fold inside, between words, as before."""

    def fold(self, *, policy: email.policy.Policy) -> str:
        folded = super().fold(policy=policy)
        name = self.name
        empty_first = f"{name}:{policy.linesep} "
        if folded.startswith(empty_first):
            folded = f"{name}: " + folded[len(empty_first) :]
        return folded


_HEADERS = headerregistry.HeaderRegistry()
_HEADERS.map_to_type("subject", _SubjectHeader)
_POLICY = email.policy.default.clone(header_factory=_HEADERS)

_DOMAIN_SAFE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$")


def message_id_for(record_ids: Iterable[str], domain: str, *, salt: str = "") -> str:
    """A Message-ID derived from the record ids (order does not matter) and `salt` only.

    Stable across retries and restarts, so a mail sent twice after a crash is recognisable as the
    same mail. `salt` separates different mails about the same records (e.g. other recipients).
    """
    digest = hashlib.sha256()
    for record_id in sorted(record_ids):
        digest.update(record_id.encode("utf-8", "surrogatepass") + b"\n")
    digest.update(b"\0" + salt.encode("utf-8", "surrogatepass"))
    try:
        host = domain.strip().lower().encode("idna").decode("ascii")
    except UnicodeError:
        host = ""
    if not _DOMAIN_SAFE.match(host):
        host = "notifier.invalid"
    return f"<{digest.hexdigest()[:40]}.notifier@{host}>"


def _severity_name(record: Record) -> str:
    """The severity as a mail shows it; "" when the sender gave none. Receivers file an alarm
    without one as INDETERMINATE, and a mail must not present that as the device's word."""
    if record.severity is Severity.INDETERMINATE and not record.severity_raw:
        return ""
    return record.severity.value.capitalize()


def shown_severity(item: MailItem) -> tuple[str, str]:
    """(the severity a mail shows, the sender's raw value when it says something else).

    A clear shows the severity its alarm was set with: the people reading it were told
    "Critical", whatever the clear itself carries. The raw value only when it differs from the
    name ("Major (sent as 2)", never "Major (sent as major)")."""
    if item.reason is Reason.CLEAR and item.set_severity is not None:
        if item.set_severity is Severity.INDETERMINATE:
            return "", ""
        return item.set_severity.value.capitalize(), ""
    record = item.record
    raw = record.severity_raw.strip()
    same = raw.lower() in ("", record.severity.value)
    return _severity_name(record), "" if same else raw


def status_label(item: MailItem) -> str:
    """The bracketed word of a subject for one record: ``ALARM Major``, ``CLEARED``, ``EVENT``."""
    record = item.record
    match item.reason:
        case Reason.NEW:
            return f"ALARM {_severity_name(record)}".rstrip()
        case Reason.REPEAT | Reason.SILENCE_ENDED:
            return f"ALARM {_severity_name(record)}".rstrip() + ", still active"
        case Reason.CLEAR | Reason.CLEAR_UNKNOWN:
            return "CLEARED"
        case Reason.EVENT:
            return "EVENT"
        case Reason.LOG:
            return "LOG"
        case Reason.TEST:
            return "TEST"


def active_for(item: MailItem) -> float | None:
    """Seconds the alarm was active when cleared (or so far, when repeated); None if unknown."""
    if item.active_since is None:
        return None
    seconds = item.record.time - item.active_since
    if seconds < 0:  # device clock and our clock disagree: fall back to when we received it
        seconds = item.record.received_at - item.active_since
    return seconds if seconds >= 0 else None


def reason_text(item: MailItem) -> str:
    """The reason as a phrase for the body."""
    active = active_for(item)
    match item.reason:
        case Reason.NEW:
            return "alarm set"
        case Reason.REPEAT:
            times = f", sent {item.repeat_count} time(s) by the device" if item.repeat_count else ""
            since = f" for {format_duration(active)}" if active is not None else ""
            return f"alarm still active{since}{times}"
        case Reason.SILENCE_ENDED:
            since = f" for {format_duration(active)}" if active is not None else ""
            return f"alarm still active{since} as its silence ended (not mailed before)"
        case Reason.CLEAR:
            return f"alarm cleared after {format_duration(active)}" if active else "alarm cleared"
        case Reason.CLEAR_UNKNOWN:
            return "alarm cleared (notifier had not seen it set)"
        case Reason.EVENT:
            return "event"
        case Reason.LOG:
            return "log line"
        case Reason.TEST:
            return "test mail"


def _device(record: Record) -> str:
    return record.device or record.sender or "unknown device"


def _source(record: Record) -> str:
    """The source as a mail shows it. An alert's source is its fingerprint, which keys the
    alarm but means nothing to a reader: its ``job`` label is shown instead."""
    return record.labels.get("job", "") if record.labels else record.source


def describe(record: Record, text_limit: int | None = None) -> str:
    """``gw01 RELAY/RECH: Registration down (0x00010002)``, each part only when known."""
    text = header_text(record.text, limit=text_limit) or "(no text)"
    source = header_text(_source(record), limit=40)
    code = header_text(record.code, limit=40)
    head = header_text(_device(record), limit=60)
    head += f" {source}: " if source else ": "
    return f"{head}{text}" + (f" ({code})" if code else "")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 or word == "CLEARED" else f"{count} {word}S"


def _first_distinct(values: Iterable[str], show: int) -> tuple[list[str], int]:
    distinct = list(dict.fromkeys(v for v in values if v))
    return distinct[:show], max(len(distinct) - show, 0)


def count_items(items: Iterable[MailItem]) -> dict[str, int]:
    """How many records of a mail are alarms (set or still active), clears, events, ..."""
    groups = {"alarm": 0, "cleared": 0, "event": 0, "log": 0, "test": 0}
    for item in items:
        if item.reason in (Reason.NEW, Reason.REPEAT, Reason.SILENCE_ENDED):
            groups["alarm"] += 1
        elif item.reason in (Reason.CLEAR, Reason.CLEAR_UNKNOWN):
            groups["cleared"] += 1
        else:
            groups[item.reason.value] += 1
    return groups


def subject_for(items: Sequence[MailItem], omitted: int = 0, instance: str = "notifier") -> str:
    """The subject: one record (``[ALARM Major] gw01 RELAY/RECH: Registration down (0x..)``,
    ``[CLEARED] ... (active 1h 5m)``) or a digest (``[3 ALARMS, 1 CLEARED] gw01, gw02``)."""
    if len(items) == 1 and not omitted:
        item = items[0]
        if item.reason is Reason.TEST:
            return header_text(f"[TEST] notifier test mail from {instance}", limit=SUBJECT_LIMIT)
        label = f"[{status_label(item)}] "
        active = active_for(item)
        tail = (
            f" (active {format_duration(active)})"
            if item.reason is Reason.CLEAR and active is not None
            else ""
        )
        bare = describe(item.record.evolve(text=""))
        room = max(SUBJECT_LIMIT - len(label) - len(tail) - len(bare) + len("(no text)"), 20)
        return header_text(label + describe(item.record, room) + tail, limit=SUBJECT_LIMIT)
    counts = [_plural(n, word.upper()) for word, n in count_items(items).items() if n]
    if omitted:
        counts.append(f"+{omitted} MORE")
    devices, more = _first_distinct(
        (header_text(_device(i.record), limit=60) for i in items), _DEVICES_IN_SUBJECT
    )
    who = ", ".join(devices) + (f" and {more} more" if more else "")
    return header_text(f"[{', '.join(counts)}] {who}", limit=SUBJECT_LIMIT)


@dataclass(frozen=True)
class Row:
    """One record as the templates show it; every string already made safe for a body."""

    status: str
    reason: str
    time: str
    device_time: str
    received: str
    device: str
    serial: str
    code: str
    severity: str
    severity_raw: str
    source: str
    text: str
    text_line: str
    details: str
    sender: str
    receiver: str
    active: str  # clears only: how long the alarm was active
    set_at: str  # clears and reminders: when the alarm was set
    repeat_count: int
    record_id: str
    kind: str
    reason_code: str
    acknowledged: str = ""  # clears of an acknowledged alarm: by whom, when, why
    labels: tuple[tuple[str, str], ...] = ()  # an alert's labels (Alertmanager, Grafana)


def _row(item: MailItem, zone: dt.tzinfo) -> Row:
    record = item.record
    # A new alarm has been active for no time: "Active for" belongs on clears only.
    active = active_for(item) if item.reason is Reason.CLEAR else None
    was_set = item.reason in (Reason.CLEAR, Reason.REPEAT, Reason.SILENCE_ENDED)
    severity, severity_raw = shown_severity(item)
    return Row(
        status=status_label(item),
        reason=reason_text(item),
        time=format_time(record.time, zone),
        device_time=format_time(record.device_time, zone),
        received=format_time(record.received_at, zone),
        device=one_line(_device(record)),
        serial=one_line(record.serial),
        code=one_line(record.code),
        severity=severity or "not sent",
        severity_raw=one_line(severity_raw),
        source=one_line(_source(record)),
        text=body_text(record.text),
        text_line=one_line(record.text),
        details=body_text(record.details),
        sender=one_line(record.sender),
        receiver=one_line(record.receiver),
        active=format_duration(active) if active is not None else "",
        set_at=format_time(item.active_since, zone) if was_set else "",
        repeat_count=item.repeat_count,
        record_id=one_line(record.id),
        kind=record.kind.value,
        labels=tuple((one_line(k), one_line(v)) for k, v in record.labels.items()),
        reason_code=item.reason.value,
        acknowledged=one_line(item.acknowledged),
    )


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("notifier.mail", "templates"),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        **TEMPLATE_OPTIONS,
    )


TEMPLATES = ("mail.txt.j2", "mail.html.j2")
_BUILT_IN = {"text": "mail.txt.j2", "html": "mail.html.j2"}
_TEMPLATE_KEY = {
    "subject": "subject_template",
    "text": "body_template",
    "html": "body_html_template",
}
_template_log = RateLimiter(burst=1, period_s=300.0)


def load_templates() -> None:
    """Compile the mail templates now (they are compiled lazily otherwise).

    Raises `jinja2.TemplateError` naming the template that does not compile."""
    env = _templates()
    for name in TEMPLATES:
        env.get_template(name)


def mail_context(
    items: Sequence[MailItem],
    *,
    subject: str,
    omitted: int = 0,
    dropped: Mapping[Kind, int] | None = None,
    instance: str = "notifier",
    style: MailStyle,
    now: float,
    counted: Sequence[MailItem] | None = None,
) -> dict[str, Any]:
    """What every template sees (the README lists it): the values, already safe for a body.

    `items`: the records listed; `counted`: every record the mail reports (default: `items`),
    for `counts`."""
    rows = [_row(item, style.zone) for item in items]
    return {
        "subject": subject,
        "rows": rows,
        "row": rows[0],
        "digest": len(items) > 1 or omitted > 0,
        "count": len(items) + omitted,
        "counts": count_items(items if counted is None else counted),
        "omitted": omitted,
        "dropped": [(Kind(kind).value, n) for kind, n in (dropped or {}).items() if n > 0],
        "route": one_line(style.route),
        "instance": one_line(instance),
        "host": one_line(style.host),
        "generated": format_time(now, style.zone),
        "timezone": style.zone_name,
    }


def render_part(part: str, context: Mapping[str, Any], style: MailStyle) -> str:
    """One part ("subject", "text", "html") from the route's template, or the built-in one.

    A route template that fails on this mail's values costs the reader the route's layout, never
    the mail: the built-in one is used and the failure logged (`check-config` renders samples,
    so this is rare)."""
    custom = style.templates.part(part)
    if custom is not None:
        try:
            return custom.render(context)
        except Exception as e:  # any error in an operator's template: fall back, never lose
            _template_failed(style.route, part, e)
    if part == "subject":
        return str(context["subject"])
    return _templates().get_template(_BUILT_IN[part]).render(context)


def _template_failed(route: str, part: str, error: Exception) -> None:
    allowed, suppressed = _template_log.allow(f"{route}/{part}")
    if allowed:
        log.warning(
            "route template failed: this mail uses the built-in one",
            route=route,
            key=_TEMPLATE_KEY[part],
            error=f"{type(error).__name__}: {error}",
            suppressed=suppressed,
            hint=f"try it with `notifier render --route {route} --sample alarm|clear|digest`",
        )


def _record_ids_header(ids: Sequence[str]) -> str:
    safe = [header_text(i, limit=64) for i in ids]
    joined = " ".join(safe)
    if len(safe) <= _IDS_IN_HEADER and len(joined) <= 600:
        return joined
    digest = hashlib.sha256("\n".join(ids).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{len(ids)} records, sha256 {digest[:32]}"


def compose(
    items: Sequence[MailItem],
    envelope: Envelope,
    *,
    omitted: int = 0,
    max_shown: int | None = None,
    dropped: Mapping[Kind, int] | None = None,
    instance: str = "notifier",
    style: MailStyle | None = None,
    now: float | None = None,
) -> EmailMessage:
    """One mail about `items` (one record, or a digest with one row per record).

    `max_shown`: list at most this many records in the body; the subject, the Message-ID and
    the headers still count every item, and the body says how many more are not shown.

    The message carries Bcc recipients in a Bcc header for the envelope; transports remove it
    before sending or writing (never serialise it yourself with `as_bytes` for a recipient).

    `omitted`: records the caller left out to respect its per-mail maximum ("N more records not
    shown"). `dropped`: records lost because a queue was full, by kind (a notice in the body).
    `style`: the route's templates, the time zone of the times, the host (default: built-in
    templates, UTC, this host). `instance`: the notifier instance named in the footer.
    Raises ValueError for an empty `items` or an invalid address in `envelope`.
    """
    if not items:
        raise ValueError("compose needs at least one record")
    when = time.time() if now is None else now
    style = style or MailStyle()
    shown = items if max_shown is None else items[: max(max_shown, 1)]
    context = mail_context(
        shown,
        subject=subject_for(items, omitted, instance),
        omitted=omitted + len(items) - len(shown),
        dropped=dropped,
        instance=instance,
        style=style,
        now=when,
        counted=items,
    )
    # One line whatever the template made of it; empty: the built-in subject.
    subject = header_text(render_part("subject", context, style), limit=SUBJECT_LIMIT)
    context["subject"] = subject = subject or context["subject"]
    text = render_part("text", context, style)
    html = render_part("html", context, style)
    message = EmailMessage(policy=_POLICY)
    message["From"] = envelope.from_address
    if envelope.to:
        message["To"] = [parse_mailbox(entry) for entry in envelope.to]
    else:
        message["To"] = Group("undisclosed-recipients")
    if envelope.cc:
        message["Cc"] = [parse_mailbox(entry) for entry in envelope.cc]
    if envelope.bcc:
        # Kept on the object so that the SMTP envelope can be read from the message alone
        # (`Outgoing.of`); every transport flattens with aiosmtplib's `flatten_message`, which
        # removes Bcc, so it never reaches a server or an outbox file.
        message["Bcc"] = [parse_mailbox(entry) for entry in envelope.bcc]
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(dt.datetime.fromtimestamp(when, dt.UTC))
    ids = [item.record.id for item in items]
    message["Message-ID"] = message_id_for(
        ids, envelope.domain, salt=",".join(sorted(envelope.recipients))
    )
    for name, value in thread_headers(items).items():
        message[name] = value
    # RFC 3834: machines must not answer this mail (vacation replies, bounces to bounces).
    message["Auto-Submitted"] = "auto-generated"
    # Exchange / Outlook honour this one rather than Auto-Submitted for out-of-office replies.
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Notifier-Kind"] = ",".join(dict.fromkeys(i.record.kind.value for i in items))
    message["X-Notifier-Reason"] = ",".join(dict.fromkeys(i.reason.value for i in items))
    devices, more = _first_distinct(
        (header_text(_device(i.record), limit=60) for i in items), _DEVICES_IN_HEADER
    )
    message["X-Notifier-Device"] = ", ".join(devices) + (f" and {more} more" if more else "")
    message["X-Notifier-Record-Ids"] = _record_ids_header(ids)
    # Quoted-printable keeps the body 7-bit and its lines short whatever the device sent, so the
    # mail needs neither 8BITMIME nor trust in the server's line length limit.
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message


def outgoing(message: EmailMessage, envelope: Envelope) -> Outgoing:
    """The message with its SMTP envelope (including Bcc recipients), ready for a transport."""
    return Outgoing(message, envelope.mail_from, envelope.recipients)
