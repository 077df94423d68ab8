"""The relay consumer: every mail the SMTP relay took goes to its envelope recipients through
the relay account's transport. Routes, grouping and alarm state are bypassed: the device wrote
the mail, notifier only carries it (with OAuth2 where the device cannot).

The message is rebuilt from the stored bytes on every attempt, with the same Message-ID each
time (the sender's, or one derived from the record id), so a retry after a crash is
recognisable. A record is acked only once the server took the mail; failures retry with backoff,
dead-letter when the server refuses the mail for good, and show on the status page.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from notifier.backoff import Backoff
from notifier.config import AccountSettings
from notifier.dispatch.errors import DispatchError
from notifier.dispatch.worker import UNEXPECTED_FAILURES_BEFORE_DEAD, keep_stepping, retry_in_s
from notifier.log import get_logger
from notifier.mail.accounts import envelope_for
from notifier.mail.compose import message_id_for
from notifier.mail.transport import DeliveryError, MailTransport, Outcome, Outgoing, SendResult
from notifier.metrics import Metrics
from notifier.records import SMTP_RELAY, MailEnvelope, Record
from notifier.spool.base import Lease, Spool

log = get_logger("notifier.dispatch.relay")

RELAY_CONSUMER = "relay"

# Mails leased (and held in memory) at once: each may be max_message_bytes large.
_LEASE_BATCH = 50
# Long enough for a batch of large mails over a slow link; a crash makes them due again after.
_VISIBILITY_S = 900.0


class RelayError(DispatchError):
    """A stored mail that cannot be sent as it is (no envelope, headers that cannot be set)."""


def relayed_message(record: Record, account: AccountSettings, *, rewrite_from: bool) -> Outgoing:
    """The stored mail, ready for the account's transport; pure. Raises `RelayError`.

    With `rewrite_from`, From and the envelope sender become the account's address (M365 and
    Gmail send only as the mailbox), keeping the original's display name; the original From
    goes into X-Original-From, and into Reply-To when the mail has none, so replies reach the
    device's address.
    """
    try:
        envelope = MailEnvelope.of(record)
    except ValueError as e:
        raise RelayError(str(e)) from None
    message = email.message_from_bytes(record.raw, _class=EmailMessage, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    own = envelope_for(account, [], [], [])
    try:
        if "Message-ID" not in message:
            message["Message-ID"] = message_id_for([record.id], own.domain, salt=SMTP_RELAY)
        if not rewrite_from:
            return Outgoing(message, envelope.mail_from, envelope.rcpt_to)
        original = message.get("From")
        if original is not None:
            del message["From"]
            message["X-Original-From"] = str(original)
            if "Reply-To" not in message:
                message["Reply-To"] = str(original)
        # A Sender header would name the device's address beside the rewritten From.
        del message["Sender"]
        message["From"] = _rewritten_from(original, own.from_address)
    except (ValueError, TypeError, IndexError) as e:
        raise RelayError(f"the mail's headers cannot be rewritten: {e}") from None
    return Outgoing(message, own.mail_from, envelope.rcpt_to)


def _rewritten_from(original: Any, own: Address) -> Address:
    """The account's address, under the display name the device gave (else the account's)."""
    addresses = getattr(original, "addresses", ())
    name = addresses[0].display_name if addresses else ""
    return Address(name or own.display_name, own.username, own.domain)


class RelayWorker:
    """Leases what the relay consumer is owed, sends the relayed mails, acks the rest."""

    consumer = RELAY_CONSUMER

    def __init__(
        self,
        account: AccountSettings,
        transport: MailTransport,
        lock: asyncio.Lock,
        spool: Spool,
        metrics: Metrics,
        *,
        rewrite_from: bool = True,
        retry_base_s: float = 5.0,
        retry_max_s: float = 900.0,
    ) -> None:
        self.account = account.name
        self._account = account
        self._transport = transport
        self._lock = lock
        self._spool = spool
        self._metrics = metrics
        self._rewrite_from = rewrite_from
        self._retry = Backoff(base_s=retry_base_s, cap_s=retry_max_s)
        self._stopping = asyncio.Event()
        self._sending = 0
        self.last_error = ""

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await keep_stepping(self._step, self._stopping, consumer=self.consumer)

    async def _step(self) -> None:
        leases = await self._spool.lease(self.consumer, _LEASE_BATCH, _VISIBILITY_S)
        if not leases:
            await self._spool.wait(1.0, self.consumer)
            return
        # The spool hands every consumer every record: alarms and log lines are not ours.
        others = [lease.record.id for lease in leases if lease.record.receiver != SMTP_RELAY]
        if others:
            await self._spool.ack(self.consumer, others)
        mails = [lease for lease in leases if lease.record.receiver == SMTP_RELAY]
        if mails:
            await self._relay(mails)

    async def _relay(self, leases: Sequence[Lease]) -> None:
        ready: list[tuple[Lease, Outgoing]] = []
        for lease in leases:
            try:
                out = relayed_message(lease.record, self._account, rewrite_from=self._rewrite_from)
            except RelayError as e:  # the stored mail itself: no retry can help
                error = DeliveryError(str(e), outcome=Outcome.PERMANENT, step="compose")
                await self._failed(lease, error)
                continue
            ready.append((lease, out))
        if not ready:
            return
        self._sending = len(ready)
        try:
            async with self._lock:
                results = await self._transport.send([out for _, out in ready])
        except Exception as e:
            # A bug, not the server: retry, and dead-letter a mail that keeps failing this way.
            log.exception("relaying failed", account=self.account, error=str(e))
            results = [
                DeliveryError(
                    f"{type(e).__name__}: {e}",
                    outcome=Outcome.PERMANENT
                    if lease.attempts >= UNEXPECTED_FAILURES_BEFORE_DEAD
                    else Outcome.TEMPORARY,
                    step="send",
                )
                for lease, _ in ready
            ]
        finally:
            self._sending = 0
        for (lease, out), result in zip(ready, results, strict=True):
            if isinstance(result, DeliveryError):
                await self._failed(lease, result)
            else:
                await self._sent(lease, out, result)

    async def _sent(self, lease: Lease, out: Outgoing, result: SendResult) -> None:
        self._metrics.mails_sent.labels(self.account).inc()
        log.info(
            "mail relayed",
            account=self.account,
            record=lease.record.id,
            message_id=result.message_id,
            mail_from=out.mail_from,
            recipients=len(result.accepted),
            reply=result.reply,
        )
        self.last_error = ""
        if result.refused:
            detail = "; ".join(
                f"{a}: {code} {reply}" for a, (code, reply) in result.refused.items()
            )
            self.last_error = f"recipients refused: {detail}"
            self._metrics.mail_failures.labels(self.account, "recipient_refused").inc(
                len(result.refused)
            )
            log.warning(
                "mail relayed, but some recipients were refused",
                account=self.account,
                record=lease.record.id,
                refused=detail,
                hint="the device addressed them: check its recipient list",
            )
        await self._spool.ack(self.consumer, [lease.record.id])

    async def _failed(self, lease: Lease, error: DeliveryError) -> None:
        self.last_error = str(error)
        self._metrics.mail_failures.labels(self.account, error.outcome.value).inc()
        record = lease.record.id
        if error.permanent:
            log.error(
                "relayed mail refused for good: dead-lettered",
                account=self.account,
                record=record,
                error=str(error),
                hint="see `notifier spool list --state dead`",
            )
            await self._spool.nack(self.consumer, [record], error=str(error), retry_in_s=None)
            return
        delay = retry_in_s(error, lease.attempts, self._retry)
        log.warning(
            "relayed mail not sent: will retry",
            account=self.account,
            record=record,
            error=str(error),
            retry_in_s=round(delay, 1),
            outcome=error.outcome.value,
        )
        await self._spool.nack(self.consumer, [record], error=str(error), retry_in_s=delay)

    async def retry_now(self) -> None:
        """Relayed mails waiting for a retry are due now (the account was just fixed)."""
        count = await self._spool.retry_now(self.consumer)
        if count:
            log.info("retrying now", consumer=self.consumer, account=self.account, records=count)

    def status(self) -> dict[str, Any]:
        """The relay's row on the status page, shaped like a route's."""
        return {
            "route": "SMTP relay",
            "consumer": self.consumer,
            "account": self.account,
            "waiting": self._sending,
            "active_alarms": "-",
            "last_error": self.last_error,
        }
