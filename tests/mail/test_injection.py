"""Untrusted device text can never add a header or a MIME part: checked on the mail as the
SMTP server received it."""

from __future__ import annotations

import email.policy
from email.parser import BytesParser

import pytest

from notifier.mail.compose import Envelope, MailItem, Reason, compose, outgoing
from notifier.mail.smtp import SmtpSender, SmtpSettings
from notifier.mail.transport import SendResult
from tests import certs
from tests.mail.conftest import ENVELOPE, NOW, StartServer, alarm

EXPECTED_HEADERS = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
    "X-Notifier-Kind",
    "X-Notifier-Reason",
    "X-Notifier-Device",
    "X-Notifier-Record-Ids",
    "MIME-Version",
    "Content-Type",
]

BREAKS = {
    "CRLF": "\r\n",
    "LF": "\n",
    "CR": "\r",
    "NUL": "\x00",
    "U+2028": "\u2028",
    "U+2029": "\u2029",
    "NEL": "\x85",
    "VT": "\x0b",
}


def hostile(brk: str) -> str:
    """Text that tries to end the header, add Bcc and a MIME part of its own."""
    return (
        f"Registration down{brk}Bcc: victim@evil.example{brk}X-Injected: yes{brk}{brk}"
        f"--boundary{brk}Content-Type: text/html{brk}{brk}<script>alert(1)</script>"
    )


@pytest.mark.parametrize("field", ["text", "source", "device", "code", "serial", "severity_raw"])
@pytest.mark.parametrize("brk", list(BREAKS.values()), ids=list(BREAKS))
async def test_line_breaks_in_device_fields_add_no_header_and_no_part(
    smtp_server: StartServer, pki: certs.TestPKI, field: str, brk: str
) -> None:
    server = smtp_server(tls="none")
    record = alarm(**{field: hostile(brk)})
    mail = outgoing(compose([MailItem(record, Reason.NEW)], ENVELOPE, now=NOW), ENVELOPE)
    sender = SmtpSender(SmtpSettings(host=server.host, port=server.port, tls="none"))

    try:
        (result,) = await sender.send([mail])
    finally:
        await sender.close()

    assert isinstance(result, SendResult), str(result)
    (received,) = server.received
    assert received.rcpt_tos == ("ops@example.com",)
    message = received.message
    assert list(message.keys()) == EXPECTED_HEADERS
    assert "victim@evil.example" not in str(message["To"])
    assert message.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    html = message.get_body(("html",))
    assert html is not None
    assert "<script>" not in html.get_content()
    assert message.defects == []


def test_hostile_text_stays_in_the_body_where_people_can_read_it() -> None:
    record = alarm(text=hostile("\r\n"))
    message = compose([MailItem(record, Reason.NEW)], ENVELOPE, now=NOW)
    parsed = BytesParser(policy=email.policy.default).parsebytes(message.as_bytes())

    plain = parsed.get_body(("plain",))
    assert plain is not None
    body = plain.get_content()
    assert "Bcc: victim@evil.example" in body  # shown, as text, on its own indented line
    assert "\n    Bcc: victim@evil.example" in body
    assert "\r" not in body.replace("\r\n", "\n")
    html = parsed.get_body(("html",))
    assert html is not None
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html.get_content()


def test_display_names_and_subject_with_breaks_are_neutralised() -> None:
    envelope = Envelope(
        "notifier@example.com", "Notifier\r\nBcc: x@evil.example", ("Ops <ops@example.com>",)
    )
    message = compose([MailItem(alarm(), Reason.NEW)], envelope, now=NOW)
    parsed = BytesParser(policy=email.policy.default).parsebytes(message.as_bytes())
    assert "Bcc" not in parsed
    assert parsed["From"].addresses[0].addr_spec == "notifier@example.com"


def test_a_recipient_with_a_line_break_is_refused_at_compose() -> None:
    envelope = Envelope("notifier@example.com", "N", ("ops@example.com\r\nBcc: x@evil.example",))
    with pytest.raises(ValueError, match="control characters"):
        compose([MailItem(alarm(), Reason.NEW)], envelope, now=NOW)
