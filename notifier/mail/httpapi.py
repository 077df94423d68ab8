"""Mail through an HTTP API (Microsoft Graph sendMail, the Gmail API): the same composed MIME
message as SMTP, posted with an OAuth2 bearer token. graph.py and gmail_api.py say what each
request looks like; this module sends it and classifies the answer.

Failure handling (DeliveryError.outcome), as for SMTP replies:
- temporary: no connection, timeouts, 408, 429, every 5xx, and Gmail's 403 rate limits
  (reason rateLimitExceeded / userRateLimitExceeded). After a rate limit or a 503 the sender
  does not ask the server again before its Retry-After (each mail fails at once, temporary).
- account: 401 (the token was refused, also after one fresh token; `auth_failed` is set),
  any other 403 (no permission to send as the mailbox), 404 (no such mailbox), no token.
- permanent: any other 4xx (the message itself was refused, e.g. too large or not MIME).
"""

from __future__ import annotations

import copy
import email.generator
import email.policy
import email.utils
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage

import httpx

from notifier.log import get_logger
from notifier.mail.tokens import TokenProvider, fetch_token
from notifier.mail.transport import (
    DeliveryError,
    Outcome,
    Outgoing,
    SendReport,
    SendResult,
    TransportHealth,
    count_results,
    one_line,
)
from notifier.metrics import Metrics

log = get_logger(__name__)

Clock = Callable[[], float]
# Without a Retry-After, a 429 / 503 still means "not now": wait at least this long.
DEFAULT_RETRY_AFTER_S = 30.0
# A Retry-After beyond this is a server's mistake, not a reason to stop mailing for a day.
MAX_RETRY_AFTER_S = 3600.0
_TEMPORARY_4XX = frozenset({408, 425, 429})
_ACCOUNT_4XX = frozenset({401, 403, 404})
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


@dataclass(frozen=True)
class ApiRequest:
    """One mail as the API wants it."""

    url: str
    content: bytes
    content_type: str


RequestBuilder = Callable[[bytes], ApiRequest]  # the MIME message -> the request


def rate_limited(status: int, body: str) -> bool:
    """Throttling: 429, or Gmail's 403 with reason rateLimitExceeded / userRateLimitExceeded
    (Gmail says "slow down" with a 403, not a 429)."""
    if status == 429:
        return True
    if status != 403:
        return False
    try:
        errors = json.loads(body)["error"]["errors"]
        reasons = {str(e.get("reason", "")) for e in errors}
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return bool(reasons & _RATE_LIMIT_REASONS)


def classify_status(status: int, rate_limit: bool = False) -> Outcome:
    """What an HTTP answer (not 2xx) means for the mail (see the module docstring)."""
    if rate_limit or status >= 500 or status in _TEMPORARY_4XX or status < 400:
        return Outcome.TEMPORARY
    if status in _ACCOUNT_4XX:
        return Outcome.ACCOUNT
    return Outcome.PERMANENT


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), bounded;
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)


def mime_bytes(out: Outgoing) -> bytes:
    """The message as the APIs take it: the composed MIME (CRLF lines, 7-bit bodies), with a
    Bcc header for envelope recipients the headers do not name: the APIs take the recipients
    from the headers and keep Bcc from what the recipients see."""
    message = copy.copy(out.message)
    named = {
        addr.lower()
        for _, addr in email.utils.getaddresses(
            [str(v) for h in ("To", "Cc", "Bcc") for v in message.get_all(h, [])]
        )
    }
    hidden = [r for r in out.rcpt_to if r.lower() not in named]
    if hidden:
        message["Bcc"] = ", ".join(hidden)
    utf8 = not all(a.isascii() for a in (out.mail_from, *out.rcpt_to))
    policy = (email.policy.SMTPUTF8 if utf8 else email.policy.SMTP).clone(cte_type="7bit")
    with io.BytesIO() as buffer:
        email.generator.BytesGenerator(buffer, policy=policy).flatten(message)
        return buffer.getvalue()


