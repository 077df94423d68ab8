"""The test mail: one builder for `notifier test-mail` and the page's button, and what the
running service sends when the button is pressed."""

from __future__ import annotations

import email.policy
import socket
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from notifier.config import load_settings
from notifier.dispatch.service import build_dispatcher
from notifier.mail.testmail import TestMailError, compose_test_mail
from notifier.metrics import Metrics
from notifier.spool import MemorySpool
from notifier.spool.factory import open_state

ROUTES = '[{"name": "pbx", "to": ["pbx-team@example.com"]}]'


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_test_mail_names_the_account_and_goes_to_its_routes_recipients() -> None:
    settings = load_settings(environ={"NOTIFIER_ROUTES": ROUTES})
    mail = compose_test_mail(settings, now=1_764_280_220.0)
    assert mail.account == "ops"
    assert (
        str(mail.message["Subject"])
        == f"[TEST] notifier test mail from {socket.gethostname()}:8080"
    )
    assert str(mail.message["To"]) == "pbx-team@example.com"
    assert mail.message["X-Notifier-Reason"] == "test"
    assert "through account 'ops'" in text_of(mail.message)


def test_test_mail_to_an_address_given_on_the_command_line() -> None:
    settings = load_settings(environ={})
    mail = compose_test_mail(settings, "ops", to="me@example.test")
    assert str(mail.message["To"]) == "me@example.test"


def test_test_mail_for_an_unknown_account_names_the_known_ones() -> None:
    with pytest.raises(TestMailError, match=r"no account named 'nope' \(have ops\)"):
        compose_test_mail(load_settings(environ={}), "nope")


def test_test_mail_for_an_account_without_route_needs_a_recipient() -> None:
    settings = load_settings(environ={"NOTIFIER_ACCOUNTS": '[{"name": "ops"}, {"name": "spare"}]'})
    with pytest.raises(TestMailError, match="pass --to ADDRESS"):
        compose_test_mail(settings, "spare")


async def test_the_pages_test_mail_button_sends_the_same_mail(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"NOTIFIER_DATA_DIR": str(tmp_path), "NOTIFIER_ROUTES": ROUTES}
    )
    dispatcher = build_dispatcher(
        settings, MemorySpool(["route:pbx"]), open_state(settings), Metrics()
    )
    try:
        report = await dispatcher.send_test("ops", "")
    finally:
        await dispatcher.close_transports()
    assert report.ok and report.result is not None
    (path,) = (tmp_path / "outbox").glob("*.eml")
    sent = BytesParser(policy=email.policy.default).parsebytes(path.read_bytes())
    assert isinstance(sent, EmailMessage)
    assert str(sent["Subject"]) == f"[TEST] notifier test mail from {socket.gethostname()}:8080"
    assert str(sent["To"]) == "pbx-team@example.com"
    assert "through account 'ops'" in text_of(sent)
