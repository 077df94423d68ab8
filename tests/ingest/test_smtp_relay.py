"""The SMTP relay receiver against real clients on loopback (Python's smtplib and swaks): what it
answers, what the spool then holds (SQLite, as the service runs it), what it counts."""

from __future__ import annotations

import asyncio
import email.policy
import shutil
import smtplib
import socket
import sqlite3
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from notifier.config import ConfigError, SmtpRelaySettings, load_settings
from notifier.dispatch.relay import RELAY_CONSUMER
from notifier.ingest.smtprelay import SmtpRelay, address_allowed, is_loopback, may_relay
from notifier.ingest.tls import server_context
from notifier.metrics import Metrics
from notifier.prepare import config_problems
from notifier.records import SMTP_RELAY, Kind, MailEnvelope, Record
from notifier.spool import MemorySpool
from notifier.spool.tiered import TieredSpool
from tests.certs import TestPKI
from tests.ingest.conftest import StorageDown, count, eventually

USER, PASSWORD = "pbx01", "relay secret"


class Relay:
    """A started relay on 127.0.0.1 with the SQLite spool the service would open for it."""

    def __init__(self, server: SmtpRelay, spool: TieredSpool, metrics: Metrics) -> None:
        self.server = server
        self.spool = spool
        self.metrics = metrics

    @property
    def port(self) -> int:
        return self.server.addresses[0][1]

    async def stored(self) -> list[Record]:
        leases = await self.spool.lease(RELAY_CONSUMER, 100, 60)
        return [lease.record for lease in leases]

    def rejected(self, reason: str) -> float:
        return count(self.metrics, "ingest_rejected", receiver=SMTP_RELAY, reason=reason)


@pytest.fixture
async def start_relay(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Relay] = []

    async def start(
        pki: TestPKI | None = None,
        env: dict[str, str] | None = None,
        is_local: Callable[[str], bool] = is_loopback,
        **relay: Any,
    ) -> Relay:
        settings = load_settings(
            environ={"NOTIFIER_DATA_DIR": str(tmp_path / f"var{len(started)}"), **(env or {})}
        )
        from notifier.spool.factory import open_spool

        metrics = Metrics()
        spool = open_spool(settings, [RELAY_CONSUMER], metrics, {RELAY_CONSUMER: []})
        await spool.start()
        if pki is not None:
            relay |= {"tls_cert_file": str(pki.server_cert), "tls_key_file": str(pki.server_key)}
        config = SmtpRelaySettings(**relay)
        tls = server_context(config.tls_cert_file, config.tls_key_file) if pki else None
        server = SmtpRelay(
            config,
            spool,
            metrics,
            tls,
            is_local=is_local,
        )
        await server.start("127.0.0.1", 0)
        started.append(Relay(server, spool, metrics))
        return started[-1]

    yield start
    for relay in started:
        await relay.server.close()
        await relay.spool.close()


def _message(subject: str = "Alarm: trunk down", body: str = "Trunk 1 is down.\n") -> bytes:
    """A mail as a device sends it (CRLF line ends)."""
    message = EmailMessage()
    message["From"] = "PBX 01 <pbx01@pbx.example.test>"
    message["To"] = "ops@example.test"
    message["Subject"] = subject
    message.set_content(body)
    return message.as_bytes(policy=email.policy.SMTP)


def _transaction(
    port: int,
    data: bytes,
    *,
    mail_from: str = "pbx01@pbx.example.test",
    rcpt: tuple[str, ...] = ("ops@example.test",),
    login: tuple[str, str] | None = None,
    starttls: ssl.SSLContext | None = None,
) -> dict[str, tuple[int, bytes]]:
    """One SMTP transaction with smtplib; every reply by step (a refusal ends it there)."""
    replies: dict[str, tuple[int, bytes]] = {}
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        replies["ehlo"] = client.ehlo()
        if starttls is not None:
            replies["starttls"] = client.starttls(context=starttls)
            replies["ehlo2"] = client.ehlo()
        if login is not None:
            try:
                replies["auth"] = client.login(*login)
            except smtplib.SMTPAuthenticationError as e:
                replies["auth"] = (e.smtp_code, e.smtp_error)
                return replies
        replies["mail"] = client.mail(mail_from)
        if replies["mail"][0] != 250:
            return replies
        for address in rcpt:
            replies[f"rcpt {address}"] = client.rcpt(address)
        if any(code != 250 for step, (code, _) in replies.items() if step.startswith("rcpt")):
            return replies
        replies["data"] = client.data(data)
    return replies


