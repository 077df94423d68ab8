"""What people see in the mail: subject, headers, bodies, digests."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from aiosmtplib.email import flatten_message

from notifier.mail.compose import (
    SUBJECT_LIMIT,
    Envelope,
    MailItem,
    Reason,
    compose,
    message_id_for,
    outgoing,
    parse_mailbox,
)
from notifier.mail.transport import Outgoing
from notifier.records import Kind, Severity
from tests.mail.conftest import ENVELOPE, NOW, alarm


def received(message: EmailMessage) -> EmailMessage:
    """The message as a mail reader sees it after SMTP (flattened, parsed again)."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(
        flatten_message(message, cte_type="7bit")
    )
    assert isinstance(parsed, EmailMessage)
    return parsed


def subject(message: EmailMessage) -> str:
    # A folded subject unfolds with a leading space (Python folds right after "Subject:" for
    # some texts); mail readers strip it, and so do we.
    return str(message["Subject"]).strip()


def plain(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def html(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def one(item: MailItem, **kw: object) -> EmailMessage:
    return received(compose([item], ENVELOPE, now=NOW, **kw))  # type: ignore[arg-type]


def test_new_alarm_subject_names_severity_device_source_text_and_code() -> None:
    message = one(MailItem(alarm(), Reason.NEW))
    assert subject(message) == "[ALARM Major] gw01 RELAY/RECH: Registration down (0x00010002)"


def test_clear_subject_says_how_long_the_alarm_was_active() -> None:
    record = alarm(kind=Kind.CLEAR, device_time=NOW)
    message = one(MailItem(record, Reason.CLEAR, active_since=NOW - 3900))
    assert subject(message) == (
        "[CLEARED] gw01 RELAY/RECH: Registration down (0x00010002) (active 1h 5m)"
    )
    assert "alarm cleared after 1h 5m" in plain(message)


def test_event_and_repeat_subjects() -> None:
    event = one(MailItem(alarm(kind=Kind.EVENT, code="", source=""), Reason.EVENT))
    assert subject(event) == "[EVENT] gw01: Registration down"
    repeat = one(MailItem(alarm(), Reason.REPEAT, active_since=NOW - 7200, repeat_count=3))
    assert subject(repeat).startswith("[ALARM Major, still active] gw01")
    assert "sent 3 time(s) by the device" in plain(repeat)


def test_digest_subject_counts_kinds_and_lists_devices() -> None:
    items = [
        MailItem(alarm(device="gw01"), Reason.NEW),
        MailItem(alarm(device="gw02", code="0x2"), Reason.NEW),
        MailItem(alarm(device="gw01", code="0x3"), Reason.REPEAT),
        MailItem(alarm(kind=Kind.CLEAR, device="gw02"), Reason.CLEAR),
    ]
    message = received(compose(items, ENVELOPE, now=NOW))
    assert subject(message) == "[3 ALARMS, 1 CLEARED] gw01, gw02"
    assert message["X-Notifier-Kind"] == "alarm,clear"
    assert message["X-Notifier-Reason"] == "new,repeat,clear"


def test_digest_with_many_devices_says_and_n_more() -> None:
    items = [MailItem(alarm(device=f"gw{i:02}"), Reason.NEW) for i in range(6)]
    message = received(compose(items, ENVELOPE, now=NOW))
    assert subject(message) == "[6 ALARMS] gw00, gw01, gw02 and 3 more"
    text = plain(message)
    assert all(f"gw{i:02}" in text for i in range(6))


def test_digest_shows_one_row_per_record_and_the_omitted_and_dropped_notices() -> None:
    items = [MailItem(alarm(code=f"0x{i}"), Reason.NEW) for i in range(3)]
    message = received(
        compose(items, ENVELOPE, omitted=7, dropped={Kind.LOG: 120, Kind.EVENT: 0}, now=NOW)
    )
    assert subject(message) == "[3 ALARMS, +7 MORE] gw01"
    for body in (plain(message), html(message)):
        assert "7 more record(s) not shown" in body
        assert "120 log record(s) were dropped because the queue was full" in body
        assert "event record(s) were dropped" not in body
    assert html(message).count("<tr style") == 1 + 3  # heading row and one per record


def test_the_clear_of_an_acknowledged_alarm_says_who_acknowledged_it_alone_and_in_a_digest() -> (
    None
):
    who = "bob at 2026-11-30 12:00 UTC: replacing the PSU"
    cleared = MailItem(alarm(kind=Kind.CLEAR), Reason.CLEAR, acknowledged=who)
    for body in (plain(one(cleared)), html(one(cleared))):
        assert "Acknowledged" in body and "replacing the PSU" in body
    digest = received(
        compose([cleared, MailItem(alarm(code="0x2"), Reason.NEW)], ENVELOPE, now=NOW)
    )
    for body in (plain(digest), html(digest)):
        assert f"acknowledged by {who}" in body


def test_single_mail_body_shows_every_field() -> None:
    record = alarm(text="Registration down\nsecond line")
    message = one(MailItem(record, Reason.NEW))
    text = plain(message)
    for expected in (
        "Registration down\n    second line",
        "gw01",
        "009033000000",
        "0x00010002",
        "Major (sent as 2)",
        "RELAY/RECH",
        "Device time:  2025-11-27 21:50:17 UTC",
        "Received:     2025-11-27 21:50:18 UTC",
        "192.0.2.10:514 via syslog-udp",
        '<relay prot="SH323"/>',
        record.id,
    ):
        assert expected in text, expected
    assert "&lt;relay prot=&#34;SH323&#34;/&gt;" in html(message)


def test_unset_device_clock_is_shown_as_not_set() -> None:
    message = one(MailItem(alarm(device_time=None), Reason.NEW))
    assert "Device time:  not set" in plain(message)


def test_headers_mark_the_mail_automatic_and_name_records() -> None:
    record = alarm()
    message = one(MailItem(record, Reason.NEW))
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Notifier-Kind"] == "alarm"
    assert message["X-Notifier-Reason"] == "new"
    assert message["X-Notifier-Device"] == "gw01"
    assert message["X-Notifier-Record-Ids"] == record.id
    assert message["Date"] == "Thu, 27 Nov 2025 21:50:20 +0000"


def test_many_record_ids_become_a_count_and_a_hash() -> None:
    items = [MailItem(alarm(code=f"0x{i}"), Reason.NEW) for i in range(20)]
    header = received(compose(items, ENVELOPE, now=NOW))["X-Notifier-Record-Ids"]
    assert header.startswith("20 records, sha256 ")


def test_message_id_is_stable_for_the_same_records_and_recipients() -> None:
    records = [alarm(), alarm(code="0x2")]
    first = compose([MailItem(r, Reason.NEW) for r in records], ENVELOPE, now=NOW)
    retry = compose([MailItem(r, Reason.NEW) for r in reversed(records)], ENVELOPE, now=NOW + 60)
    other = Envelope("notifier@example.com", "N", ("lead@example.com",))
    elsewhere = compose([MailItem(r, Reason.NEW) for r in records], other, now=NOW)
    assert first["Message-ID"] == retry["Message-ID"]
    assert first["Message-ID"] != elsewhere["Message-ID"]
    assert first["Message-ID"].endswith("@example.com>")


def test_message_id_for_ignores_order_and_keeps_the_domain_safe() -> None:
    assert message_id_for(["a", "b"], "example.com") == message_id_for(["b", "a"], "example.com")
    assert message_id_for(["a"], "exa mple>\r\n").endswith("@notifier.invalid>")
    assert message_id_for(["a"], "bücher.example").endswith("@xn--bcher-kva.example>")


def test_non_ascii_names_and_subject_are_encoded_and_read_back() -> None:
    envelope = Envelope(
        "notifier@example.com", "Störungsmelder", ("Jürgen Müller <jm@example.com>",)
    )
    record = alarm(text="Übertragung gestört ✓", device="Zentrale-Köln")
    flat = flatten_message(compose([MailItem(record, Reason.NEW)], envelope, now=NOW))
    header_block = flat.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii()  # RFC 2047 encoded words, no raw 8-bit in headers
    assert b"=?utf-8?" in header_block
    message = BytesParser(policy=email.policy.default).parsebytes(flat)
    assert (
        subject(message)
        == "[ALARM Major] Zentrale-Köln RELAY/RECH: Übertragung gestört ✓ (0x00010002)"
    )
    assert message["From"].addresses[0].display_name == "Störungsmelder"
    assert message["To"].addresses[0].display_name == "Jürgen Müller"
    assert "Übertragung gestört ✓" in plain(message)


def test_long_subject_is_cut_but_keeps_the_code() -> None:
    message = one(MailItem(alarm(text="x" * 5000), Reason.NEW))
    text = subject(message)
    assert len(text) <= SUBJECT_LIMIT
    assert text.endswith("… (0x00010002)")


def test_severity_names_come_from_the_normalised_severity() -> None:
    message = one(MailItem(alarm(severity=Severity.CRITICAL, severity_raw="crit"), Reason.NEW))
    assert subject(message).startswith("[ALARM Critical] ")


def test_bcc_is_in_the_envelope_never_in_the_sent_headers() -> None:
    envelope = Envelope(
        "notifier@example.com",
        "N",
        ("a@example.com", "B <b@example.com>"),
        cc=("c@example.com",),
        bcc=("d@example.com", "a@example.com"),
    )
    message = compose([MailItem(alarm(), Reason.NEW)], envelope, now=NOW)
    everyone = ("a@example.com", "b@example.com", "c@example.com", "d@example.com")
    assert outgoing(message, envelope).rcpt_to == everyone
    assert Outgoing.of(message).rcpt_to == everyone  # the bare message knows its envelope too
    assert Outgoing.of(message).mail_from == "notifier@example.com"
    assert b"d@example.com" not in flatten_message(message)
    assert "Bcc" not in received(message)


@pytest.mark.parametrize(
    "entry", ["", "ops", "a@b.example, c@d.example", "two words@example.com", "<@example.com>"]
)
def test_parse_mailbox_refuses_what_is_not_one_address(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_mailbox(entry)


def test_parse_mailbox_takes_names_and_quoted_commas() -> None:
    address = parse_mailbox('"Doe, Jane" <jane@example.com>')
    assert (address.display_name, address.addr_spec) == ("Doe, Jane", "jane@example.com")


def test_compose_needs_records() -> None:
    with pytest.raises(ValueError):
        compose([], ENVELOPE)


def test_clear_shows_the_severity_the_alarm_was_set_with_and_when() -> None:
    record = alarm(kind=Kind.CLEAR, severity=Severity.MAJOR, device_time=NOW)
    item = MailItem(record, Reason.CLEAR, active_since=NOW - 3900, set_severity=Severity.CRITICAL)
    text = plain(one(item))
    assert "Severity:     Critical\n" in text
    assert "Alarm set:    2025-11-27 20:45:20 UTC\n" in text
    assert "Active for:   1h 5m\n" in text


def test_clear_whose_set_severity_is_unknown_shows_its_own() -> None:
    record = alarm(kind=Kind.CLEAR, device_time=NOW)
    text = plain(one(MailItem(record, Reason.CLEAR, active_since=NOW - 60)))
    assert "Severity:     Major (sent as 2)\n" in text


def test_new_alarm_has_no_active_for_and_no_raw_severity_repeating_the_name() -> None:
    record = alarm(severity_raw="MAJOR")
    text = plain(one(MailItem(record, Reason.NEW, active_since=record.time)))
    assert "Severity:     Major\n" in text
    assert "Active for" not in text
    assert "Alarm set" not in text


@pytest.mark.parametrize("length", range(60, 130, 3))
@pytest.mark.parametrize("word", ["word", "x" * 70, "Störung"])
def test_subject_is_never_folded_right_after_the_header_name(length: int, word: str) -> None:
    message = compose([MailItem(alarm(), Reason.NEW)], ENVELOPE, now=NOW)
    value = ("[EVENT] " + " ".join([word] * 40))[:length].strip()
    message.replace_header("Subject", value)
    flat = flatten_message(message, cte_type="7bit")
    (line,) = [x for x in flat.split(b"\r\n") if x.startswith(b"Subject:")]
    assert line.startswith(b"Subject: [EVENT]"), line  # folded, if at all, inside the value
    assert received(message)["Subject"] == value