class ApiSender:
    """A `MailTransport` posting each mail to an HTTP mail API with a bearer token. The
    connection pool is kept between batches; `close()` ends it."""

    def __init__(
        self,
        kind: str,
        endpoint: str,
        build: RequestBuilder,
        token_provider: TokenProvider,
        *,
        account: str = "",
        ca_file: str = "",
        timeout_s: float = 30.0,
        metrics: Metrics | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.health = TransportHealth(kind, endpoint)
        self._build = build
        self._tokens = token_provider
        self._account = account
        self._verify: str | bool = ca_file or True
        self._timeout_s = timeout_s
        self._metrics = metrics
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._quiet_until = 0.0  # Retry-After: no request before this time

    async def send(
        self, messages: Sequence[EmailMessage | Outgoing]
    ) -> list[SendResult | DeliveryError]:
        """Post each message; one SendResult or DeliveryError per message, in order."""
        results = [await self._send_one(Outgoing.of(m)) for m in messages]
        count_results(self._metrics, self._account, results, self.health)
        return results

    async def test(self, message: EmailMessage | Outgoing) -> SendReport:
        (outcome,) = await self.send([message])
        return SendReport(
            transport=self.kind,
            endpoint=self.endpoint,
            result=outcome if isinstance(outcome, SendResult) else None,
            error=outcome if isinstance(outcome, DeliveryError) else None,
            mechanism="OAuth2 bearer token",
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- one mail -----------------------------------------------------------------------------

    async def _send_one(self, out: Outgoing) -> SendResult | DeliveryError:
        wait = self._quiet_until - self._clock()
        if wait > 0:
            return self._error(
                f"the server asked to wait (Retry-After): next try in {wait:.0f} s",
                Outcome.TEMPORARY,
                retry_after_s=wait,
            )
        if not out.rcpt_to:
            return self._error("the mail has no recipients", Outcome.PERMANENT)
        request = self._build(mime_bytes(out))
        try:
            token = await self._token()
            response = await self._post(request, token)
            if response.status_code == 401:
                # Revoked or expired early: one fresh token, once (as for SMTP AUTH).
                log.info("mail_api_token_refused", account=self._account, endpoint=self.endpoint)
                await self._tokens.invalidate(token)
                response = await self._post(request, await self._token())
        except DeliveryError as error:
            return error
        if 200 <= response.status_code < 300:
            return SendResult(
                message_id=out.message_id,
                accepted=out.rcpt_to,
                reply=f"{response.status_code} {response.reason_phrase}".strip(),
            )
        return self._refused(response)

    async def _post(self, request: ApiRequest, token: str) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s, verify=self._verify)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": request.content_type}
        try:
            return await self._client.post(request.url, content=request.content, headers=headers)
        except httpx.TimeoutException:
            raise self._error(
                f"no answer within {self._timeout_s:g} s", Outcome.TEMPORARY
            ) from None
        except httpx.HTTPError as exc:
            raise self._error(
                f"cannot reach the API: {one_line(str(exc)) or type(exc).__name__}",
                Outcome.TEMPORARY,
            ) from None

    async def _token(self) -> str:
        return await fetch_token(self._tokens, self._timeout_s, endpoint=self.endpoint, step="send")

    def _refused(self, response: httpx.Response) -> DeliveryError:
        status = response.status_code
        throttled = rate_limited(status, response.text)
        outcome = classify_status(status, throttled)
        wait = None
        if throttled or status == 503:
            now = self._clock()
            wait = retry_after_s(response.headers.get("Retry-After"), now)
            self._quiet_until = now + (DEFAULT_RETRY_AFTER_S if wait is None else wait)
            self.health.next_retry = self._quiet_until
        return self._error(
            _advice(self.kind, status, throttled),
            outcome,
            status,
            one_line(response.text),
            auth_failed=status == 401,
            retry_after_s=wait,
        )

    def _error(
        self,
        detail: str,
        outcome: Outcome,
        code: int | None = None,
        reply: str = "",
        *,
        auth_failed: bool = False,
        retry_after_s: float | None = None,
    ) -> DeliveryError:
        return DeliveryError(
            detail,
            outcome=outcome,
            step="send",
            endpoint=self.endpoint,
            reply_code=code,
            reply=reply,
            auth_failed=auth_failed,
            retry_after_s=retry_after_s,
        )


def _advice(kind: str, status: int, throttled: bool) -> str:
    """What a refusal means and what to do about it, in words."""
    api = "Microsoft Graph" if kind == "graph" else "the Gmail API"
    permission = (
        "Mail.Send (application permission with admin consent, or delegated)"
        if kind == "graph"
        else "the scope https://www.googleapis.com/auth/gmail.send"
    )
    if throttled or status == 503:
        return f"{api} is throttling (rate limit) or busy: will retry after the time it asked for"
    if status == 401:
        return (
            f"{api} refused the OAuth2 token (a fresh one too): check that the token is for "
            f"{api} (the account's scope) and re-authorize with `notifier oauth2 authorize`"
        )
    if status == 403:
        return f"{api} refused to send as this mailbox: grant {permission}"
    if status == 404:
        return f"{api} does not know the mailbox: check sender_address / username"
    if status >= 500 or classify_status(status) is Outcome.TEMPORARY:
        return f"{api} failed: will retry"
    return f"{api} refused the message"
