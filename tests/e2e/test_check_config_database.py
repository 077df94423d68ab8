"""`notifier check-config` with backend = "postgresql": can the database be reached, and which
schema it has; against the test run's own PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import psycopg

from notifier.spool.pg import schema
from tests.conftest import free_port
from tests.pg import PgServer


def check_config(
    tmp_path: Path, dsn: str, *options: str, spool_extra: str = ""
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "notifier.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        f'[spool]\nbackend = "postgresql"\ndsn = "{dsn}"\n{spool_extra}'
    )
    return subprocess.run(
        [sys.executable, "-m", "notifier", "check-config", *options, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def migrated(dsn: str) -> None:
    """The database as a notifier leaves it after its start: the schema at its latest version."""

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await schema.migrate(conn)

    asyncio.run(run())


def where(server: PgServer, dsn: str) -> str:
    return f"{server.host}:{server.port}/{dsn.rsplit('/', 1)[1]}"


def test_check_config_reports_the_schema_version_of_a_migrated_database(
    tmp_path: Path, pg_server: PgServer, pg_dsn: str
) -> None:
    migrated(pg_dsn)

    done = check_config(tmp_path, pg_dsn)

    assert done.returncode == 0, done.stderr
    latest = schema.LATEST
    assert (
        f"# database: reachable at {where(pg_server, pg_dsn)}, schema version {latest} "
        f"(this notifier: {latest})\n"
    ) in done.stdout
    assert pg_server.password not in done.stdout + done.stderr


def test_check_config_says_the_schema_of_an_empty_database_will_be_created_at_start(
    tmp_path: Path, pg_server: PgServer, pg_dsn: str
) -> None:
    done = check_config(tmp_path, pg_dsn)

    assert done.returncode == 0, done.stderr
    database = [line for line in done.stdout.splitlines() if line.startswith("# database:")]
    assert database == [
        f"# database: reachable at {where(pg_server, pg_dsn)}, no schema yet: schema will be "
        f"created at start (this notifier: {schema.LATEST})"
    ]
    with psycopg.connect(pg_dsn) as conn:  # check-config only looked
        assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)


def test_check_config_refuses_a_database_newer_than_this_notifier_with_one_line_and_status_1(
    tmp_path: Path, pg_server: PgServer, pg_dsn: str
) -> None:
    migrated(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (schema.LATEST + 1,))

    done = check_config(tmp_path, pg_dsn, "--quiet")

    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        f"notifier: database: PostgreSQL at {where(pg_server, pg_dsn)}: database schema version "
        f"{schema.LATEST + 1} is newer than this notifier's ({schema.LATEST}): upgrade this "
        "notifier, or point it at another database"
    ]


def test_check_config_names_an_unreachable_database_without_its_password_and_exits_1(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens here
    dsn = f"postgresql://ops:s3cret-pw@127.0.0.1:{port}/alarms"

    loud = check_config(tmp_path, dsn)
    quiet = check_config(tmp_path, dsn, "--quiet")

    assert loud.returncode == 1
    assert "configuration is valid" in loud.stdout and "# database:" not in loud.stdout
    assert (quiet.returncode, quiet.stdout) == (1, "")
    for done in (loud, quiet):
        [line] = done.stderr.splitlines()
        expected = f"notifier: database: cannot connect to PostgreSQL at 127.0.0.1:{port}/alarms"
        assert line.startswith(expected)
        assert "s3cret-pw" not in done.stdout + done.stderr


def test_check_config_quiet_prints_nothing_for_a_reachable_current_database(
    tmp_path: Path, pg_dsn: str
) -> None:
    migrated(pg_dsn)

    done = check_config(tmp_path, pg_dsn, "--quiet")

    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_config_error_stays_status_2_and_is_reported_before_the_database_is_tried(
    tmp_path: Path,
) -> None:
    dsn = f"postgresql://ops:s3cret-pw@127.0.0.1:{free_port()}/alarms"

    done = check_config(tmp_path, dsn, spool_extra="not_a_key = 1\n")

    assert done.returncode == 2
    assert "notifier: config: spool.not_a_key" in done.stderr
    assert "database" not in done.stderr
