"""Connection limits of the stream receivers and the HTTP server: per peer and in total.

A peer (an IP address) holding `max_per_peer` connections is refused another, so one address
cannot take every slot. When the total reaches `max_total`, the connection idle longest (no
request or frame in progress) is closed to make room for the new one, and only when every
connection is busy is the new one refused. Idle connections cost an attacker nothing to hold
and a device nothing to reopen, so a sender with something to say gets in ahead of a socket
held open: a device whose idle connection was closed connects again when it next sends.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Generic, NamedTuple, Protocol, TypeVar

from prometheus_client import Gauge

from notifier.ingest.parse.syslog import host_of

# (sender, reason, detail): counts the refusal and logs it, rate-limited.
Reject = Callable[[str, str, str], None]

IDLE_CLOSED = "idle_closed_for_room"


class Admission(StrEnum):
    """What happens to a new connection; the refusals are the reasons counted."""

    ADMIT = "admit"
    MAKE_ROOM = "make_room"  # admit after closing the connection idle longest
    PER_PEER = "too_many_connections_per_peer"
    FULL = "too_many_connections"


def admission(
    *, peer_open: int, total_open: int, max_per_peer: int, max_total: int, idle_to_close: bool
) -> Admission:
    """Admit a new connection from a peer that holds `peer_open` of `total_open` connections?

    `idle_to_close` tells whether some connection is idle (only asked when the total is full).
    """
    if peer_open >= max_per_peer:
        return Admission.PER_PEER
    if total_open < max_total:
        return Admission.ADMIT
    return Admission.MAKE_ROOM if idle_to_close else Admission.FULL


class Refusal(NamedTuple):
    """Why a connection was refused: the reason counted and a detail for people."""

    reason: str
    detail: str


class Limited(Protocol):
    """A connection the limits can see and close."""

    @property
    def sender(self) -> str: ...

    def idle_since(self) -> float | None:
        """`time.monotonic()` when it fell idle; None while a request or frame is in progress."""

    def close(self) -> None: ...


C = TypeVar("C", bound=Limited)


class ConnectionLimits(Generic[C]):
    """The open connections of one listener, by peer; keeps the open-connections gauge."""

    def __init__(self, *, max_total: int, max_per_peer: int, gauge: Gauge, reject: Reject) -> None:
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self._gauge = gauge
        self._reject = reject
        self._open: dict[C, str] = {}  # connection -> peer host
        self._per_host: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[C]:
        return iter(list(self._open))

    def admit(self, connection: C) -> Refusal | None:
        """Take `connection` in (None), closing the longest-idle one if the total is full; or
        refuse it, counted and logged, when its peer is at its limit or all are busy."""
        host = host_of(connection.sender)
        total = len(self._open)
        idle = self._longest_idle() if total >= self.max_total else None
        decision = admission(
            peer_open=self._per_host[host],
            total_open=total,
            max_per_peer=self.max_per_peer,
            max_total=self.max_total,
            idle_to_close=idle is not None,
        )
        refusal = None
        if decision is Admission.PER_PEER:
            refusal = Refusal(
                decision.value,
                f"{host} holds {self._per_host[host]} connections, the limit per peer is "
                f"{self.max_per_peer}",
            )
        elif decision is Admission.FULL:
            refusal = Refusal(
                decision.value, f"all {total} connections are busy, the limit is {self.max_total}"
            )
        if refusal is not None:
            self._reject(connection.sender, *refusal)
            return refusal
        if idle is not None:
            victim, since = idle
            self._reject(
                victim.sender,
                IDLE_CLOSED,
                f"idle {time.monotonic() - since:.0f} s; closed for {connection.sender} "
                f"({total} connections open, the limit is {self.max_total})",
            )
            self.release(victim)
            victim.close()
        self._open[connection] = host
        self._per_host[host] += 1
        self._gauge.inc()
        return None

    def release(self, connection: C) -> None:
        """Forget a closed connection (again is harmless)."""
        host = self._open.pop(connection, None)
        if host is None:
            return
        self._per_host[host] -= 1
        if not self._per_host[host]:
            del self._per_host[host]
        self._gauge.dec()

    def _longest_idle(self) -> tuple[C, float] | None:
        # A scan, but only when the total is full: cheaper than keeping an order on every frame.
        found: tuple[C, float] | None = None
        for connection in self._open:
            since = connection.idle_since()
            if since is not None and (found is None or since < found[1]):
                found = (connection, since)
        return found
