"""The relay consumer: how a stored mail is rewritten for the account (pure), and the worker
sending it through a real SMTP server on loopback: retries, dead letters, what it leaves alone."""

from __future__ import annotations

import asyncio
import email.policy
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from notifier.config import AccountSettings, RouteSettings, load_settings
from notifier.dispatch.relay import RELAY_CONSUMER, RelayError, RelayWorker, relayed_message
from notifier.dispatch.rules import compile_routes
from notifier.ingest.parse.mail import mail_record
from notifier.mail.accounts import build_transport
from notifier.metrics import Metrics
from notifier.records import Kind, MailEnvelope, Record
from notifier.spool.factory import open_spool
from notifier.spool.tiered import TieredSpool
from tests.smtpserver import ReceivedMail, SmtpTestServer

ACCOUNT = AccountSettings(
    name="relay", sender_address="alarms@example.com", sender_name="notifier", tls="none"
)
ENVELOPE = MailEnvelope("pbx01@pbx.example.test", ("ops@example.test", "hidden@example.test"))


def device_mail(*headers: tuple[str, str]) -> bytes:
    message = EmailMessage()
    message["From"] = "PBX 01 <pbx01@pbx.example.test>"
    message["To"] = "ops@example.test"
    message["Subject"] = "Alarm: trunk down"
    for name, value in headers:
        message[name] = value
    message.set_content("Trunk 1 is down.\n")
    return message.as_bytes(policy=email.policy.SMTP)


def relayed(content: bytes, envelope: MailEnvelope = ENVELOPE) -> Record:
    return mail_record(content, envelope, sender="127.0.0.1:40000", received_at=1000.0)


def test_from_and_envelope_sender_become_the_accounts_and_the_original_goes_to_reply_to() -> None:
    out = relayed_message(relayed(device_mail()), ACCOUNT, rewrite_from=True)

    assert out.mail_from == "alarms@example.com"
    assert out.rcpt_to == ("ops@example.test", "hidden@example.test")
    assert str(out.message["From"]) == "PBX 01 <alarms@example.com>"
    assert str(out.message["X-Original-From"]) == "PBX 01 <pbx01@pbx.example.test>"
    assert str(out.message["Reply-To"]) == "PBX 01 <pbx01@pbx.example.test>"
    assert len(out.message.get_all("From", [])) == 1


def test_a_reply_to_the_device_set_is_kept_and_a_sender_header_dropped() -> None:
    content = device_mail(("Reply-To", "noc@example.test"), ("Sender", "pbx01@pbx.example.test"))

    out = relayed_message(relayed(content), ACCOUNT, rewrite_from=True)

    assert str(out.message["Reply-To"]) == "noc@example.test"
    assert "Sender" not in out.message


def test_a_from_without_display_name_gets_the_accounts_name() -> None:
    content = device_mail().replace(
        b"From: PBX 01 <pbx01@pbx.example.test>", b"From: pbx01@pbx.example.test"
    )

    out = relayed_message(relayed(content), ACCOUNT, rewrite_from=True)

    assert str(out.message["From"]) == "notifier <alarms@example.com>"


def test_without_rewriting_from_and_envelope_sender_stay_the_devices() -> None:
    out = relayed_message(relayed(device_mail()), ACCOUNT, rewrite_from=False)

    assert out.mail_from == "pbx01@pbx.example.test"
    assert str(out.message["From"]) == "PBX 01 <pbx01@pbx.example.test>"
    assert "X-Original-From" not in out.message


def test_the_message_id_is_the_devices_or_one_derived_from_the_record_the_same_every_time() -> None:
    own = relayed_message(
        relayed(device_mail(("Message-ID", "<alarm-17@pbx.example.test>"))),
        ACCOUNT,
        rewrite_from=True,
    )
    record = relayed(device_mail())
    first = relayed_message(record, ACCOUNT, rewrite_from=True)
    again = relayed_message(record, ACCOUNT, rewrite_from=True)
    other = relayed_message(relayed(device_mail()), ACCOUNT, rewrite_from=True)

    assert own.message_id == "<alarm-17@pbx.example.test>"
    assert first.message_id == again.message_id
    assert first.message_id.endswith("@example.com>")
    assert other.message_id != first.message_id


