"""End to end: the alarm state a notifier keeps through `StateStore`, across restarts and on
PostgreSQL, and what the mails make of it."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.e2e.test_alarm_mail import account, post_alarm, route, subjects
from tests.e2e.test_postgresql_spool import on_postgresql, smtp
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import ReceivedMail, SmtpTestServer

__all__ = ["smtp"]  # the fixture, imported for the tests here


def plain(mail: ReceivedMail) -> str:
    part = mail.message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def decisions(logs: list[dict[str, object]]) -> list[object]:
    return [e.get("reason") for e in logs if e.get("event") == "decision"]


def test_alarm_state_on_postgresql_survives_a_restart_so_the_clear_mails_as_cleared(
    tmp_path: Path, pg_dsn: str, smtp: SmtpTestServer
) -> None:
    with on_postgresql(tmp_path, pg_dsn, smtp, name="first") as first:
        assert post_alarm(first, severity="Critical").status_code == 200
        wait_for(lambda: len(smtp.received) == 1, what="the alarm mail")
    # Another data_dir: nothing of the first run is on this box, only in the database.
    with on_postgresql(tmp_path, pg_dsn, smtp, name="second") as second:
        assert post_alarm(second, type="clear", severity="Major").status_code == 200
        wait_for(lambda: len(smtp.received) == 2, what="the clear mail")
        reasons = decisions(second.log_events())

    assert reasons == ["cleared"]
    assert subjects(smtp.received)[1].startswith("[CLEARED]")
    # The set's severity came through the database too: the clear shows it, not its own.
    body = plain(smtp.received[1])
    assert "Critical" in body and "Major" not in body, body
    assert not (first.data_dir / "alarms.sqlite").exists()
    assert not (second.data_dir / "alarms.sqlite").exists()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT code, active, severity FROM state_alarms").fetchall()
    assert rows == [("0x00010002", False, "critical")]


def test_a_clear_after_a_restart_replies_to_its_alarms_mail(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    notifier = NotifierProcess(tmp_path, {"accounts": [account(smtp)], "routes": [route()]})
    with notifier:
        assert post_alarm(notifier).status_code == 200
        (set_mail,) = wait_for(lambda: smtp.received, what="the alarm mail")
    with notifier:  # restarted: the Message-ID comes from alarms.sqlite
        assert post_alarm(notifier, type="clear").status_code == 200
        wait_for(lambda: len(smtp.received) == 2, what="the clear mail")

    set_id, clear = set_mail.message["Message-ID"], smtp.received[1].message
    assert str(clear["Subject"]).startswith("[CLEARED]")
    assert clear["In-Reply-To"] == set_id
    assert clear["References"] == set_id


def test_a_digest_of_clears_references_the_mails_of_their_sets_and_replies_to_none(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    codes = ("0x00000001", "0x00000002", "0x00000003")
    notifier = NotifierProcess(
        tmp_path, {"accounts": [account(smtp)], "routes": [route(group_wait_s=2.0)]}
    )
    with notifier:
        for n, code in enumerate(codes, start=1):
            assert post_alarm(notifier, code=code).status_code == 200
            wait_for(lambda n=n: len(smtp.received) == n, what=f"the mail of alarm {code}")
        for code in codes:
            assert post_alarm(notifier, type="clear", code=code).status_code == 200
        wait_for(lambda: len(smtp.received) == 4, what="the digest of the clears")

    set_ids = [str(m.message["Message-ID"]) for m in smtp.received[:3]]
    digest = smtp.received[3].message
    assert str(digest["X-Notifier-Reason"]) == "clear"
    assert digest["In-Reply-To"] is None
    assert sorted(str(digest["References"]).split()) == sorted(set_ids)
