"""The HTTP mail transports (Microsoft Graph sendMail, the Gmail API) against a loopback API
server that checks tokens issued by the Authlib test server and decodes the MIME message."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import partial

import httpx
import pytest

from notifier.mail.compose import Envelope
from notifier.mail.gmail_api import gmail_request
from notifier.mail.graph import graph_request
from notifier.mail.httpapi import ApiSender, classify_status, retry_after_s
from notifier.mail.transport import DeliveryError, Outcome, SendResult
from tests.authserver import AuthServer
from tests.mail.conftest import alarm_mail
from tests.mailapi import MailApiServer

MAILBOX = "alarms@contoso.com"
APP = "notifier-app"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GMAIL_SCOPE = "https://www.googleapis.com/auth/gmail.send"


class IssuedTokens:
    """A TokenProvider that asks the test authorization server for a client-credentials token
    each time; counts `invalidate` calls."""

    def __init__(self, auth: AuthServer, scope: str, broken: bool = False) -> None:
        self._auth = auth
        self._scope = scope
        self._broken = broken
        self.invalidated = 0

    async def token(self) -> str:
        if self._broken:
            return "not-a-token"
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                self._auth.token_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": APP,
                    "client_secret": "s3cret",
                    "scope": self._scope,
                },
            )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    async def invalidate(self, token: str) -> None:
        self.invalidated += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


_OPENED: list[ApiSender] = []


@pytest.fixture(autouse=True)
async def close_senders() -> AsyncIterator[None]:
    """Every sender a test made is closed after it (its pooled connection with it)."""
    yield
    while _OPENED:
        await _OPENED.pop().close()


def opened(sender: ApiSender) -> ApiSender:
    _OPENED.append(sender)
    return sender


@pytest.fixture
def auth() -> Iterator[AuthServer]:
    with AuthServer() as server:
        server.add_client(APP, secret="s3cret")
        yield server


@pytest.fixture
def api(auth: AuthServer) -> Iterator[MailApiServer]:
    with MailApiServer(auth, apps=(APP,)) as server:
        yield server


def graph(api: MailApiServer, tokens: IssuedTokens, clock: Clock | None = None) -> ApiSender:
    return opened(
        ApiSender(
            "graph",
            api.url,
            partial(graph_request, api.url, MAILBOX),
            tokens,
            account="ops",
            clock=clock or Clock(),
        )
    )


def gmail(api: MailApiServer, tokens: IssuedTokens) -> ApiSender:
    return opened(
        ApiSender("gmail_api", api.url, partial(gmail_request, api.url), tokens, account="ops")
    )


def failed(result: SendResult | DeliveryError) -> DeliveryError:
    assert isinstance(result, DeliveryError), result
    return result


async def test_graph_posts_the_mime_message_base64_and_keeps_the_message_id(
    auth: AuthServer, api: MailApiServer
) -> None:
    envelope = Envelope(
        sender=MAILBOX, sender_name="Alarms", to=("ops@example.com",), bcc=("boss@example.com",)
    )
    mail = alarm_mail(envelope)
    sender = graph(api, IssuedTokens(auth, GRAPH_SCOPE))
    (result,) = await sender.send([mail])
    assert isinstance(result, SendResult), result
    assert result.reply.startswith("202")
    (got,) = api.received
    assert got.api == "graph" and got.mailbox == MAILBOX
    assert got.content_type.startswith("text/plain")
    assert got.message["Message-ID"] == mail.message_id == result.message_id
    assert "0x00010002" in str(got.message["Subject"])
    # Graph takes the recipients from the MIME headers: the Bcc one must be there.
    assert got.message["Bcc"] == "boss@example.com"
    assert sender.health.state == "ok" and sender.health.last_success is not None


async def test_gmail_api_posts_raw_base64url(auth: AuthServer, api: MailApiServer) -> None:
    sender = gmail(api, IssuedTokens(auth, GMAIL_SCOPE))
    mail = alarm_mail()
    (result,) = await sender.send([mail])
    assert isinstance(result, SendResult), result
    assert result.reply.startswith("200")
    (got,) = api.received
    assert got.api == "gmail_api" and got.mailbox == APP  # "me": whom the token is for
    assert got.content_type == "application/json"
    assert got.message["Message-ID"] == mail.message_id
    assert got.message.get_body(("plain",)) is not None


async def test_a_token_for_the_wrong_api_is_an_account_error(
    auth: AuthServer, api: MailApiServer
) -> None:
    # An SMTP-scoped token (the account's old transport) does not open Graph.
    sender = graph(api, IssuedTokens(auth, "https://outlook.office.com/SMTP.Send"))
    error = failed((await sender.send([alarm_mail()]))[0])
    assert error.outcome is Outcome.ACCOUNT and error.reply_code == 403
    assert "Mail.Send" in str(error)
    assert api.received == []


async def test_a_refused_token_is_renewed_once_then_the_account_fails(
    auth: AuthServer, api: MailApiServer
) -> None:
    tokens = IssuedTokens(auth, GRAPH_SCOPE, broken=True)
    sender = graph(api, tokens)
    error = failed((await sender.send([alarm_mail()]))[0])
    assert error.outcome is Outcome.ACCOUNT and error.auth_failed
    assert error.reply_code == 401
    assert tokens.invalidated == 1 and api.requests == 2
    assert "not-a-token" not in str(error)
    assert sender.health.state == "failing" and sender.health.failing_since is not None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (400, Outcome.PERMANENT),
        (413, Outcome.PERMANENT),
        (403, Outcome.ACCOUNT),
        (404, Outcome.ACCOUNT),
        (500, Outcome.TEMPORARY),
        (502, Outcome.TEMPORARY),
        (408, Outcome.TEMPORARY),
    ],
)
async def test_each_answer_has_its_failure_class(
    auth: AuthServer, api: MailApiServer, status: int, outcome: Outcome
) -> None:
    api.answers.append((status, {}))
    sender = graph(api, IssuedTokens(auth, GRAPH_SCOPE))
    error = failed((await sender.send([alarm_mail()]))[0])
    assert error.outcome is outcome
    assert error.reply_code == status
    assert f"server answered {status}" in str(error)
    # A permanent refusal is about the message: the transport itself is not failing.
    assert sender.health.state == ("idle" if outcome is Outcome.PERMANENT else "failing")


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_keeps_the_api_quiet_until_then(
    auth: AuthServer, api: MailApiServer, status: int
) -> None:
    clock = Clock()
    api.answers.append((status, {"Retry-After": "120"}))
    sender = graph(api, IssuedTokens(auth, GRAPH_SCOPE), clock)
    error = failed((await sender.send([alarm_mail()]))[0])
    assert error.outcome is Outcome.TEMPORARY and error.retry_after_s == 120
    assert sender.health.next_retry == clock.now + 120
    clock.now += 60
    held = failed((await sender.send([alarm_mail()]))[0])
    assert held.outcome is Outcome.TEMPORARY and "Retry-After" in str(held)
    assert api.requests == 1, "asked the server again before Retry-After"
    clock.now += 61
    (result,) = await sender.send([alarm_mail()])
    assert isinstance(result, SendResult)
    assert api.requests == 2 and len(api.received) == 1


async def test_gmail_rate_limit_403_is_temporary_and_holds_off(
    auth: AuthServer, api: MailApiServer
) -> None:
    # Gmail answers its per-user rate limit with 403, not 429 (and no Retry-After).
    body = {
        "error": {
            "code": 403,
            "message": "User-rate limit exceeded.",
            "errors": [{"reason": "userRateLimitExceeded", "domain": "usageLimits"}],
            "status": "PERMISSION_DENIED",
        }
    }
    api.answers.append((403, {}, body))
    clock = Clock()
    sender = opened(
        ApiSender(
            "gmail_api",
            api.url,
            partial(gmail_request, api.url),
            IssuedTokens(auth, GMAIL_SCOPE),
            clock=clock,
        )
    )
    error = failed((await sender.send([alarm_mail()]))[0])
    assert error.outcome is Outcome.TEMPORARY, error
    assert "rate limit" in str(error)
    assert failed((await sender.send([alarm_mail()]))[0]).outcome is Outcome.TEMPORARY
    assert api.requests == 1
    clock.now += 31
    assert isinstance((await sender.send([alarm_mail()]))[0], SendResult)


async def test_an_unreachable_api_is_temporary(auth: AuthServer) -> None:
    with MailApiServer(auth) as api:
        url = api.url
    sender = opened(
        ApiSender(
            "graph", url, partial(graph_request, url, MAILBOX), IssuedTokens(auth, GRAPH_SCOPE)
        )
    )
    error = failed((await sender.send([alarm_mail()]))[0])
    assert error.outcome is Outcome.TEMPORARY
    assert "cannot reach the API" in str(error)


async def test_connections_are_reused_between_batches(auth: AuthServer, api: MailApiServer) -> None:
    sender = graph(api, IssuedTokens(auth, GRAPH_SCOPE))
    await sender.send([alarm_mail(), alarm_mail(code="0x2")])
    await sender.send([alarm_mail(code="0x3")])
    assert len(api.received) == 3
    assert len(set(api.peer_ports)) == 1, api.peer_ports


def test_status_classes_and_retry_after_forms() -> None:
    assert classify_status(401) is Outcome.ACCOUNT
    assert classify_status(429) is Outcome.TEMPORARY
    assert classify_status(422) is Outcome.PERMANENT
    assert retry_after_s("7", 0.0) == 7.0
    assert retry_after_s("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert retry_after_s("soon", 0.0) is None
    assert retry_after_s("999999", 0.0) == 3600.0
