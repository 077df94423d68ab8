"""The operator's API and commands through `notifier run`: silences (add, list, expire), the
alarm list and acknowledgements, and what keeps anyone from muting alarms by accident."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_alarm_mail import account, post_alarm, route
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import SmtpTestServer

PASSWORD = "operator test password"


@pytest.fixture(scope="module")
def notifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifierProcess]:
    with SmtpTestServer() as smtp:
        proc = NotifierProcess(
            tmp_path_factory.mktemp("operator"),
            {
                "accounts": [account(smtp)],
                "routes": [
                    route(**{"continue": True}),
                    route(name="noc", match={"kinds": ["alarm", "clear"]}),
                ],
                "web": {"admin_password": PASSWORD},
            },
        )
        proc.start()
        try:
            yield proc
        finally:
            proc.stop()


def api(proc: NotifierProcess, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, f"{proc.url}{path}", auth=("admin", PASSWORD), timeout=10, **kw)


def cli(proc: NotifierProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args, "--config", str(proc.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_silence_added_by_the_api_is_listed_and_expired(notifier: NotifierProcess) -> None:
    created = api(
        notifier,
        "POST",
        "/api/v1/silences",
        json={
            "matchers": {"devices": ["gw01*"], "codes": ["0x0001*"]},
            "duration": "2h",
            "comment": "firmware update",
            "created_by": "alice",
        },
    )
    assert created.status_code == 201, created.text
    silence_id = created.json()["id"]
    listed = api(notifier, "GET", "/api/v1/silences").json()["silences"]
    (mine,) = [s for s in listed if s["id"] == silence_id]
    assert mine["matchers"] == {"codes": ["0x0001*"], "devices": ["gw01*"]}
    assert mine["state"] == "active" and mine["created_by"] == "alice"
    page = api(notifier, "GET", "/").text
    assert silence_id in page and "firmware update" in page
    assert api(notifier, "DELETE", f"/api/v1/silences/{silence_id}").status_code == 204
    listed = api(notifier, "GET", "/api/v1/silences").json()["silences"]
    assert [s["state"] for s in listed if s["id"] == silence_id] == ["expired"]
    again = api(notifier, "DELETE", f"/api/v1/silences/{silence_id}")
    assert again.status_code == 404


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"matchers": {}, "duration": "1h", "comment": "x"}, "would mute everything"),
        ({"matchers": {"kinds": ["alarm"]}, "duration": "1h", "comment": "x"}, "at least one"),
        ({"matchers": {"devices": ["gw01"]}, "comment": "x"}, "duration"),
        ({"matchers": {"devices": ["gw01"]}, "duration": "soon", "comment": "x"}, "'soon'"),
        ({"matchers": {"devices": ["gw01"]}, "duration": "1h"}, "comment"),
        ({"matchers": {"colour": ["red"]}, "duration": "1h", "comment": "x"}, "colour"),
        ({"matchers": {"codes": ["0x9-0x1"]}, "duration": "1h", "comment": "x"}, "codes"),
        ({"matchers": {"routes": ["nope"]}, "duration": "1h", "comment": "x"}, "'nope'"),
        ({"matchers": {"text": ["(unclosed"]}, "duration": "1h", "comment": "x"}, "text"),
        ({"matchers": {"min_severity": ["huge"]}, "duration": "1h", "comment": "x"}, "huge"),
    ],
)
def test_a_silence_that_would_mute_too_much_or_is_unclear_is_refused(
    notifier: NotifierProcess, body: dict[str, object], says: str
) -> None:
    before = len(api(notifier, "GET", "/api/v1/silences").json()["silences"])
    refused = api(notifier, "POST", "/api/v1/silences", json=body)
    assert refused.status_code == 400
    assert says in refused.json()["error"]
    assert len(api(notifier, "GET", "/api/v1/silences").json()["silences"]) == before


def test_the_api_takes_json_only_and_wants_the_admin_password(notifier: NotifierProcess) -> None:
    body = '{"matchers": {"devices": ["gw01"]}, "duration": "1h", "comment": "x"}'
    # A form post (what a page on another site can send without asking) is refused.
    as_form = api(
        notifier,
        "POST",
        "/api/v1/silences",
        content=body,
        headers={"Content-Type": "text/plain"},
    )
    assert as_form.status_code == 415
    anonymous = httpx.post(f"{notifier.url}/api/v1/silences", json={}, timeout=5)
    assert anonymous.status_code == 401
    assert httpx.get(f"{notifier.url}/api/v1/alarms", timeout=5).status_code == 401
    # The page's forms need the form token.
    forged = api(notifier, "POST", "/silences", data={"devices": "gw01", "comment": "x"})
    assert forged.status_code == 403


def test_the_alarm_list_shows_an_active_alarm_once_across_routes_and_takes_an_ack(
    notifier: NotifierProcess,
) -> None:
    assert post_alarm(notifier, code="0x00020001", host="gw07").status_code == 200

    def listed() -> list[dict[str, object]]:
        alarms = api(notifier, "GET", "/api/v1/alarms", params={"device": "gw07"}).json()
        return [a for a in alarms["alarms"] if a["code"] == "0x00020001"]

    (alarm,) = wait_for(listed, what="the alarm in the list")
    assert alarm["severity"] == "major" and alarm["source"] == "RELAY/RECH"
    wait_for(lambda: sorted(listed()[0]["routes"]) == ["noc", "ops"], what="both routes")
    assert alarm["acknowledged"] is None
    key = str(alarm["key"])
    no_comment = api(notifier, "POST", f"/api/v1/alarms/{key}/ack", json={})
    assert no_comment.status_code == 400
    done = api(
        notifier, "POST", f"/api/v1/alarms/{key}/ack", json={"comment": "on it", "by": "bob"}
    )
    assert done.status_code == 200, done.text
    (alarm,) = listed()
    assert alarm["acknowledged"]["by"] == "bob" and alarm["acknowledged"]["comment"] == "on it"
    page = api(notifier, "GET", "/alarms", params={"device": "gw07"}).text
    assert "acknowledged by bob" in page and "0x00020001" in page
    unknown = api(notifier, "POST", "/api/v1/alarms/bm9wZQ/ack", json={"comment": "x"})
    assert unknown.status_code == 404
    # Filters: a severity floor above the alarm's hides it.
    floor = api(notifier, "GET", "/api/v1/alarms", params={"min_severity": "critical"})
    assert all(a["code"] != "0x00020001" for a in floor.json()["alarms"])


def test_the_commands_add_list_and_expire_silences_and_ack_alarms(
    notifier: NotifierProcess,
) -> None:
    added = cli(
        notifier,
        "silence",
        "add",
        "--device",
        "gw02*",
        "--device",
        "gw03",
        "--code",
        "0x0001*",
        "--for",
        "30m",
        "--comment",
        "firmware update",
    )
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.split()[1]
    listed = cli(notifier, "silence", "list")
    assert silence_id in listed.stdout and "devices=gw02*,gw03" in listed.stdout
    refused = cli(notifier, "silence", "add", "--for", "1h", "--comment", "all of it")
    assert refused.returncode == 1 and "would mute everything" in refused.stderr
    assert cli(notifier, "silence", "expire", silence_id).returncode == 0
    assert silence_id not in cli(notifier, "silence", "list").stdout
    assert silence_id in cli(notifier, "silence", "list", "--all").stdout

    assert post_alarm(notifier, code="0x00030001", host="gw09").status_code == 200
    wait_for(
        lambda: "0x00030001" in cli(notifier, "alarm", "list", "--device", "gw09").stdout,
        what="the alarm listed by the command",
    )
    key = cli(notifier, "alarm", "list", "--device", "gw09").stdout.split()[0]
    acked = cli(notifier, "alarm", "ack", key, "--comment", "replacing the PSU", "--by", "carol")
    assert acked.returncode == 0, acked.stderr
    assert "acknowledged by carol" in cli(notifier, "alarm", "list", "--device", "gw09").stdout


def test_the_commands_say_when_the_service_is_not_there(tmp_path: Path) -> None:
    proc = NotifierProcess(tmp_path)  # configured, never started
    proc.config_path.write_text(proc.config_text())
    out = cli(proc, "silence", "list")
    assert out.returncode == 1
    assert out.stderr.startswith("notifier: cannot reach notifier at http://127.0.0.1:")
