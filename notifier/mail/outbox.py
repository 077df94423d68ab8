"""The file outbox: mails as .eml files in a directory, for set-ups without an SMTP server.

Each file appears whole or not at all (written to a temporary name, fsynced, renamed, directory
fsynced), so a crash never leaves half a mail, and a reader never sees one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import time
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

from aiosmtplib.email import flatten_message

from notifier.mail.transport import (
    DeliveryError,
    Outcome,
    Outgoing,
    SendReport,
    SendResult,
    TransportHealth,
    count_results,
)
from notifier.metrics import Metrics


def outbox_name(message_id: str, now: float) -> str:
    """``<UTC timestamp>-<hash of the Message-ID>.eml``: sorts by time, names the mail."""
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{stamp}-{digest}.eml"


def write_atomically(directory: Path, name: str, data: bytes) -> Path:
    """Write `data` to directory/name so that it is durable and complete when this returns."""
    target = directory / name
    temporary = directory / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


class Outbox:
    """A `MailTransport` that writes each mail to `directory` as an .eml file (CRLF lines, as it
    would go over SMTP, Bcc not in it)."""

    def __init__(self, directory: Path, account: str = "", metrics: Metrics | None = None) -> None:
        self.directory = Path(directory)
        self._account = account
        self._metrics = metrics
        self.health = TransportHealth("outbox", str(self.directory))

    def _write(self, out: Outgoing) -> SendResult | DeliveryError:
        utf8 = not all(a.isascii() for a in (out.mail_from, *out.rcpt_to))
        data = flatten_message(out.message, utf8=utf8, cte_type="7bit")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = write_atomically(self.directory, outbox_name(out.message_id, time.time()), data)
        except OSError as exc:
            return DeliveryError(
                f"cannot write to {self.directory}: {exc.strerror or exc}",
                outcome=Outcome.TEMPORARY,
                step="write",
                endpoint="outbox",
            )
        return SendResult(
            message_id=out.message_id, accepted=out.rcpt_to, reply="written", path=str(path)
        )

    def _write_all(self, items: Sequence[Outgoing]) -> list[SendResult | DeliveryError]:
        return [self._write(item) for item in items]

    async def send(
        self, messages: Sequence[EmailMessage | Outgoing]
    ) -> list[SendResult | DeliveryError]:
        """Write each message; one result per message. Durable when this returns."""
        items = [Outgoing.of(m) for m in messages]
        results = await asyncio.to_thread(self._write_all, items)
        count_results(self._metrics, self._account, results, self.health)
        return results

    async def test(self, message: EmailMessage | Outgoing) -> SendReport:
        (result,) = await self.send([message])
        return SendReport(
            transport="outbox",
            endpoint=str(self.directory),
            result=result if isinstance(result, SendResult) else None,
            error=result if isinstance(result, DeliveryError) else None,
        )

    async def close(self) -> None:
        return None
