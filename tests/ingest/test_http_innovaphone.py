"""innovaphone devices sending log lines and alarms over HTTP (External GET / POST, Standard)."""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from notifier.records import Kind, Severity
from tests.ingest.http_fixtures import run_curl, running_receiver

LOG_LINE = "LOG_HTTP 3 TCP-Up 172.16.10.14:7793   172.16.0.17:471"


async def test_external_get_stores_the_log_line_then_answers_ok() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.get(
            f"{rx.url}/log",
            params={
                "event": "syslog",
                "time": "1700000000",
                "from": "IP24-1d-00-8d",
                "msg": LOG_LINE,
            },
        )
        assert response.status_code == 200
        assert response.text == "OK"
        assert response.headers["content-type"].startswith("text/plain")
        [record] = rx.spool.history(10)
        assert record.kind is Kind.LOG
        assert record.text == LOG_LINE
        assert record.device == "IP24-1d-00-8d"
        assert record.device_time == 1700000000.0
        assert record.receiver == "http"
        assert record.sender.startswith("127.0.0.1:")
        assert record.raw == response.request.url.query
        assert rx.counter("received", receiver="http") == 1
        assert rx.counter("accepted", receiver="http", kind="log") == 1


async def test_external_post_with_leading_question_mark_and_xml_content_type() -> None:
    body = b"?event=syslog&time=0&date=19700101-000003&from=gw&msg=LOG+a++b%20%20c"
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(
            f"{rx.url}/alarm", content=body, headers={"content-type": "text/xml"}
        )
        assert response.status_code == 200
        [record] = rx.spool.history(10)
        assert record.text == "LOG a  b  c"
        assert record.device_time is None
        assert record.extras["time"] == "0"
        assert record.raw == body


async def test_post_claiming_multipart_with_an_urlencoded_body() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(
            f"{rx.url}/log",
            content=b"event=syslog&from=gw&msg=hello",
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        )
        assert response.status_code == 200
        assert rx.spool.history(1)[0].text == "hello"


async def test_standard_method_on_an_undocumented_path_is_caught() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(
            f"{rx.url}/some/undocumented/path", content=b"event=A:Call&from=gw&msg=cdr"
        )
        assert response.status_code == 200
        [record] = rx.spool.history(10)
        assert record.kind is Kind.EVENT
        assert record.source == "A:Call"


async def test_without_catch_all_other_paths_are_not_found() -> None:
    async with running_receiver(catch_all=False) as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/elsewhere", content=b"msg=x")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
        assert rx.spool.history(10) == []


async def test_alarm_fields_posted_by_curl() -> None:
    async with running_receiver() as rx:
        status, body, _ = await run_curl(
            "--data",
            "type=alarm&code=0x00010002&severity=Major&host=IP0011-42-04-a7&source=RELAY%2FRECH"
            "&text=Registration+down",
            f"{rx.url}/alarm",
        )
        assert (status, body) == (200, "OK")
        [record] = rx.spool.history(10)
        assert record.kind is Kind.ALARM
        assert record.severity is Severity.MAJOR
        assert record.code == "0x00010002"
        assert record.device == "IP0011-42-04-a7"
        assert record.source == "RELAY/RECH"
        assert record.text == "Registration down"
        assert rx.counter("accepted", receiver="http", kind="alarm") == 1


async def test_request_without_fields_is_refused_with_the_reason() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/log", content=b"hello world")
        assert response.status_code == 400
        error = response.json()
        assert error["error"] == "empty"
        assert "msg" in error["detail"]
        assert rx.spool.history(10) == []
        assert rx.counter("rejected", receiver="http", reason="empty") == 1


async def test_invalid_utf8_in_a_form_is_kept_with_replacement_not_lost() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        response = await client.post(f"{rx.url}/log", content=b"from=gw&msg=M%FCller")
        assert response.status_code == 200
        [record] = rx.spool.history(10)
        assert record.text == "M\ufffdller"
        assert record.raw == b"from=gw&msg=M%FCller"


async def test_other_methods_are_not_allowed() -> None:
    async with running_receiver() as rx, httpx.AsyncClient() as client:
        for method in ("PUT", "DELETE", "HEAD"):
            response = await client.request(method, f"{rx.url}/log?msg=x")
            assert response.status_code == 405, method
            assert "GET" in response.headers["allow"]
        assert rx.spool.history(10) == []


async def test_web_pages_keep_their_paths_and_methods_and_the_catch_all_takes_the_rest() -> None:
    async def status_page(request: Request) -> Response:
        return PlainTextResponse("status page")

    pages = [Route("/", status_page, methods=["GET"])]
    async with running_receiver(extra_routes=pages) as rx, httpx.AsyncClient() as client:
        assert (await client.get(f"{rx.url}/")).text == "status page"
        # The Standard method's path is not documented: a device posting to / is not refused.
        assert (await client.post(f"{rx.url}/", content=b"msg=to+root")).text == "OK"
        assert (await client.post(f"{rx.url}/other", content=b"msg=x")).text == "OK"
        assert (await client.post(f"{rx.url}/healthz", content=b"msg=x")).status_code == 405
        assert [r.text for r in rx.spool.history(10)] == ["x", "to root"]
