"""A throwaway PostgreSQL for the tests: one server per test run, a fresh database per test.

The server is started by the test run itself (initdb + pg_ctl in a temporary directory, on a
free loopback port, password authentication over TCP) and stopped at the end; nothing needs a
server that the run did not start. As root, initdb and the server run as the `postgres` user
(PostgreSQL refuses to run as root). If it cannot start, the tests that need it fail with the
reason: they are never skipped. `scripts/install-test-deps.sh` installs the Debian package.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import free_port

USER = "notifier"


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str
    datadir: Path

    def dsn(self, dbname: str = "postgres", **params: str) -> str:
        """A libpq URI for `dbname` (extra `params` go in its query string)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        uri = f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"
        return f"{uri}?{query}" if query else uri


def pg_bindir() -> Path:
    """Where initdb and pg_ctl live: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    if not candidates:
        pytest.fail(
            "PostgreSQL is not installed (no initdb/pg_ctl on PATH or under "
            "/usr/lib/postgresql/*/bin): run scripts/install-test-deps.sh (or `make test`)",
            pytrace=False,
        )
    return Path(candidates[-1]).parent


def _as_server_user(argv: list[str]) -> list[str]:
    """Run `argv` as `postgres` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(_as_server_user(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}",
            pytrace=False,
        )


def start_server(*, durable: bool = False) -> Iterator[PgServer]:
    """Start a cluster in a new directory; stop it and remove the directory afterwards.

    `durable`: fsync as a production server does (for bench/); the tests kill notifier
    processes, never this server, so its own fsyncs buy them nothing.
    """
    bindir = pg_bindir()
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as
    # postgres.
    datadir = Path(tempfile.mkdtemp(prefix="notifier-pg-"))
    password = secrets.token_urlsafe(16)
    pwfile = datadir / "pwfile"
    pwfile.write_text(password + "\n")
    cluster = datadir / "data"
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(datadir, pw.pw_uid, pw.pw_gid)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    port = free_port()
    log = datadir / "server.log"
    try:
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(cluster),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={datadir}"
            " -c max_connections=300"
        )
        if not durable:
            options += " -c fsync=off -c full_page_writes=off"
        _run(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(cluster),
                "-l",
                str(log),
                "-o",
                options,
            ],
            f"pg_ctl start (server log: {log})",
        )
        yield PgServer("127.0.0.1", port, USER, password, datadir)
    finally:
        if (cluster / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user(
                    [str(bindir / "pg_ctl"), "-D", str(cluster), "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
                check=False,
            )
        shutil.rmtree(datadir, ignore_errors=True)


def _pg_ctl(server: PgServer, *args: str, what: str) -> None:
    _run([str(pg_bindir() / "pg_ctl"), "-D", str(server.datadir / "data"), *args], what)


def stop_server(server: PgServer) -> None:
    """Stop the server as an operator would for maintenance (fast: clients are cut off)."""
    _pg_ctl(server, "stop", "-m", "fast", "-w", what="pg_ctl stop")


def start_server_again(server: PgServer) -> None:
    """Start a server `stop_server` stopped, on its old port and options (`restart` reads
    them from postmaster.opts; `start` would not)."""
    log = server.datadir / "server.log"
    _pg_ctl(server, "restart", "-w", "-t", "60", "-l", str(log), what=f"pg_ctl restart ({log})")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole test run, started on first use."""
    yield from start_server()


_db_counter = iter(range(1, 1 << 30))


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """The DSN of a new, empty database for this test; dropped afterwards."""
    name = f"test_{os.getpid()}_{next(_db_counter)}"
    admin = pg_server.dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.dsn(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
