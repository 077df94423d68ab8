"""Senders that must authenticate (the innovaphone "Authenticate" option): Basic and Digest."""

from __future__ import annotations

import httpx
import pytest

from notifier.ingest.httpauth import HttpAuth
from tests.ingest.http_fixtures import Receiver, run_curl, running_receiver

USERS = {"gw01": "s3cret"}
FORM = {"event": "syslog", "from": "gw01", "msg": "LOG 1  up"}


def assert_one_log_line(rx: Receiver) -> None:
    [record] = rx.spool.history(10)
    assert record.text == "LOG 1  up"
    assert record.device == "gw01"


def digest_algorithms(response: httpx.Response) -> list[str]:
    return [
        value.split("algorithm=")[1].split(",")[0]
        for value in response.headers.get_list("www-authenticate")
    ]


async def test_digest_with_httpx_right_password_stores_the_record() -> None:
    async with (
        running_receiver(auth=HttpAuth("digest", USERS)) as rx,
        httpx.AsyncClient(auth=httpx.DigestAuth("gw01", "s3cret")) as client,
    ):
        response = await client.post(f"{rx.url}/log?via=digest", data=FORM)
        assert response.status_code == 200
        assert_one_log_line(rx)
        # The same client goes on with the nonce it has (nc 2, 3): no new challenge needed.
        again = await client.get(f"{rx.url}/log", params=FORM)
        assert again.status_code == 200
        assert len(rx.spool.history(10)) == 2


async def test_digest_with_httpx_wrong_password_is_refused_with_both_challenges() -> None:
    async with (
        running_receiver(auth=HttpAuth("digest", USERS)) as rx,
        httpx.AsyncClient(auth=httpx.DigestAuth("gw01", "wrong")) as client,
    ):
        response = await client.post(f"{rx.url}/log", data=FORM)
        assert response.status_code == 401
        assert response.json()["error"] == "auth"
        assert digest_algorithms(response) == ["SHA-256", "MD5"]
        assert rx.spool.history(10) == []
        assert rx.counter("rejected", receiver="http", reason="auth_challenge") == 1
        assert rx.counter("rejected", receiver="http", reason="auth") == 1


async def test_no_credentials_get_the_challenge_and_nothing_is_stored() -> None:
    async with (
        running_receiver(auth=HttpAuth("digest", USERS)) as rx,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(f"{rx.url}/log", params=FORM)
        assert response.status_code == 401
        assert 'qop="auth"' in response.headers["www-authenticate"]
        assert rx.spool.history(10) == []
        assert rx.counter("rejected", receiver="http", reason="auth_challenge") == 1
        assert rx.counter("rejected", receiver="http", reason="auth") == 0


@pytest.mark.parametrize("algorithms", [("SHA-256", "MD5"), ("MD5",)])
async def test_digest_with_curl(algorithms: tuple[str, ...]) -> None:
    auth = HttpAuth("digest", USERS, algorithms=algorithms)
    async with running_receiver(auth=auth) as rx:
        status, body, _ = await run_curl(
            "--digest", "-u", "gw01:s3cret", "--data", "event=syslog&from=gw01&msg=LOG+1++up",
            f"{rx.url}/alarm",
        )  # fmt: skip
        assert (status, body) == (200, "OK")
        assert_one_log_line(rx)


async def test_digest_with_curl_wrong_password() -> None:
    async with running_receiver(auth=HttpAuth("digest", USERS)) as rx:
        status, _, _ = await run_curl(
            "--digest", "-u", "gw01:nope", "--data", "msg=x", f"{rx.url}/alarm"
        )
        assert status == 401
        assert rx.spool.history(10) == []
        assert rx.counter("rejected", receiver="http", reason="auth") == 1


async def test_basic_with_httpx_right_and_wrong_password() -> None:
    async with running_receiver(auth=HttpAuth("basic", USERS)) as rx, httpx.AsyncClient() as client:
        right = await client.get(f"{rx.url}/log", params=FORM, auth=("gw01", "s3cret"))
        assert right.status_code == 200
        assert_one_log_line(rx)
        wrong = await client.get(f"{rx.url}/log", params=FORM, auth=("gw01", "S3cret"))
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == 'Basic realm="notifier", charset="UTF-8"'
        assert rx.counter("rejected", receiver="http", reason="auth") == 1
        assert len(rx.spool.history(10)) == 1


async def test_basic_with_curl_right_and_wrong_password() -> None:
    async with running_receiver(auth=HttpAuth("basic", USERS)) as rx:
        form = "event=syslog&from=gw01&msg=LOG+1++up"
        assert (await run_curl("-u", "gw01:s3cret", "--data", form, f"{rx.url}/log"))[0] == 200
        assert (await run_curl("-u", "gw01:bad", "--data", form, f"{rx.url}/log"))[0] == 401
        assert_one_log_line(rx)


async def test_json_api_and_history_need_auth_but_healthz_does_not() -> None:
    async with (
        running_receiver(auth=HttpAuth("digest", USERS)) as rx,
        httpx.AsyncClient() as anonymous,
        httpx.AsyncClient(auth=httpx.DigestAuth("gw01", "s3cret")) as sender,
    ):
        assert (
            await anonymous.post(f"{rx.url}/api/v1/records", json={"text": "x"})
        ).status_code == 401
        assert (await anonymous.get(f"{rx.url}/api/v1/records")).status_code == 401
        assert (await anonymous.get(f"{rx.url}/healthz")).status_code == 200
        assert rx.spool.history(10) == []
        posted = await sender.post(f"{rx.url}/api/v1/records", json={"text": "x"})
        assert posted.status_code == 200
        history = await sender.get(f"{rx.url}/api/v1/records", params={"limit": "5"})
        assert [r["text"] for r in history.json()] == ["x"]


async def test_no_secret_reaches_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    async with (
        running_receiver(auth=HttpAuth("basic", USERS)) as rx,
        httpx.AsyncClient(auth=("gw01", "hunter2-not-the-password")) as client,
    ):
        assert (await client.get(f"{rx.url}/log", params=FORM)).status_code == 401
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert "ingest_rejected" in text
    assert "hunter2" not in text
    assert "Z3cwMT" not in text  # base64 of "gw01:" starts the Authorization header
