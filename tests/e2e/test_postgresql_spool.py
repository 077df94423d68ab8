"""End to end: a real notifier process with its durable spool on the test run's PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import free_port
from tests.e2e.test_alarm_mail import account, post_alarm, route, subjects
from tests.pg import PgServer
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import SmtpTestServer


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def on_postgresql(
    tmp_path: Path, dsn: str, smtp: SmtpTestServer, name: str = "n", **route_changes: Any
) -> NotifierProcess:
    """A notifier whose spool is the database `dsn`, read from a dsn_file as a secret;
    `name`: its data_dir under tmp_path."""
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(dsn + "\n")
    return NotifierProcess(
        tmp_path / name,
        {"accounts": [account(smtp)], "routes": [route(**route_changes)]},
        env={"NOTIFIER_SPOOL__BACKEND": "postgresql", "NOTIFIER_SPOOL__DSN_FILE": str(dsn_file)},
    )


def test_an_alarm_sent_to_a_notifier_on_postgresql_is_stored_there_and_mailed(
    tmp_path: Path, pg_dsn: str, smtp: SmtpTestServer
) -> None:
    with on_postgresql(tmp_path, pg_dsn, smtp) as notifier:
        assert post_alarm(notifier, text="Trunk 1 down").status_code == 200

        mails = wait_for(lambda: smtp.received, what="the alarm mail")

        assert any("Trunk 1 down" in s for s in subjects(mails))
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute("SELECT data FROM spool_records").fetchall()
        assert any("Trunk 1 down" in data for (data,) in rows)
        assert not (notifier.data_dir / "spool.sqlite3").exists()
    assert pg_dsn.split("@")[0].split(":")[-1] not in notifier.logs()  # the password


def test_an_unreachable_database_stops_the_start_with_one_line_without_the_password(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    port = free_port()  # nothing listens here
    notifier = on_postgresql(tmp_path, f"postgresql://ops:s3cret-pw@127.0.0.1:{port}/alarms", smtp)

    with pytest.raises(RuntimeError, match="notifier exited with 1"):
        notifier.start()

    errors = [e for e in notifier.log_events() if e.get("level") == "error"]
    assert len(errors) == 1
    assert f"127.0.0.1:{port}/alarms" in errors[0]["error"]
    assert "Traceback" not in notifier.logs()
    assert "s3cret-pw" not in notifier.logs()


def test_check_config_masks_the_dsn(tmp_path: Path, pg_server: PgServer, pg_dsn: str) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text(f'[spool]\nbackend = "postgresql"\ndsn = "{pg_dsn}"\n')

    done = subprocess.run(
        [sys.executable, "-m", "notifier", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert 'dsn = "***"' in done.stdout
    assert pg_server.password not in done.stdout + done.stderr


def test_postgresql_without_a_dsn_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text('[spool]\nbackend = "postgresql"\n')

    done = subprocess.run(
        [sys.executable, "-m", "notifier", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 2
    assert "notifier: config: spool: " in done.stderr
    assert "needs dsn (or dsn_file)" in done.stderr


def test_spool_commands_say_they_read_only_the_sqlite_spool(
    tmp_path: Path, pg_server: PgServer
) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        f'[spool]\nbackend = "postgresql"\ndsn = "{pg_server.dsn("alarms")}"\n'
    )

    done = subprocess.run(
        [sys.executable, "-m", "notifier", "spool", "--config", str(config), "stats"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 2
    assert "SQLite spool only" in done.stderr
    assert not (tmp_path / "var" / "spool.sqlite3").exists()