def _remote(peer: str) -> bool:
    return False


async def send(port: int, data: bytes, **kw: Any) -> dict[str, tuple[int, bytes]]:
    return await asyncio.to_thread(_transaction, port, data, **kw)


async def test_mail_from_loopback_without_auth_is_stored_whole_with_its_envelope_before_250(
    start_relay: Callable[..., Any],
) -> None:
    relay = await start_relay()
    data = _message()

    replies = await send(relay.port, data, rcpt=("ops@example.test", "boss@example.test"))

    code, text = replies["data"]
    assert code == 250
    (record,) = await relay.stored()
    assert text.decode().endswith(f"queued as {record.id}")
    assert record.receiver == SMTP_RELAY and record.kind is Kind.EVENT
    assert record.raw == data
    assert record.text == "Alarm: trunk down"
    assert MailEnvelope.of(record) == MailEnvelope(
        "pbx01@pbx.example.test", ("ops@example.test", "boss@example.test")
    )
    assert count(relay.metrics, "ingest_accepted", receiver=SMTP_RELAY, kind="event") == 1


async def test_a_ten_mib_mail_round_trips_through_the_sqlite_spool_byte_for_byte(
    start_relay: Callable[..., Any],
) -> None:
    relay = await start_relay(max_message_bytes=11 << 20)
    line = b"0123456789abcdef" * 60 + b"\r\n"  # 962 bytes: under the 1000 of RFC 5321
    body = line * ((10 << 20) // len(line) + 1)
    data = b"From: pbx01@pbx.example.test\r\nSubject: trace\r\n\r\n" + body
    assert len(data) >= 10 << 20

    replies = await send(relay.port, data)

    assert replies["data"][0] == 250
    (record,) = await relay.stored()
    assert record.raw == data


async def test_auth_is_offered_only_after_starttls_and_admits_the_configured_user(
    start_relay: Callable[..., Any], pki: TestPKI
) -> None:
    relay = await start_relay(pki, users={USER: PASSWORD})
    data = _message()

    replies = await send(relay.port, data, login=(USER, PASSWORD), starttls=pki.client_context())

    assert b"AUTH" not in replies["ehlo"][1]
    assert b"STARTTLS" in replies["ehlo"][1]
    assert b"AUTH LOGIN PLAIN" in replies["ehlo2"][1]
    assert replies["auth"][0] == 235
    assert replies["data"][0] == 250
    (record,) = await relay.stored()
    assert record.device == USER


async def test_a_wrong_password_is_refused_with_535_counted_and_logged_without_the_password(
    start_relay: Callable[..., Any], pki: TestPKI, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = await start_relay(pki, users={USER: PASSWORD})

    replies = await send(
        relay.port,
        _message(),
        login=(USER, "guessed"),
        starttls=pki.client_context(),
    )

    assert replies["auth"][0] == 535
    assert relay.rejected("auth_failed") == 2  # smtplib tries PLAIN, then LOGIN
    assert await relay.stored() == []
    logged = capsys.readouterr()
    assert "auth_failed" in logged.out + logged.err
    assert "guessed" not in logged.out + logged.err


async def test_a_peer_off_loopback_must_log_in_before_it_may_relay(
    start_relay: Callable[..., Any], pki: TestPKI
) -> None:
    # Tests talk to loopback only: the relay is told to treat every peer as remote.
    relay = await start_relay(pki, is_local=_remote, users={USER: PASSWORD})

    refused = await send(relay.port, _message(), starttls=pki.client_context())

    assert refused["mail"][0] == 530
    assert b"Authentication required" in refused["mail"][1]
    assert relay.rejected("auth_required") == 1
    accepted = await send(
        relay.port, _message(), login=(USER, PASSWORD), starttls=pki.client_context()
    )
    assert accepted["data"][0] == 250
    assert len(await relay.stored()) == 1


async def test_without_users_a_remote_peer_is_refused_and_no_auth_is_offered_even_after_tls(
    start_relay: Callable[..., Any], pki: TestPKI
) -> None:
    relay = await start_relay(pki, is_local=_remote)

    replies = await send(relay.port, _message(), starttls=pki.client_context())

    assert b"AUTH" not in replies["ehlo2"][1]
    assert replies["mail"][0] == 550
    assert b"loopback peers only" in replies["mail"][1]
    assert relay.rejected("auth_required") == 1


async def test_an_oversized_mail_is_refused_with_552_naming_the_limit_and_counted(
    start_relay: Callable[..., Any],
) -> None:
    relay = await start_relay(max_message_bytes=4096)
    data = _message(body=("x" * 70 + "\n") * 100)

    replies = await send(relay.port, data)

    code, text = replies["data"]
    assert code == 552
    assert b"at most 4096 bytes" in text and b"smtp_relay.max_message_bytes" in text
    assert relay.rejected("too_big") == 1
    assert await relay.stored() == []


async def test_a_declared_size_over_the_limit_is_refused_at_mail_from(
    start_relay: Callable[..., Any],
) -> None:
    relay = await start_relay(max_message_bytes=4096)

    def declare() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
            client.ehlo()
            return client.mail("pbx01@pbx.example.test", ["SIZE=999999"])

    code, text = await asyncio.to_thread(declare)

    assert code == 552 and b"at most 4096 bytes" in text
    assert relay.rejected("too_big") == 1


async def test_senders_and_recipients_outside_the_allowed_lists_are_refused_and_counted(
    start_relay: Callable[..., Any],
) -> None:
    relay = await start_relay(
        allowed_senders=["*@pbx.example.test"], allowed_recipients=["*@example.test"]
    )

    bad_sender = await send(relay.port, _message(), mail_from="spam@elsewhere.test")
    bad_rcpt = await send(relay.port, _message(), rcpt=("victim@elsewhere.test",))
    good = await send(relay.port, _message(), rcpt=("OPS@Example.test",))

    assert bad_sender["mail"][0] == 550 and b"allowed_senders" in bad_sender["mail"][1]
    assert bad_rcpt["rcpt victim@elsewhere.test"][0] == 550
    assert relay.rejected("sender_not_allowed") == 1
    assert relay.rejected("recipient_not_allowed") == 1
    assert good["data"][0] == 250
    (record,) = await relay.stored()
    assert MailEnvelope.of(record).rcpt_to == ("OPS@Example.test",)


async def test_relayed_mail_is_durable_and_a_full_spool_answers_451_keeping_what_it_holds(
    start_relay: Callable[..., Any],
) -> None:
    # Events in memory and drop_oldest for everyone else: the relay's mail still goes to disk,
    # and is never dropped to make room.
    relay = await start_relay(
        env={
            "NOTIFIER_SPOOL__PERSISTENT_QUEUE_ENTRIES": "1",
            "NOTIFIER_SPOOL__OVERFLOW": "drop_oldest",
            "NOTIFIER_SPOOL__DURABLE_KINDS": '["alarm"]',
        }
    )

    first = await send(relay.port, _message("first"))
    second = await send(relay.port, _message("second"))

    assert first["data"][0] == 250
    assert second["data"][0] == 451
    assert relay.rejected("spool_full") == 1
    assert [r.text for r in await relay.stored()] == ["first"]


async def test_swaks_relays_through_starttls_and_auth_login(
    start_relay: Callable[..., Any], pki: TestPKI
) -> None:
    swaks = shutil.which("swaks")
    assert swaks, "swaks is missing: run scripts/install-test-deps.sh"
    relay = await start_relay(pki, users={USER: PASSWORD})

    for mechanism in ("LOGIN", "PLAIN"):
        done = await asyncio.to_thread(
            subprocess.run,
            [
                swaks,
                "--server", "127.0.0.1", "--port", str(relay.port),
                "--from", "pbx01@pbx.example.test", "--to", "ops@example.test",
                "--tls", "--auth", mechanism, "--auth-user", USER, "--auth-password", PASSWORD,
                "--header", f"Subject: swaks {mechanism}", "--body", "Trunk 1 is down.",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr

    records = await relay.stored()
    assert [r.text for r in records] == ["swaks LOGIN", "swaks PLAIN"]
    assert {r.device for r in records} == {USER}


def test_relay_decisions() -> None:
    assert is_loopback("127.0.0.1:2525") and is_loopback("[::1]:2525")
    assert not is_loopback("192.0.2.7:2525") and not is_loopback("pbx.example.test:25")
    assert may_relay("127.0.0.1:40000", "")
    assert not may_relay("192.0.2.7:40000", "")
    assert may_relay("192.0.2.7:40000", USER)
    assert address_allowed("Alarm@PBX.example.test", ["*@pbx.example.test"])
    assert not address_allowed("alarm@evil.test", ["*@pbx.example.test"])
    assert address_allowed("anyone@anywhere.test", [])


def test_relay_config_problems_name_their_keys(tmp_path: Path) -> None:
    def problems(**env: str) -> str:
        try:
            settings = load_settings(
                environ={"NOTIFIER_SMTP_RELAY__LISTEN": "127.0.0.1:2525", **env}
            )
        except ConfigError as e:
            return str(e)
        return "\n".join(config_problems(settings))

    assert "smtp_relay: users are set but AUTH is offered only after STARTTLS" in problems(
        NOTIFIER_SMTP_RELAY__USERS='{"pbx01": "secret"}'
    )
    assert "smtp_relay.account: no account named 'relay'" in problems(
        NOTIFIER_SMTP_RELAY__ACCOUNT="relay"
    )
    missing = str(tmp_path / "missing.pem")
    assert "smtp_relay.tls_cert_file: cannot load certificate" in problems(
        NOTIFIER_SMTP_RELAY__TLS_CERT_FILE=missing, NOTIFIER_SMTP_RELAY__TLS_KEY_FILE=missing
    )


class BrokenSpool(MemorySpool):
    """A spool whose storage fails the way a damaged disk would."""

    async def put(self, records: Sequence[Record]) -> None:
        raise sqlite3.OperationalError("disk I/O error")


async def test_a_spool_that_fails_answers_451_so_the_device_retries_and_tells_it_no_more(
    receivers: list[Any],
) -> None:
    metrics = Metrics()
    relay = SmtpRelay(SmtpRelaySettings(), BrokenSpool([RELAY_CONSUMER]), metrics)
    await relay.start("127.0.0.1", 0)
    receivers.append(relay)

    replies = await send(relay.addresses[0][1], _message())

    code, text = replies["data"]
    assert code == 451
    assert b"disk I/O" not in text and b"OperationalError" not in text
    assert count(metrics, "ingest_rejected", receiver=SMTP_RELAY, reason="spool_error") == 1


async def test_a_spool_whose_database_is_down_answers_451_that_the_mail_could_not_be_stored(
    receivers: list[Any],
) -> None:
    # Not "the queue is full": the device's administrator would look at the wrong thing.
    metrics = Metrics()
    spool = StorageDown([RELAY_CONSUMER])
    relay = SmtpRelay(SmtpRelaySettings(), spool, metrics)
    await relay.start("127.0.0.1", 0)
    receivers.append(relay)

    replies = await send(relay.addresses[0][1], _message())

    code, text = replies["data"]
    assert (code, text) == (451, b"4.3.0 The mail could not be stored: try again later")
    assert count(metrics, "ingest_rejected", receiver=SMTP_RELAY, reason="spool_unavailable") == 1
    assert count(metrics, "ingest_rejected", receiver=SMTP_RELAY, reason="spool_full") == 0

    spool.down = False
    assert (await send(relay.addresses[0][1], _message()))["data"][0] == 250


async def test_a_failed_tls_handshake_is_counted_and_the_relay_serves_the_next_client(
    start_relay: Callable[..., Any], pki: TestPKI
) -> None:
    relay = await start_relay(pki, users={USER: PASSWORD})

    def plaintext_after_starttls() -> None:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as raw:
            reader = raw.makefile("rb")
            reader.readline()  # banner
            raw.sendall(b"EHLO pbx01\r\nSTARTTLS\r\n")
            while not reader.readline().startswith(b"220"):  # EHLO lines, then "220 Ready"
                pass
            raw.sendall(b"this is not a TLS ClientHello\r\n" * 20)
            raw.settimeout(10)
            try:
                while raw.recv(4096):
                    pass
            except OSError:
                pass

    await asyncio.to_thread(plaintext_after_starttls)
    await eventually(lambda: relay.rejected("session_error") == 1, "the counted session error")

    replies = await send(
        relay.port, _message(), login=(USER, PASSWORD), starttls=pki.client_context()
    )
    assert replies["data"][0] == 250
