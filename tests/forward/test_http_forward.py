"""The HTTP sender against a loopback receiver: the device's three methods, Basic and Digest."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest

from notifier.config import ForwardSettings
from notifier.forward.errors import ForwardError
from notifier.forward.http import HttpSender
from notifier.ingest.httpauth import HttpAuth
from notifier.ingest.parse.innovaphone import parse_form
from notifier.records import Kind, Record
from tests.certs import TestPKI
from tests.conftest import free_port
from tests.forward.test_encode import SAME, alarm, log_line
from tests.httpreceiver import HttpReceiver


def forward(url: str, **changes: Any) -> ForwardSettings:
    settings: dict[str, Any] = {"name": "siem", "kind": "http", "url": url, "timeout_s": 5.0}
    settings.update(changes)
    return ForwardSettings.model_validate(settings)


def send(settings: ForwardSettings, records: list[Record]) -> None:
    async def run() -> None:
        sender = HttpSender(settings, "notifier-a:8080")
        try:
            await sender.send(records)
        finally:
            await sender.close()

    asyncio.run(run())


@pytest.mark.parametrize("auth", ["none", "basic", "digest"])
@pytest.mark.parametrize("method", ["post", "get", "standard"])
def test_each_method_delivers_the_device_fields(method: str, auth: str) -> None:
    checker = None if auth == "none" else HttpAuth(auth, {"gw": "s3cret"})
    # A log line over HTTP has no tag: the device fields carry none.
    records = [alarm(), alarm(Kind.CLEAR), log_line(source="")]
    with HttpReceiver(auth=checker) as receiver:
        settings = forward(
            receiver.url("/log?site=x" if method == "get" else "/log"),
            method=method,
            auth=auth,
            username="gw",
            password="s3cret",
        )
        send(settings, records)
    got = receiver.requests
    assert [r.method for r in got] == ["GET" if method == "get" else "POST"] * 3
    assert {r.path for r in got} == {"/log"}
    if auth != "none":
        assert {r.user for r in got} == {"gw"}
    if method == "post":
        assert {r.content_type for r in got} == {"application/x-www-form-urlencoded"}
    if method == "standard":
        assert all(r.body.startswith(b"?event=") for r in got)
    if method == "get":
        assert all(r.query.startswith("site=x&event=") for r in got)
    # Each request is what notifier's own receiver reads back to the same record.
    for sent, request in zip(records, got, strict=True):
        assert request.fields["notifier_hop"] == "notifier-a:8080"
        assert set(request.fields) >= {"event", "time", "date", "from", "msg"}
        parsed = parse_form(
            request.query if method == "get" else request.body,
            received_at=0.0,
            sender="127.0.0.1",
            receiver="http",
        )
        assert {f: getattr(parsed, f) for f in SAME} == {f: getattr(sent, f) for f in SAME}


def test_connection_is_kept_open_between_records() -> None:
    with HttpReceiver() as receiver:
        send(forward(receiver.url()), [log_line(text=f"line {i}") for i in range(5)])
    assert len(receiver.requests) == 5
    assert len({r.peer_port for r in receiver.requests}) == 1


def test_wrong_password_is_a_retryable_error_that_says_what_to_check() -> None:
    with HttpReceiver(auth=HttpAuth("digest", {"gw": "right"})) as receiver:
        settings = forward(receiver.url(), auth="digest", username="gw", password="wrong")
        with pytest.raises(ForwardError) as caught:
            send(settings, [alarm()])
    assert "answered 401" in str(caught.value)
    assert "check username and password" in str(caught.value)
    assert "wrong" not in str(caught.value)
    assert not caught.value.permanent
    assert receiver.requests == []


def test_server_error_midway_reports_how_many_went_before() -> None:
    receiver = HttpReceiver(statuses=deque([200, 200, 503]))
    with receiver, pytest.raises(ForwardError) as caught:
        send(forward(receiver.url()), [log_line(text=str(i)) for i in range(4)])
    assert (caught.value.sent, caught.value.permanent) == (2, False)
    assert [r.fields["msg"] for r in receiver.requests] == ["0", "1"]


def test_bad_request_is_permanent() -> None:
    receiver = HttpReceiver(statuses=deque([400]))
    with receiver, pytest.raises(ForwardError) as caught:
        send(forward(receiver.url()), [alarm()])
    assert caught.value.permanent and "answered 400" in str(caught.value)


def test_https_with_the_test_ca(pki: TestPKI) -> None:
    with HttpReceiver(ssl_context=pki.server_context()) as receiver:
        send(forward(receiver.url(scheme="https"), ca_file=str(pki.ca_file)), [alarm()])
        assert len(receiver.requests) == 1
        with pytest.raises(ForwardError, match="CERTIFICATE_VERIFY_FAILED"):
            send(forward(receiver.url(scheme="https")), [alarm()])


def test_target_down_is_a_forward_error() -> None:
    with pytest.raises(ForwardError, match="ConnectError"):
        send(forward(f"http://127.0.0.1:{free_port()}/log"), [alarm()])


def test_errors_name_the_target_without_its_secrets() -> None:
    port = free_port()
    url = f"http://user:url-secret@127.0.0.1:{port}/log?token=query-secret"
    with pytest.raises(ForwardError) as caught:
        send(forward(url, auth="basic", username="u", password="pw-secret"), [alarm()])
    message = str(caught.value)
    assert f"post http://127.0.0.1:{port}/log:" in message
    assert not any(s in message for s in ("url-secret", "query-secret", "pw-secret"))
