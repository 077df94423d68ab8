"""Fixtures shared by every test area: a test PKI, free loopback ports."""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import TestPKI, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A CA with a server certificate for localhost/127.0.0.1/::1 and a client certificate."""
    return make_pki(Path(tmp_path_factory.mktemp("pki")))


# Ports free_port handed out from bind(0) in this process: a test that picks several ports before
# anything listens on them (a notifier's HTTP, syslog and TCP ports) must not get one twice.
_handed_out: set[int] = set()


def _candidates() -> Iterator[int]:
    """The ports free_port tries, in turn: below the kernel's ephemeral range, a slice of
    their own for each pytest-xdist worker. A port from bind(0) could be taken between the
    test choosing it and a server binding it, by another worker's bind(0) or by an outgoing
    connection (`address already in use`); none of these comes from this slice. Where the
    ephemeral range leaves too little room below it, bind(0) is all there is."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_from = int(f.read().split()[0])
    low = 10_000
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = (ephemeral_from - low) // max(workers, 1)
    if size < 1_000:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = low + (int(worker) if worker.isdigit() else 0) % max(workers, 1) * size
    yield from itertools.cycle(range(start, start + size))


_ports = _candidates()


def _bindable(family: int, kind: int, host: str, port: int) -> bool:
    try:
        with socket.socket(family, kind) as s:
            s.bind((host, port))
    except OSError:
        return False
    return True


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on `host` right now, not handed out before (see
    `_candidates` for where it comes from)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # In turn: a port comes again only after its whole slice.
    for port in itertools.islice(_ports, 2_000):
        if _bindable(family, socket.SOCK_STREAM, host, port) and _bindable(
            family, socket.SOCK_DGRAM, host, port
        ):
            return port
    while True:  # no room below the ephemeral range: what bind(0) gives
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out and _bindable(
            family,
            socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM,
            host,
            port,
        ):
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
