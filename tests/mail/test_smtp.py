"""SmtpSender against a real aiosmtpd server on loopback: TLS modes, AUTH, replies, reuse."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from notifier.mail.compose import Envelope
from notifier.mail.smtp import SmtpSender, SmtpSettings
from notifier.mail.tokens import StaticTokenProvider
from notifier.mail.transport import DeliveryError, Outcome, SendResult
from notifier.metrics import Metrics
from tests import certs
from tests.conftest import connections_to, free_port
from tests.mail.conftest import ENVELOPE, StartServer, alarm_mail
from tests.smtpserver import SmtpTestServer

PASSWORD = "correct horse battery staple"
USERS = {"ops@example.com": PASSWORD}


class RotatingTokens:
    """Hands out tokens in order: `invalidate` of the current one moves on to the next."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.invalidated: list[str] = []

    async def token(self) -> str:
        return self.tokens[0]

    async def invalidate(self, token: str) -> None:
        self.invalidated.append(token)
        if len(self.tokens) > 1 and self.tokens[0] == token:
            self.tokens.pop(0)


def settings_for(server: SmtpTestServer, pki: certs.TestPKI, **changes: Any) -> SmtpSettings:
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "tls": "auto",
        "ca_file": str(pki.ca_file),
        "ehlo_name": "notifier.test",
        "timeout_s": 5.0,
    }
    values.update(changes)
    return SmtpSettings(**values)


async def send_one(settings: SmtpSettings, **mail: Any) -> SendResult | DeliveryError:
    """One mail, then the sender closed as a stopping service closes it."""
    sender = SmtpSender(settings, account="ops")
    try:
        (result,) = await sender.send([alarm_mail(**mail)])
    finally:
        await sender.close()
    return result


async def send_all(sender: SmtpSender, mails: Sequence[Any]) -> list[SendResult | DeliveryError]:
    """`mails` as one batch, then the sender closed (its QUIT and close end before this)."""
    try:
        return await sender.send(mails)
    finally:
        await sender.close()


def delivered(result: SendResult | DeliveryError) -> SendResult:
    assert isinstance(result, SendResult), str(result)
    return result


def failed(result: SendResult | DeliveryError) -> DeliveryError:
    assert isinstance(result, DeliveryError), result
    return result


# -- TLS -----------------------------------------------------------------------------------


