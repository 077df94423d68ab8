"""Fixtures shared by every test area: a test PKI, free loopback ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.certs import TestPKI, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A CA with a server certificate for localhost/127.0.0.1/::1 and a client certificate."""
    return make_pki(Path(tmp_path_factory.mktemp("pki")))


# Ports free_port handed out in this process: the kernel may give a port it just freed to the
# next bind(0), and a test that picks several ports before anything listens on them (a
# notifier's HTTP, syslog and TCP ports) must not get the same one twice.
_handed_out: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on `host` right now, not handed out before."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port in _handed_out:
            continue
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(family, other) as s2:
                s2.bind((host, port))
        except OSError:
            continue
        _handed_out.add(port)
        return port


def connections_to(port: int) -> int:
    """TCP sockets this process holds open to `port` (any address), counted by the kernel.

    A socket the code under test closed is gone from here; one it forgot, or that is still
    saying goodbye, is not. Linux only (/proc).
    """
    mine = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:  # the directory's own fd, or one closed meanwhile
            continue
        if target.startswith("socket:["):
            mine.add(target.removeprefix("socket:[").removesuffix("]"))
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            count += remote_port == port and fields[9] in mine
    return count


@pytest.fixture
def port() -> int:
    return free_port()


# The throwaway PostgreSQL server (`pg_server`, `pg_dsn`), started only by tests that use it.
pytest_plugins = ("tests.pg",)
