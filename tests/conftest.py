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


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on `host` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(family, other) as s2:
                s2.bind((host, port))
        except OSError:
            continue
        return port


@pytest.fixture
def port() -> int:
    return free_port()


# The throwaway PostgreSQL server (`pg_server`, `pg_dsn`), started only by tests that use it.
pytest_plugins = ("tests.pg",)
