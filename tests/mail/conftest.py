"""Fixtures for mail tests: SMTP servers on loopback, records and envelopes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from notifier.mail.compose import Envelope, MailItem, Reason, compose, outgoing
from notifier.mail.transport import Outgoing
from notifier.records import Kind, Record, Severity
from tests.certs import TestPKI
from tests.smtpserver import SmtpTestServer

NOW = 1_764_280_220.0  # 2025-11-27T21:50:20Z

StartServer = Callable[..., SmtpTestServer]


@pytest.fixture
def smtp_server(pki: TestPKI) -> Iterator[StartServer]:
    """Start an `SmtpTestServer` with the given options; stopped after the test."""
    started: list[SmtpTestServer] = []

    def start(**options: Any) -> SmtpTestServer:
        options.setdefault("pki", pki)
        server = SmtpTestServer(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def alarm(**changes: Any) -> Record:
    """The innovaphone example alarm: gw01 RELAY/RECH Registration down, Major."""
    values: dict[str, Any] = {
        "kind": Kind.ALARM,
        "received_at": NOW - 2,
        "device_time": NOW - 3,
        "sender": "192.0.2.10:514",
        "receiver": "syslog-udp",
        "raw": b"<134>alarm",
        "text": "Registration down",
        "device": "gw01",
        "serial": "009033000000",
        "code": "0x00010002",
        "severity": Severity.MAJOR,
        "severity_raw": "2",
        "source": "RELAY/RECH",
        "details": '<relay prot="SH323"/>',
    }
    values.update(changes)
    return Record(**values)


ENVELOPE = Envelope(
    sender="notifier@example.com",
    sender_name="Notifier",
    to=("Ops Team <ops@example.com>",),
)


def alarm_mail(envelope: Envelope = ENVELOPE, **changes: Any) -> Outgoing:
    """A composed single-alarm mail with its envelope."""
    return outgoing(compose([MailItem(alarm(**changes), Reason.NEW)], envelope, now=NOW), envelope)
