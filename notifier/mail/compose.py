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
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address, Group
from email.message import EmailMessage
from functools import cache

import jinja2

from notifier.mail.text import body_text, format_duration, header_text, iso_utc, one_line
from notifier.mail.transport import Outgoing
from notifier.records import Kind, Record, Severity

SUBJECT_LIMIT = 180  # characters; long subjects are cut on screens and by some servers anyway
_IDS_IN_HEADER = 8  # more record ids than this: a count and a hash instead
_DEVICES_IN_SUBJECT = 3
_DEVICES_IN_HEADER = 5


class Reason(enum.StrEnum):
    """Why a record is in a mail (the dispatcher decides; the mail says it)."""

    NEW = "new"  # an alarm was set
    REPEAT = "repeat"  # an alarm is still active after the repeat interval
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
    """

    record: Record
    reason: Reason
    active_since: float | None = None
    repeat_count: int = 0


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


def status_label(item: MailItem) -> str:
    """The bracketed word of a subject for one record: ``ALARM Major``, ``CLEARED``, ``EVENT``."""
    record = item.record
    match item.reason:
        case Reason.NEW:
            return f"ALARM {_severity_name(record)}".rstrip()
        case Reason.REPEAT:
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


def describe(record: Record, text_limit: int | None = None) -> str:
    """``gw01 RELAY/RECH: Registration down (0x00010002)``, each part only when known."""
    text = header_text(record.text, limit=text_limit) or "(no text)"
    source = header_text(record.source, limit=40)
    code = header_text(record.code, limit=40)
    head = header_text(_device(record), limit=60)
    head += f" {source}: " if source else ": "
    return f"{head}{text}" + (f" ({code})" if code else "")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 or word == "CLEARED" else f"{count} {word}S"


def _first_distinct(values: Iterable[str], show: int) -> tuple[list[str], int]:
    distinct = list(dict.fromkeys(v for v in values if v))
    return distinct[:show], max(len(distinct) - show, 0)


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
    groups = {"ALARM": 0, "CLEARED": 0, "EVENT": 0, "LOG": 0, "TEST": 0}
    for item in items:
        if item.reason in (Reason.NEW, Reason.REPEAT):
            groups["ALARM"] += 1
        elif item.reason in (Reason.CLEAR, Reason.CLEAR_UNKNOWN):
            groups["CLEARED"] += 1
        else:
            groups[item.reason.value.upper()] += 1
    counts = [_plural(n, word) for word, n in groups.items() if n]
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
    active: str
    repeat_count: int
    record_id: str
    kind: str


def _row(item: MailItem) -> Row:
    record = item.record
    active = active_for(item)
    return Row(
        status=status_label(item),
        reason=reason_text(item),
        time=iso_utc(record.time),
        device_time=iso_utc(record.device_time),
        received=iso_utc(record.received_at),
        device=one_line(_device(record)),
        serial=one_line(record.serial),
        code=one_line(record.code),
        severity=_severity_name(record) or "not sent",
        severity_raw=one_line(record.severity_raw),
        source=one_line(record.source),
        text=body_text(record.text),
        text_line=one_line(record.text),
        details=body_text(record.details),
        sender=one_line(record.sender),
        receiver=one_line(record.receiver),
        active=format_duration(active) if active is not None else "",
        repeat_count=item.repeat_count,
        record_id=one_line(record.id),
        kind=record.kind.value,
    )


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("notifier.mail", "templates"),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


TEMPLATES = ("mail.txt.j2", "mail.html.j2")


def load_templates() -> None:
    """Compile the mail templates now (they are compiled lazily otherwise).

    Raises `jinja2.TemplateError` naming the template that does not compile."""
    env = _templates()
    for name in TEMPLATES:
        env.get_template(name)


def render_bodies(
    items: Sequence[MailItem],
    *,
    subject: str,
    omitted: int = 0,
    dropped: Mapping[Kind, int] | None = None,
    instance: str = "notifier",
    now: float,
) -> tuple[str, str]:
    """The text and the HTML body."""
    context = {
        "subject": subject,
        "rows": [_row(item) for item in items],
        "digest": len(items) > 1 or omitted > 0,
        "omitted": omitted,
        "dropped": [(Kind(kind).value, n) for kind, n in (dropped or {}).items() if n > 0],
        "instance": one_line(instance),
        "generated": iso_utc(now),
    }
    env = _templates()
    return (
        env.get_template("mail.txt.j2").render(context),
        env.get_template("mail.html.j2").render(context),
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
    now: float | None = None,
) -> EmailMessage:
    """One mail about `items` (one record, or a digest with one row per record).

    `max_shown`: list at most this many records in the body; the subject, the Message-ID and
    the headers still count every item, and the body says how many more are not shown.

    The message carries Bcc recipients in a Bcc header for the envelope; transports remove it
    before sending or writing (never serialise it yourself with `as_bytes` for a recipient).

    `omitted`: records the caller left out to respect its per-mail maximum ("N more records not
    shown"). `dropped`: records lost because a queue was full, by kind (a notice in the body).
    Raises ValueError for an empty `items` or an invalid address in `envelope`.
    """
    if not items:
        raise ValueError("compose needs at least one record")
    when = time.time() if now is None else now
    subject = subject_for(items, omitted, instance)
    shown = items if max_shown is None else items[: max(max_shown, 1)]
    text, html = render_bodies(
        shown,
        subject=subject,
        omitted=omitted + len(items) - len(shown),
        dropped=dropped,
        instance=instance,
        now=when,
    )
    message = EmailMessage(policy=email.policy.default)
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