async def test_starttls_offered_is_used_and_password_goes_over_tls(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls", users=USERS)
    settings = settings_for(server, pki, username="ops@example.com", password=PASSWORD)

    result = delivered(await send_one(settings))

    (mail,) = server.received
    assert mail.tls
    assert (mail.auth_mechanism, mail.auth_identity) == ("PLAIN", "ops@example.com")
    assert mail.rcpt_tos == ("ops@example.com",)
    assert mail.message["Message-ID"] == result.message_id
    assert result.reply.startswith("250")


async def test_implicit_tls_delivers_from_the_first_byte(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="implicit", users=USERS)
    settings = settings_for(server, pki, tls="tls", username="ops@example.com", password=PASSWORD)

    report = await SmtpSender(settings).test(alarm_mail())

    assert report.ok, report.error
    assert report.tls_mode == "implicit"
    assert report.tls_version.startswith("TLSv1.")
    assert report.tls_cipher
    assert report.mechanism == "PLAIN"
    assert server.received[0].tls


async def test_test_report_names_starttls_version_cipher_mechanism_and_replies(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls", users=USERS)
    settings = settings_for(server, pki, username="ops@example.com", password=PASSWORD)

    report = await SmtpSender(settings).test(alarm_mail())

    assert report.ok
    assert report.tls_mode == "starttls"
    assert report.tls_version.startswith("TLSv1.")
    assert "localhost" in report.server_certificate
    assert report.mechanism == "PLAIN"
    assert report.auth_reply.startswith("235")
    assert "smtp.test" in report.banner
    assert {"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"} <= set(report.auth_offered)
    assert report.result is not None and report.result.reply.startswith("250")


async def test_starttls_required_but_not_offered_fails_clearly_and_sends_nothing(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="none")
    settings = settings_for(server, pki, tls="starttls")

    error = failed(await send_one(settings))

    assert error.outcome is Outcome.ACCOUNT
    assert error.step == "starttls"
    assert f"127.0.0.1:{server.port}" in str(error)
    assert "does not offer STARTTLS" in str(error)
    assert server.received == []


async def test_untrusted_certificate_is_a_clear_account_error(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls")
    settings = settings_for(server, pki, ca_file="")  # the system CAs do not know the test CA

    error = failed(await send_one(settings))

    assert error.outcome is Outcome.ACCOUNT
    assert "certificate is not trusted" in str(error)
    assert "ca_file" in str(error)
    assert server.received == []


async def test_untrusted_certificate_on_implicit_tls_names_the_connect_step(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="implicit")
    error = failed(await send_one(settings_for(server, pki, tls="tls", ca_file="")))

    assert error.step == "connect"
    assert "certificate is not trusted" in str(error)


async def test_verify_off_accepts_an_unknown_certificate(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls")
    delivered(await send_one(settings_for(server, pki, ca_file="", verify=False)))
    assert server.received[0].tls


# -- plain connections and passwords -------------------------------------------------------


async def test_password_is_never_sent_unencrypted_unless_allowed(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="none", users=USERS, auth_over_plaintext=True)
    settings = settings_for(server, pki, tls="none", username="ops@example.com", password=PASSWORD)

    error = failed(await send_one(settings))

    assert error.outcome is Outcome.ACCOUNT
    assert error.step == "auth"
    assert "unencrypted" in str(error) and "allow_plaintext_auth" in str(error)
    assert server.auth_attempts == []  # the password never left the process
    assert PASSWORD not in str(error)


async def test_plaintext_auth_works_when_explicitly_allowed(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="none", users=USERS, auth_over_plaintext=True)
    settings = settings_for(
        server,
        pki,
        tls="none",
        username="ops@example.com",
        password=PASSWORD,
        allow_plaintext_auth=True,
    )
    delivered(await send_one(settings))
    assert (server.received[0].tls, server.received[0].auth_mechanism) == (False, "PLAIN")


async def test_no_credentials_sends_without_auth_over_plain_smtp(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="none")
    delivered(await send_one(settings_for(server, pki, tls="none")))
    assert server.received[0].auth_mechanism is None


async def test_login_is_used_when_the_server_offers_no_plain(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls", users=USERS, mechanisms=["LOGIN"])
    settings = settings_for(server, pki, username="ops@example.com", password=PASSWORD)
    delivered(await send_one(settings))
    assert server.received[0].auth_mechanism == "LOGIN"


@pytest.mark.parametrize("mechanisms", [["PLAIN", "LOGIN"], ["LOGIN"]])
async def test_wrong_password_is_an_auth_failure_that_keeps_the_mail(
    smtp_server: StartServer, pki: certs.TestPKI, mechanisms: list[str]
) -> None:
    server = smtp_server(tls="starttls", users=USERS, mechanisms=mechanisms)
    settings = settings_for(server, pki, username="ops@example.com", password="wrong-secret")

    error = failed(await send_one(settings))

    assert error.auth_failed and error.account_error and not error.permanent
    assert error.reply_code == 535
    assert "ops@example.com" in str(error)
    assert "wrong-secret" not in str(error)
    assert server.received == []


# -- OAuth2 bearer tokens ------------------------------------------------------------------

JWT_LIKE = "eyJ" + "a" * 6000  # real access tokens are JWTs of several KiB


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
async def test_bearer_token_is_accepted_even_when_several_kib_long(
    smtp_server: StartServer, pki: certs.TestPKI, mechanism: str
) -> None:
    server = smtp_server(tls="starttls", valid_tokens={JWT_LIKE})
    settings = settings_for(
        server,
        pki,
        username="ops@example.com",
        mechanism=mechanism,
        token_provider=StaticTokenProvider(JWT_LIKE),
    )

    delivered(await send_one(settings))

    mail = server.received[0]
    assert (mail.auth_mechanism, mail.auth_identity) == (mechanism.upper(), "ops@example.com")


async def test_oauthbearer_names_host_and_port(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls", valid_tokens={"t0k"})
    settings = settings_for(
        server,
        pki,
        username="ops@example.com",
        mechanism="oauthbearer",
        token_provider=StaticTokenProvider("t0k"),
    )
    delivered(await send_one(settings))
    (attempt,) = server.auth_attempts
    assert (attempt.host, attempt.port) == ("127.0.0.1", str(server.port))


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
async def test_refused_token_is_invalidated_and_a_fresh_one_succeeds(
    smtp_server: StartServer, pki: certs.TestPKI, mechanism: str
) -> None:
    server = smtp_server(tls="starttls", valid_tokens={"fresh-token"})
    tokens = RotatingTokens("revoked-token", "fresh-token")
    settings = settings_for(
        server, pki, username="ops@example.com", mechanism=mechanism, token_provider=tokens
    )

    delivered(await send_one(settings))

    assert tokens.invalidated == ["revoked-token"]
    assert [(a.token, a.success) for a in server.auth_attempts] == [
        ("revoked-token", False),
        ("fresh-token", True),
    ]
    assert len(server.received) == 1


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
async def test_token_refused_twice_is_an_auth_failure_without_the_token_in_it(
    smtp_server: StartServer, pki: certs.TestPKI, mechanism: str
) -> None:
    server = smtp_server(tls="starttls", valid_tokens=set())
    tokens = RotatingTokens("old-token", "new-token")
    settings = settings_for(
        server, pki, username="ops@example.com", mechanism=mechanism, token_provider=tokens
    )

    error = failed(await send_one(settings))

    assert error.auth_failed and not error.permanent
    assert error.reply_code == 535
    assert "refused the OAuth2 token for ops@example.com" in str(error)
    assert "old-token" not in str(error) and "new-token" not in str(error)
    assert len(server.auth_attempts) == 2
    assert server.received == []


async def test_server_wanting_the_two_step_form_gets_the_token_after_334(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls", valid_tokens={"tok"}, bearer_two_step_only=True)
    settings = settings_for(
        server, pki, username="ops@example.com", token_provider=StaticTokenProvider("tok")
    )
    delivered(await send_one(settings))
    assert server.received[0].auth_mechanism == "XOAUTH2"


async def test_server_with_a_short_command_limit_still_takes_a_long_token(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    # aiosmtpd's default 512-byte command limit: the AUTH line is refused as too long, and
    # the token goes on a line of its own after the 334.
    server = smtp_server(tls="starttls", valid_tokens={JWT_LIKE}, command_size_limit=512)
    settings = settings_for(
        server, pki, username="ops@example.com", token_provider=StaticTokenProvider(JWT_LIKE)
    )
    delivered(await send_one(settings))


async def test_token_account_falls_back_to_the_other_bearer_mechanism(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls", valid_tokens={"tok"}, mechanisms=["OAUTHBEARER"])
    settings = settings_for(
        server, pki, username="ops@example.com", token_provider=StaticTokenProvider("tok")
    )
    delivered(await send_one(settings))
    assert server.received[0].auth_mechanism == "OAUTHBEARER"


async def test_password_account_on_a_token_only_server_says_what_to_configure(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls", mechanisms=["XOAUTH2"])
    settings = settings_for(server, pki, username="ops@example.com", password=PASSWORD)
    error = failed(await send_one(settings))
    assert error.account_error
    assert "offers AUTH XOAUTH2" in str(error) and "OAuth2" in str(error)


async def test_token_provider_failure_is_reported_as_an_account_error(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    class Expired:
        async def token(self) -> str:
            raise RuntimeError("refresh token expired: run `notifier oauth2 authorize ops`")

        async def invalidate(self, token: str) -> None:
            return None

    server = smtp_server(tls="starttls")
    settings = settings_for(server, pki, username="ops@example.com", token_provider=Expired())
    error = failed(await send_one(settings))
    assert error.account_error
    assert "notifier oauth2 authorize ops" in str(error)


# -- server replies ------------------------------------------------------------------------


async def test_451_is_temporary_and_the_next_attempt_delivers(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls")
    server.script_data("451 4.3.0 mailbox busy, try later")
    sender = SmtpSender(settings_for(server, pki))
    mail = alarm_mail()

    (first,) = await sender.send([mail])
    (second,) = await send_all(sender, [mail])

    error = failed(first)
    assert error.outcome is Outcome.TEMPORARY
    assert (error.step, error.reply_code) == ("data", 451)
    assert "mailbox busy" in str(error)
    delivered(second)
    assert len(server.received) == 1


async def test_550_for_the_only_recipient_is_permanent_with_the_server_text(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls")
    server.refuse_recipient("ops@example.com", "550 5.1.1 <ops@example.com>: no such user")

    error = failed(await send_one(settings_for(server, pki)))

    assert error.permanent
    assert (error.step, error.reply_code) == ("rcpt", 550)
    assert "no such user" in error.reply
    assert server.received == []


async def test_one_refused_recipient_does_not_stop_the_others(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls")
    server.refuse_recipient("gone@example.com")
    envelope = Envelope("notifier@example.com", "Notifier", ("ops@example.com", "gone@example.com"))

    result = delivered(await send_one(settings_for(server, pki), envelope=envelope))

    assert result.accepted == ("ops@example.com",)
    assert result.refused["gone@example.com"][0] == 550
    assert server.received[0].rcpt_tos == ("ops@example.com",)


async def test_554_after_data_is_permanent(smtp_server: StartServer, pki: certs.TestPKI) -> None:
    server = smtp_server(tls="starttls")
    server.script_data("554 5.6.0 message content rejected")
    error = failed(await send_one(settings_for(server, pki)))
    assert error.permanent and error.step == "data"


async def test_connection_refused_is_temporary_and_names_host_and_port(pki: certs.TestPKI) -> None:
    port = free_port()  # nothing listens here
    settings = SmtpSettings(host="127.0.0.1", port=port, tls="auto", timeout_s=5.0)

    error = failed((await send_all(SmtpSender(settings), [alarm_mail()]))[0])

    assert error.outcome is Outcome.TEMPORARY
    assert error.step == "connect"
    assert f"127.0.0.1:{port}" in str(error)
    assert "refused" in str(error).lower()


async def test_a_silent_server_times_out_as_a_temporary_error() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # says nothing, until the client gives up

    server = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = SmtpSettings(host="127.0.0.1", port=port, timeout_s=0.3)
        error = failed((await send_all(SmtpSender(settings), [alarm_mail()]))[0])
    finally:
        server.close()
        # Python 3.11's wait_closed does not wait for the connections the server accepted.
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
        await server.wait_closed()
    assert error.temporary
    assert "no answer within 0.3 s" in str(error)


# -- connections -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_options", "setting_changes", "delivers"),
    [
        pytest.param({"tls": "starttls"}, {}, True, id="delivered-over-starttls"),
        pytest.param({"tls": "none"}, {"tls": "starttls"}, False, id="starttls-not-offered"),
        pytest.param(
            {"tls": "starttls", "users": USERS},
            {"username": "ops@example.com", "password": "wrong-secret"},
            False,
            id="password-refused-over-tls",
        ),
    ],
)
async def test_the_connection_closes_by_itself_after_the_batch_and_before_close_returns(
    smtp_server: StartServer,
    pki: certs.TestPKI,
    server_options: dict[str, Any],
    setting_changes: dict[str, Any],
    delivers: bool,
) -> None:
    # QUIT and the close follow `send` in the background (the caller records its mail
    # meanwhile); `close()` waits for them: a socket still open then (a TLS one waits for the
    # server's close_notify) is one a stopping service leaves behind.
    server = smtp_server(**server_options)
    sender = SmtpSender(settings_for(server, pki, **setting_changes), account="ops")

    (result,) = await sender.send([alarm_mail()])
    async with asyncio.timeout(10):
        while connections_to(server.port):
            await asyncio.sleep(0.01)  # not held open until the next batch
    (again,) = await sender.send([alarm_mail()])
    await sender.close()

    assert isinstance(result, SendResult) is delivers, str(result)
    assert isinstance(again, SendResult) is delivers, str(again)
    assert server.connections == 2
    assert connections_to(server.port) == 0


async def test_a_batch_uses_one_connection(smtp_server: StartServer, pki: certs.TestPKI) -> None:
    server = smtp_server(tls="starttls", users=USERS)
    settings = settings_for(server, pki, username="ops@example.com", password=PASSWORD)
    mails = [alarm_mail(code=f"0x0001000{i}") for i in range(5)]

    results = await send_all(SmtpSender(settings), mails)

    assert all(isinstance(r, SendResult) for r in results)
    assert len(server.received) == 5
    assert server.connections == 1
    assert len(server.auth_attempts) == 1


async def test_a_dropped_connection_is_reopened_for_the_rest_of_the_batch(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls")
    server.max_mails_per_connection = 2
    mails = [alarm_mail(code=f"0x0001000{i}") for i in range(5)]

    results = await send_all(SmtpSender(settings_for(server, pki)), mails)

    assert all(isinstance(r, SendResult) for r in results), [str(r) for r in results]
    assert [m.message["Message-ID"] for m in server.received] == [m.message_id for m in mails]
    assert server.connections == 3


async def test_a_refused_mail_in_a_batch_does_not_stop_the_others(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls")
    server.refuse_recipient("gone@example.com")
    gone = Envelope("notifier@example.com", "Notifier", ("gone@example.com",))
    mails = [alarm_mail(), alarm_mail(envelope=gone, code="0x2"), alarm_mail(code="0x3")]

    results = await send_all(SmtpSender(settings_for(server, pki)), mails)

    assert [type(r) for r in results] == [SendResult, DeliveryError, SendResult]
    assert len(server.received) == 2
    assert server.connections == 1


async def test_connection_failure_fails_the_whole_batch_alike(pki: certs.TestPKI) -> None:
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), timeout_s=5.0)
    results = await send_all(SmtpSender(settings), [alarm_mail(), alarm_mail(code="0x9")])
    assert [failed(r).step for r in results] == ["connect", "connect"]


async def test_bcc_recipients_get_the_mail_but_no_header_shows_them(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls")
    envelope = Envelope(
        "notifier@example.com",
        "Notifier",
        ("ops@example.com",),
        cc=("Lead <lead@example.com>",),
        bcc=("audit@example.com",),
    )

    delivered(await send_one(settings_for(server, pki), envelope=envelope))

    mail = server.received[0]
    assert set(mail.rcpt_tos) == {"ops@example.com", "lead@example.com", "audit@example.com"}
    assert mail.message["Cc"] == "Lead <lead@example.com>"
    assert "Bcc" not in mail.message
    assert b"audit@example.com" not in mail.content


async def test_outcomes_are_counted_per_account(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls")
    server.script_data("250 OK", "451 4.3.0 later")
    metrics = Metrics(CollectorRegistry())
    sender = SmtpSender(settings_for(server, pki), account="ops", metrics=metrics)

    await send_all(sender, [alarm_mail(), alarm_mail(code="0x2")])

    sample = metrics.registry.get_sample_value
    assert sample("notifier_mail_sent_total", {"account": "ops"}) == 1
    assert sample("notifier_mail_failures_total", {"account": "ops", "outcome": "temporary"}) == 1


def test_settings_repr_shows_no_secret() -> None:
    settings = SmtpSettings(
        host="smtp.example.com",
        username="u",
        password="hunter2",
        token_provider=StaticTokenProvider("tok-secret"),
    )
    assert "hunter2" not in repr(settings) and "tok-secret" not in repr(settings)
    assert ENVELOPE.mail_from == "notifier@example.com"


async def test_a_bare_composed_message_still_reaches_its_bcc_recipients(
    smtp_server: StartServer, pki: certs.TestPKI
) -> None:
    server = smtp_server(tls="starttls")
    envelope = Envelope(
        "notifier@example.com", "Notifier", ("ops@example.com",), bcc=("audit@example.com",)
    )
    message = alarm_mail(envelope=envelope).message  # no Outgoing: as the dispatcher sends it

    (result,) = await send_all(SmtpSender(settings_for(server, pki)), [message])

    delivered(result)
    assert server.received[0].rcpt_tos == ("ops@example.com", "audit@example.com")
    assert b"audit@example.com" not in server.received[0].content
