"""End to end: two `notifier run` instances on one PostgreSQL database and one mail server.

A device with both instances as its two servers sends each alarm to both; the route is
dispatched by one instance at a time, and when that one is killed the other takes over.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_alarm_mail import account, post_alarm, route
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import ReceivedMail, SmtpTestServer

ROUTE = "route:ops"


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def instances(workdir: Path, dsn: str, smtp: SmtpTestServer, **env: str) -> list[NotifierProcess]:
    """Instances "a" and "b" (not started) on the database `dsn`, mailing through `smtp`;
    `env`: more NOTIFIER_* settings for both."""
    dsn_file = workdir / "dsn"
    dsn_file.write_text(dsn + "\n")
    return [
        NotifierProcess(
            workdir / name,
            {
                "instance_name": name,
                "accounts": [account(smtp)],
                "routes": [route(max_records_per_mail=1000)],
            },
            env={
                "NOTIFIER_SPOOL__BACKEND": "postgresql",
                "NOTIFIER_SPOOL__DSN_FILE": str(dsn_file),
                **env,
            },
        )
        for name in ("a", "b")
    ]


@pytest.fixture
def pair(tmp_path: Path, pg_dsn: str, smtp: SmtpTestServer) -> Iterator[list[NotifierProcess]]:
    procs = instances(tmp_path, pg_dsn, smtp)
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def owner(proc: NotifierProcess, consumer: str = ROUTE) -> str:
    """The instance `proc`'s /metrics names as the owner of `consumer` ("" none or down)."""
    try:
        text = httpx.get(f"{proc.url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""
    found = re.search(
        rf'notifier_cluster_route_owner\{{instance="([^"]+)",route="{consumer}"\}} 1\.0', text
    )
    return found.group(1) if found else ""


def agreed_owner(procs: list[NotifierProcess], consumer: str = ROUTE) -> str:
    """The owner of `consumer` that every instance names ("" while they differ or none)."""
    names = {owner(proc, consumer) for proc in procs}
    return names.pop() if len(names) == 1 else ""


def deduplicated(proc: NotifierProcess) -> float:
    text = httpx.get(f"{proc.url}/metrics", timeout=5).text
    return sum(
        float(n)
        for _, n in re.findall(r"notifier_spool_deduplicated_total\{kind=\"(\w+)\"\} (\S+)", text)
    )


def bodies(mails: list[ReceivedMail]) -> str:
    texts = []
    for m in mails:
        body = m.message.get_body(("plain",))
        assert body is not None
        texts.append(body.get_content())
    return "\n".join(texts)


def mails_with(smtp: SmtpTestServer, text: str) -> list[ReceivedMail]:
    return [m for m in list(smtp.received) if text in bodies([m])]


def test_an_alarm_sent_to_both_instances_is_mailed_once_and_so_is_its_clear(
    pair: list[NotifierProcess], smtp: SmtpTestServer
) -> None:
    a, b = pair
    wait_for(lambda: agreed_owner(pair), what="one owner of the route")

    for proc in pair:
        assert post_alarm(proc, text="Trunk 7 down").status_code == 200
    # Something sent after it, to one instance only: once it is mailed, so would a second
    # mail of the alarm have been (one owner, in order).
    assert post_alarm(a, text="Marker 1", code="0x0001").status_code == 200
    wait_for(lambda: mails_with(smtp, "Marker 1"), what="the marker's mail")
    assert len(mails_with(smtp, "Trunk 7 down")) == 1

    for proc in pair:
        assert post_alarm(proc, type="clear", text="Trunk 7 down").status_code == 200
    assert post_alarm(b, text="Marker 2", code="0x0002").status_code == 200
    wait_for(lambda: mails_with(smtp, "Marker 2"), what="the second marker's mail")

    subjects = [str(m.message["Subject"]) for m in mails_with(smtp, "Trunk 7 down")]
    assert len(subjects) == 2, subjects  # the alarm, then its clear
    # Both instances show both, and who dispatches the route.
    metrics = httpx.get(f"{b.url}/metrics", timeout=5).text
    assert 'notifier_cluster_instance_up{instance="a"} 1.0' in metrics
    assert 'notifier_cluster_instance_up{instance="b"} 1.0' in metrics
    # The copies were not even stored: the second instance to take each found it there.
    assert deduplicated(a) + deduplicated(b) == 2  # the alarm's copy and the clear's
    page = httpx.get(f"{a.url}/", timeout=5).text
    assert "Instances" in page and f"<td>{owner(a)}</td>" in page


def test_killing_the_owner_during_a_storm_hands_the_route_over_and_every_alarm_is_mailed(
    pair: list[NotifierProcess], smtp: SmtpTestServer
) -> None:
    a, b = pair
    first = wait_for(lambda: agreed_owner(pair), what="one owner of the route")
    dead, survivor = (a, b) if first == "a" else (b, a)
    texts = [f"Storm alarm {i:03d} down" for i in range(120)]

    def send(proc: NotifierProcess, text: str, i: int) -> None:
        response = post_alarm(proc, text=text, code=f"0x{i:04x}")
        assert response.status_code == 200, response.text

    for i, text in enumerate(texts[:60]):
        send(pair[i % 2], text, i)
    dead.kill()
    killed_at = time.monotonic()
    for i, text in enumerate(texts[60:], start=60):
        send(survivor, text, i)

    # The survivor owns the route within 15 s of the kill (lease 10 s, heartbeat every 2 s).
    wait_for(
        lambda: owner(survivor) == survivor.config()["instance_name"],
        timeout=max(0.1, 15.0 - (time.monotonic() - killed_at)),
        what="the survivor owning the route within 15 s of the kill",
    )
    took_over_s = time.monotonic() - killed_at

    def missing() -> list[str]:
        mailed = bodies(list(smtp.received))
        return [t for t in texts if t not in mailed]

    wait_for(lambda: not missing(), timeout=60.0, what=f"every alarm mailed ({took_over_s=:.1f})")


def test_without_dedupe_the_shared_alarm_state_mails_once_and_a_clear_after_a_takeover_threads(
    tmp_path: Path, pg_dsn: str, smtp: SmtpTestServer
) -> None:
    procs = instances(tmp_path, pg_dsn, smtp, NOTIFIER_SPOOL__DEDUPE_WINDOW_S="0")
    try:
        for proc in procs:
            proc.start()
        first = wait_for(lambda: agreed_owner(procs), what="one owner of the route")
        dead, survivor = (procs[0], procs[1]) if first == "a" else (procs[1], procs[0])
        for proc in procs:  # both copies are stored: the owner decides the second one
            assert post_alarm(proc, text="Trunk 9 down").status_code == 200
        assert post_alarm(dead, text="Marker", code="0x0001").status_code == 200
        wait_for(lambda: mails_with(smtp, "Marker"), what="the marker's mail")
        (set_mail,) = mails_with(smtp, "Trunk 9 down")
        decisions = [e.get("reason") for e in dead.log_events() if e.get("event") == "decision"]
        assert "repeat_suppressed" in decisions

        dead.kill()
        assert post_alarm(survivor, type="clear", text="Trunk 9 down").status_code == 200

        def clear_mail() -> list[ReceivedMail]:
            return [m for m in mails_with(smtp, "Trunk 9 down") if m is not set_mail]

        (mail,) = wait_for(clear_mail, timeout=40.0, what="the clear's mail from the survivor")
        # The new owner knew the alarm from the shared state: a clear of it, not an unknown
        # clear, in the thread of the mail the dead owner sent.
        assert mail.message["In-Reply-To"] == set_mail.message["Message-ID"]
    finally:
        for proc in procs:
            proc.stop()
