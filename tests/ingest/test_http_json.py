"""The JSON records API, the history endpoint, /healthz and /metrics."""

from __future__ import annotations

import json

import httpx

from notifier.records import Kind, Severity
from tests.ingest.http_fixtures import run_curl, running_receiver

ALARM = {
    "type": "alarm",
    "severity": "Major",
    "code": "0x00010002",
    "host": "IP0011-42-04-a7",
    "serial": "009033000000",
    "source": "RELAY/RECH",
    "text": "Registration down",
    "date": 1700000000,
}


async def test_single_record_is_stored_and_its_id_returned() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/api/v1/records", json=ALARM)
        assert response.status_code == 200
        [record] = rx.spool.history(10)
        assert response.json() == {"accepted": 1, "ids": [record.id]}
        assert record.kind is Kind.ALARM
        assert record.severity is Severity.MAJOR
        assert record.code == "0x00010002"
        assert record.device == "IP0011-42-04-a7"
        assert record.serial == "009033000000"
        assert record.source == "RELAY/RECH"
        assert record.text == "Registration down"
        assert record.device_time == 1700000000.0
        assert record.receiver == "json"
        assert json.loads(record.raw) == ALARM
        assert rx.counter("received", receiver="json") == 1
        assert rx.counter("accepted", receiver="json", kind="alarm") == 1


async def test_batch_is_stored_in_order() -> None:
    clear = {
        "type": "clear",
        "code": "0x00010002",
        "host": "IP0011-42-04-a7",
        "source": "RELAY/RECH",
    }
    batch = [ALARM, clear]
    async with running_receiver() as rx:
        status, body, _ = await run_curl(
            "-H", "content-type: application/json", "--data", json.dumps(batch),
            f"{rx.url}/api/v1/records",
        )  # fmt: skip
        assert status == 200
        newest_first = rx.spool.history(10)
        assert json.loads(body) == {"accepted": 2, "ids": [r.id for r in reversed(newest_first)]}
        assert [r.kind for r in newest_first] == [Kind.CLEAR, Kind.ALARM]
        assert newest_first[0].alarm_key == newest_first[1].alarm_key


async def test_unknown_severity_is_refused_naming_it_and_nothing_is_stored() -> None:
    batch = [ALARM, {**ALARM, "severity": "apocalyptic"}]
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/api/v1/records", json=batch)
        assert response.status_code == 400
        error = response.json()
        assert error["error"] == "unknown_severity"
        assert "apocalyptic" in error["detail"]
        assert "record 1" in error["detail"]
        assert "whole batch" in error["detail"]
        assert rx.spool.history(10) == []
        assert rx.counter("rejected", receiver="json", reason="unknown_severity") == 1


async def test_broken_json_and_invalid_utf8_are_refused() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        broken = await client.post(f"{rx.url}/api/v1/records", content=b'{"text": "x"')
        assert broken.status_code == 400
        assert broken.json()["error"] == "invalid_json"
        assert "line 1" in broken.json()["detail"]
        latin1 = await client.post(f"{rx.url}/api/v1/records", content=b'{"text": "M\xfcller"}')
        assert latin1.status_code == 400
        assert latin1.json()["error"] == "invalid_utf8"
        assert rx.spool.history(10) == []


async def test_history_is_newest_first_and_limited() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        for n in range(3):
            response = await client.post(f"{rx.url}/api/v1/records", json={"text": f"event {n}"})
            assert response.status_code == 200
        history = await client.get(f"{rx.url}/api/v1/records", params={"limit": "2"})
        assert history.status_code == 200
        assert [r["text"] for r in history.json()] == ["event 2", "event 1"]
        assert history.json()[0] == rx.spool.history(1)[0].to_dict()
        default = await client.get(f"{rx.url}/api/v1/records")
        assert len(default.json()) == 3


async def test_bad_history_limit_is_refused() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        for limit in ("abc", "0", "1001"):
            response = await client.get(f"{rx.url}/api/v1/records", params={"limit": limit})
            assert response.status_code == 400, limit
            assert response.json()["error"] == "bad_limit"
            assert "1000" in response.json()["detail"]


async def test_healthz_reports_ok_with_the_callers_fields() -> None:
    async with (
        running_receiver(health=lambda: {"spool": {"depth": 0}}) as rx,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(f"{rx.url}/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "spool": {"depth": 0}}


async def test_healthz_answers_503_when_health_says_so() -> None:
    async with (
        running_receiver(health=lambda: {"status": "degraded"}) as rx,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(f"{rx.url}/healthz")
        assert response.status_code == 503
        assert response.json()["status"] == "degraded"


async def test_metrics_show_received_accepted_and_rejected() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        await client.get(f"{rx.url}/log", params={"msg": "x"})
        await client.post(f"{rx.url}/log", content=b"nothing")
        response = await client.get(f"{rx.url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert 'notifier_ingest_received_total{receiver="http"} 2.0' in text
        assert 'notifier_ingest_accepted_total{kind="log",receiver="http"} 1.0' in text
        assert 'notifier_ingest_rejected_total{reason="empty",receiver="http"} 1.0' in text