def test_a_record_without_an_envelope_cannot_be_relayed() -> None:
    record = relayed(device_mail()).evolve(extras={})

    with pytest.raises(RelayError, match="no SMTP envelope"):
        relayed_message(record, ACCOUNT, rewrite_from=True)


def test_routes_never_take_relayed_mail_even_when_they_match_every_kind() -> None:
    (matcher,) = compile_routes([RouteSettings(name="all", match={"kinds": []})])
    record = relayed(device_mail())

    assert record.kind is Kind.EVENT
    assert not matcher.matches(record)
    assert matcher.matches(record.evolve(receiver="json"))


# --- the worker -------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as smtp:
        yield smtp


@pytest.fixture
async def relay(
    server: SmtpTestServer, tmp_path: Path
) -> AsyncIterator[tuple[RelayWorker, TieredSpool]]:
    account = ACCOUNT.model_copy(update={"server": f"127.0.0.1:{server.port}"})
    # The spool the service opens for the relay: relayed mail lands on disk.
    settings = load_settings(environ={"NOTIFIER_DATA_DIR": str(tmp_path)})
    spool = open_spool(settings, [RELAY_CONSUMER], Metrics(), {RELAY_CONSUMER: []})
    await spool.start()
    worker = RelayWorker(
        account,
        build_transport("", account),
        asyncio.Lock(),
        spool,
        Metrics(),
        retry_base_s=0.05,
        retry_max_s=0.1,
    )
    task = asyncio.create_task(worker.run())
    yield worker, spool
    worker.stop()
    await asyncio.wait_for(task, 10)
    await spool.close()


async def eventually(check: Any, what: str) -> Any:
    for _ in range(1000):
        if value := check():
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_a_mail_the_server_defers_is_sent_again_with_the_same_message_id(
    relay: tuple[RelayWorker, TieredSpool], server: SmtpTestServer
) -> None:
    _, spool = relay
    server.script_data("451 4.3.0 try again later")
    record = relayed(device_mail())
    expected = relayed_message(record, ACCOUNT, rewrite_from=True).message_id

    await spool.put([record])

    mail: ReceivedMail = (await eventually(lambda: server.received, "the mail"))[0]
    assert not server.data_replies  # the 451 answered the first attempt
    assert mail.message["Message-ID"] == expected
    assert mail.mail_from == "alarms@example.com"
    assert mail.rcpt_tos == ("ops@example.test", "hidden@example.test")
    assert b"Trunk 1 is down." in mail.content
    await eventually(lambda: not spool.stats().depth.get((RELAY_CONSUMER, "retry")), "the ack")


async def test_a_mail_the_server_refuses_for_good_is_dead_lettered_and_shown(
    relay: tuple[RelayWorker, TieredSpool], server: SmtpTestServer
) -> None:
    worker, spool = relay
    server.script_data("554 5.7.1 message refused")

    await spool.put([relayed(device_mail())])

    await eventually(lambda: spool.stats().depth.get((RELAY_CONSUMER, "dead")), "a dead letter")
    assert server.received == []
    status = worker.status()
    assert status["consumer"] == RELAY_CONSUMER
    assert "554" in status["last_error"]


async def test_records_of_other_receivers_are_acked_without_a_mail(
    relay: tuple[RelayWorker, TieredSpool], server: SmtpTestServer
) -> None:
    _, spool = relay
    alarm = relayed(b"x").evolve(receiver="json", kind=Kind.ALARM, extras={})

    await spool.put([alarm, relayed(device_mail())])

    await eventually(lambda: server.received, "the relayed mail")
    await eventually(lambda: not spool.stats().depth.get((RELAY_CONSUMER, "ready")), "acks")
    assert len(server.received) == 1
