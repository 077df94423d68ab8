"""The route worker through its public parts: a spool, the alarm store and a transport that
misbehaves the way a bug would (the outbox, but raising once)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

from notifier.config import MatchSettings, RouteSettings
from notifier.dispatch.rules import compile_match
from notifier.dispatch.state import AlarmStore
from notifier.dispatch.worker import RouteTarget, RouteWorker
from notifier.mail.compose import Envelope
from notifier.mail.outbox import Outbox
from notifier.mail.transport import DeliveryError, Outgoing, SendResult
from notifier.metrics import Metrics
from notifier.records import Kind, Record, Severity
from notifier.spool import MemorySpool


class BrokenOnce(Outbox):
    """The outbox, except that the first send raises as an unexpected bug would."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.raised = False

    async def send(
        self, messages: Sequence[EmailMessage | Outgoing]
    ) -> list[SendResult | DeliveryError]:
        if not self.raised:
            self.raised = True
            raise RuntimeError("unexpected bug in a transport")
        return await super().send(messages)


def alarm() -> Record:
    return Record(
        kind=Kind.ALARM,
        received_at=1000.0,
        sender="192.0.2.1",
        receiver="json",
        raw=b"",
        device="gw01",
        code="0x00010002",
        source="RELAY/RECH",
        severity=Severity.MAJOR,
        text="Registration down",
    )


async def test_a_send_that_raises_retries_the_alarm_instead_of_suppressing_it(
    tmp_path: Path,
) -> None:
    route = RouteSettings(name="ops", group_wait_s=0, group_interval_s=0)
    spool = MemorySpool(["route:ops"])
    store = AlarmStore(tmp_path / "alarms.sqlite")
    transport = BrokenOnce(tmp_path / "outbox")
    target = RouteTarget(
        "ops", transport, Envelope("n@example.test", "n", ("ops@example.test",)), asyncio.Lock()
    )
    worker = RouteWorker(
        route,
        compile_match(MatchSettings()),
        spool,
        store,
        target,
        Metrics(),
        retry_base_s=0.05,
        retry_max_s=0.1,
    )
    await spool.put([alarm()])
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(20):
            while not list((tmp_path / "outbox").glob("*.eml")):
                await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await task
        await store.close()
    (mail,) = (tmp_path / "outbox").glob("*.eml")
    assert transport.raised
    assert "[ALARM Major] gw01" in mail.read_text()
    assert spool.stats().depth.get(("route:ops", "ready"), 0) == 0
