"""End to end: `notifier spool migrate --to postgresql` moves a one-box install (queued records,
alarm state, silences, acknowledgements) into the database, and the service goes on there."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from notifier.oauth2.filestore import FileTokenStore
from notifier.oauth2.pgstore import PostgresTokenStore
from notifier.oauth2.store import StoredTokens
from notifier.spool.sqlite_state import SqliteStateStore
from notifier.spool.state import Ack, Silence
from tests.e2e.test_alarm_mail import account, post_alarm, route
from tests.e2e.test_postgresql_spool import smtp
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import SmtpTestServer

__all__ = ["smtp"]  # the fixture, imported for the tests here

SET, WAITING = "0x00000001", "0x00000002"
MIGRATE = (sys.executable, "-m", "notifier", "spool", "migrate", "--to", "postgresql")


def migrate(notifier: NotifierProcess) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    return subprocess.run(
        [*MIGRATE, "--config", str(notifier.config_path)],
        capture_output=True,
        text=True,
        check=False,
        env={**env, **notifier.env},
    )


SECRET = "the store secret every instance shares"


async def add_tokens(data_dir: Path) -> None:
    """A signed-in account in the file store, sealed with the key file (no store_secret yet)."""
    store = FileTokenStore.open(data_dir)
    tokens = StoredTokens("app", "https://login.test/token", refresh_token="rt-1", updated_at=3.0)
    await store.put("ops", tokens)
    await store.close()


async def stored_in_database(dsn: str) -> StoredTokens | None:
    store = await PostgresTokenStore.open(dsn, SECRET)
    try:
        return await store.get("ops")
    finally:
        await store.close()


async def add_operator_state(data_dir: Path) -> None:
    store = SqliteStateStore(data_dir / "alarms.sqlite")
    await store.start()
    try:
        silence = Silence("s1", {"devices": ("gw09",)}, 1.0, 4e9, "maintenance", "alice", 1.0)
        await store.add_silence(silence)
        await store.ack(Ack(("gw01", SET, "RELAY/RECH"), "bob", "on it", 2.0))
    finally:
        await store.close()


def test_a_sqlite_install_moves_into_postgresql_and_goes_on_there(
    tmp_path: Path, pg_dsn: str, smtp: SmtpTestServer
) -> None:
    notifier = NotifierProcess(tmp_path, {"accounts": [account(smtp)], "routes": [route()]})
    with notifier:
        assert post_alarm(notifier, code=SET, severity="Critical").status_code == 200
        (set_mail,) = wait_for(lambda: smtp.received, what="the alarm mail")
        # The next mail is refused for now: its record stays queued in spool.sqlite3.
        smtp.script_data(*["451 4.3.0 try again later"] * 50)
        assert post_alarm(notifier, code=WAITING).status_code == 200
        wait_for(
            lambda: any(e["event"] == "mail not sent: will retry" for e in notifier.log_events()),
            what="the refused mail",
        )
    smtp.data_replies.clear()
    asyncio.run(add_operator_state(notifier.data_dir))
    asyncio.run(add_tokens(notifier.data_dir))
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(pg_dsn + "\n")
    notifier.env = {
        "NOTIFIER_SPOOL__BACKEND": "postgresql",
        "NOTIFIER_SPOOL__DSN_FILE": str(dsn_file),
        "NOTIFIER_OAUTH2__STORE_SECRET": SECRET,
    }

    done = migrate(notifier)

    assert done.returncode == 0, done.stderr
    assert "records: 1 queued records moved (1 deliveries)" in done.stdout
    assert "alarm states: 1" in done.stdout  # the set mailed; the refused one decides again
    assert "silences: 1" in done.stdout and "acknowledgements: 1" in done.stdout
    assert "OAuth2 tokens: 1 account(s) moved (ops)" in done.stdout
    moved = asyncio.run(stored_in_database(pg_dsn))
    assert moved is not None and moved.refresh_token == "rt-1" and moved.client_id == "app"
    assert pg_dsn.split("@")[0].split(":")[-1] not in done.stdout + done.stderr  # the password
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT id, created_by FROM state_silences").fetchall() == [
            ("s1", "alice")
        ]
        assert conn.execute("SELECT by FROM state_acks").fetchall() == [("bob",)]

    with notifier:  # now on PostgreSQL: the queued record is mailed, the alarm state is there
        wait_for(lambda: len(smtp.received) == 2, what="the mail of the moved record")
        assert post_alarm(notifier, code=SET, type="clear").status_code == 200
        wait_for(lambda: len(smtp.received) == 3, what="the clear mail")
    assert WAITING in str(smtp.received[1].message["Subject"])
    clear = smtp.received[2].message
    assert str(clear["Subject"]).startswith("[CLEARED]")
    assert clear["In-Reply-To"] == set_mail.message["Message-ID"]

    again = migrate(notifier)
    assert again.returncode == 1
    assert "moved to PostgreSQL already" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_migrate_needs_the_postgresql_backend_configured(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    notifier = NotifierProcess(tmp_path, {"accounts": [account(smtp)], "routes": [route()]})
    notifier.workdir.mkdir(parents=True, exist_ok=True)
    notifier.config_path.write_text(notifier.config_text())

    done = migrate(notifier)

    assert done.returncode == 1
    assert 'set [spool] backend = "postgresql"' in done.stderr


def test_migrate_refuses_while_a_notifier_uses_the_spool(
    tmp_path: Path, pg_dsn: str, smtp: SmtpTestServer
) -> None:
    notifier = NotifierProcess(tmp_path, {"accounts": [account(smtp)], "routes": [route()]})
    with notifier:
        running_env, notifier.env = (
            notifier.env,
            {
                "NOTIFIER_SPOOL__BACKEND": "postgresql",
                "NOTIFIER_SPOOL__DSN": pg_dsn,
            },
        )
        done = migrate(notifier)
        notifier.env = running_env

    assert done.returncode == 1
    assert "another notifier process is using the spool" in done.stderr
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'spool_records'")
        assert tables.fetchone() == (0,)  # nothing was created or moved
