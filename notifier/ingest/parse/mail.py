"""A mail taken by the SMTP relay as a Record: the message as received, the envelope beside it.

The message itself is not parsed beyond its Subject (for the status page and the history): the
relay consumer sends the stored bytes on, so nothing the device wrote is lost or re-encoded here.
"""

from __future__ import annotations

import email.policy
from email.parser import BytesHeaderParser

from notifier.ingest.parse.syslog import host_of
from notifier.records import SMTP_RELAY, Kind, MailEnvelope, Record, frozen_extras, new_record

_SUBJECT_CHARS = 200
_HEADERS = BytesHeaderParser(policy=email.policy.default)


def mail_subject(content: bytes) -> str:
    """The decoded Subject of a message, on one line, shortened; "" when it has none or it
    cannot be decoded."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 4]
    try:
        subject = _HEADERS.parsebytes(head).get("Subject", "")
        return " ".join(str(subject).split())[:_SUBJECT_CHARS]
    except (ValueError, LookupError):  # a broken encoded word: the Subject is only a label here
        return ""


def mail_record(
    content: bytes,
    envelope: MailEnvelope,
    *,
    sender: str,
    received_at: float,
    user: str = "",
) -> Record:
    """The Record of one relayed mail. `sender` is the peer ("ip:port"), `user` the AUTH login
    ("" without AUTH); the device shown is the login, else the peer's address."""
    recipients = ", ".join(envelope.rcpt_to)
    return new_record(
        Kind.EVENT,
        received_at,
        sender,
        SMTP_RELAY,
        content,
        text=mail_subject(content),
        device=user or host_of(sender),
        source=SMTP_RELAY,
        details=f"mail from <{envelope.mail_from}> to {recipients}",
        extras=frozen_extras(envelope.to_extras()),
    )
