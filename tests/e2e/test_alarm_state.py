"""End to end: the alarm state a notifier keeps through `StateStore`, across restarts and on
PostgreSQL, and what the mails make of it."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.e2e.test_alarm_mail import post_alarm, subjects
from tests.e2e.test_postgresql_spool import on_postgresql, smtp
from tests.service import wait_for
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
    assert not (tmp_path / "second" / "alarms.sqlite").exists()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT code, active, severity FROM state_alarms").fetchall()
    assert rows == [("0x00010002", False, "critical")]
