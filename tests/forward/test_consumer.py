"""The forward consumer through its public parts: a spool, a real HTTP receiver, the metrics."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from notifier.config import ForwardSettings, MatchSettings
from notifier.dispatch.rules import compile_match
from notifier.forward.consumer import ForwardWorker, build_sender, select
from notifier.forward.encode import next_hops
from notifier.metrics import Metrics
from notifier.records import Kind, Record, frozen_extras
from notifier.spool import DeliveryState, Lease, MemorySpool, Spool, SqliteSpool, admin
from notifier.spool.schema import spool_path
from tests.forward.test_encode import alarm, log_line
from tests.httpreceiver import HttpReceiver

CONSUMER = "forward:siem"


def worker(url: str, spool: Spool, metrics: Metrics, **match: Any) -> ForwardWorker:
    settings = ForwardSettings.model_validate(
        {"name": "siem", "kind": "http", "url": url, "timeout_s": 5.0, "match": match}
    )
    matcher = compile_match(settings.match, "forwards.0.match")
    return ForwardWorker(
        settings,
        matcher,
        build_sender(settings, "me:8080"),
        spool,
        metrics,
        instance="me:8080",
        retry_base_s=60.0,
    )


def counted(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name, {"forward": "siem"})
    return value or 0.0


def depth(spool: MemorySpool) -> dict[str, int]:
    return {state: n for (c, state), n in spool.stats().depth.items() if c == CONSUMER and n}


async def run_once(w: ForwardWorker) -> None:
    try:
        await w.step()
    finally:
        await w.close()


async def test_sent_records_are_acked_and_counted() -> None:
    spool, metrics = MemorySpool([CONSUMER]), Metrics()
    await spool.put([alarm(), alarm(Kind.CLEAR)])
    with HttpReceiver() as receiver:
        await run_once(worker(receiver.url(), spool, metrics))
    assert [r.fields["type"] for r in receiver.requests] == ["alarm", "clear"]
    assert depth(spool) == {}
    assert counted(metrics, "notifier_forward_sent_total") == 2


async def test_failure_midway_acks_what_went_and_retries_the_rest() -> None:
    spool, metrics = MemorySpool([CONSUMER]), Metrics()
    await spool.put([log_line(kind=Kind.EVENT, text=str(i), source="A:Call") for i in range(3)])
    with HttpReceiver(statuses=deque([200, 503])) as receiver:
        await run_once(worker(receiver.url(), spool, metrics))
    assert [r.fields["msg"] for r in receiver.requests] == ["0"]
    assert depth(spool) == {"retry": 2}
    assert counted(metrics, "notifier_forward_sent_total") == 1
    assert counted(metrics, "notifier_forward_failures_total") == 1


async def test_each_retry_of_a_failing_target_waits_longer_than_the_one_before() -> None:
    """retry_base_s 60 with equal jitter: the first retry in 30-60 s, the second in 60-120 s
    (both waited 30-60 s before: the attempt count was taken one too low)."""
    spool, metrics = MemorySpool([CONSUMER]), Metrics()
    await spool.put([alarm()])
    with HttpReceiver(statuses=deque([503, 503])) as receiver, capture_logs() as logs:
        w = worker(receiver.url(), spool, metrics)
        try:
            await w.step()
            await spool.retry_now(CONSUMER)  # the operator's "retry now": no 60 s wait here
            await w.step()
        finally:
            await w.close()
    waits = [e["retry_in_s"] for e in logs if e["event"] == "forward not sent: will retry"]
    assert counted(metrics, "notifier_forward_failures_total") == 2
    first, second = waits
    assert 30 <= first <= 60 and 60 <= second <= 120, waits


async def test_a_refused_record_is_dead_lettered_not_retried_forever(tmp_path: Path) -> None:
    spool, metrics = SqliteSpool(spool_path(tmp_path), [CONSUMER]), Metrics()
    await spool.start()
    try:
        await spool.put([alarm()])
        with HttpReceiver(statuses=deque([400])) as receiver:
            await run_once(worker(receiver.url(), spool, metrics))
    finally:
        await spool.close()
    (row,) = admin.list_records(tmp_path, state="dead")
    (delivery,) = row.deliveries
    assert (delivery.consumer, delivery.state) == (CONSUMER, DeliveryState.DEAD)
    assert "answered 400" in delivery.last_error
    assert counted(metrics, "notifier_forward_failures_total") == 1


async def test_records_the_forward_does_not_want_or_that_looped_are_acked_unsent() -> None:
    spool, metrics = MemorySpool([CONSUMER]), Metrics()
    came_back = alarm(extras=frozen_extras({"notifier_hop": "other:1,me:8080"}))
    await spool.put([log_line(), came_back, alarm(code="0x00020001")])
    with HttpReceiver() as receiver:
        await run_once(worker(receiver.url(), spool, metrics, kinds=["alarm", "log"]))
    # Only the alarm that never passed through this instance went out.
    assert [r.fields.get("code") for r in receiver.requests] == [None, "0x00020001"]
    assert depth(spool) == {}


def _lease(record: Record) -> Lease:
    return Lease(record, CONSUMER, 1)


def test_select_names_why_a_record_is_skipped() -> None:
    matcher = compile_match(MatchSettings(kinds=[Kind.ALARM]), "m")
    looped = alarm(extras=frozen_extras({"notifier_hop": "me"}))
    other_hop = alarm(extras=frozen_extras({"notifier_hop": "b"}))
    send, skip = select([_lease(log_line()), _lease(looped), _lease(other_hop)], matcher, "me")
    assert [lease.record.id for lease in send] == [other_hop.id]
    assert (len(skip.unmatched), skip.looped) == (1, [looped.id])
    assert next_hops(other_hop, "me") == "b,me"


def test_instance_name_is_host_and_http_port_by_default() -> None:
    import socket

    from notifier.config import Settings
    from notifier.forward.consumer import instance_name

    settings = Settings.model_validate({"http": {"listen": "127.0.0.1:8123"}})
    assert instance_name(settings) == f"{socket.gethostname()}:8123"
    named = Settings.model_validate({"http": {"listen": "127.0.0.1:8123"}, "instance_name": "nf-a"})
    assert instance_name(named) == "nf-a"
