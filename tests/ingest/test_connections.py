"""The connection-limit decision and the table that acts on it, without sockets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from notifier.ingest.connections import Admission, ConnectionLimits, admission
from notifier.metrics import Metrics


@pytest.mark.parametrize(
    ("peer_open", "total_open", "idle", "expected"),
    [
        (0, 0, False, Admission.ADMIT),
        (63, 99, False, Admission.ADMIT),
        (64, 10, True, Admission.PER_PEER),  # the peer's limit holds even with room
        (1, 100, True, Admission.MAKE_ROOM),
        (1, 100, False, Admission.FULL),
    ],
)
def test_admission_names_its_reason(
    peer_open: int, total_open: int, idle: bool, expected: Admission
) -> None:
    decided = admission(
        peer_open=peer_open,
        total_open=total_open,
        max_per_peer=64,
        max_total=100,
        idle_to_close=idle,
    )
    assert decided is expected


@dataclass(eq=False)
class FakeConnection:
    sender: str
    idle: float | None  # monotonic time it fell idle; None = busy
    closed: bool = False

    def idle_since(self) -> float | None:
        return self.idle

    def close(self) -> None:
        self.closed = True


def limits(
    max_total: int, max_per_peer: int = 64
) -> tuple[ConnectionLimits[FakeConnection], Metrics, list[tuple[str, str]]]:
    metrics = Metrics()
    refused: list[tuple[str, str]] = []
    table: ConnectionLimits[FakeConnection] = ConnectionLimits(
        max_total=max_total,
        max_per_peer=max_per_peer,
        gauge=metrics.connections.labels("test"),
        reject=lambda sender, reason, detail: refused.append((sender, reason)),
    )
    return table, metrics, refused


def test_a_full_table_closes_the_connection_idle_longest_never_a_busy_one() -> None:
    table, _, refused = limits(max_total=3)
    busy = FakeConnection("10.0.0.1:1", None)
    old = FakeConnection("10.0.0.2:1", 100.0)
    young = FakeConnection("10.0.0.3:1", 200.0)
    for c in (busy, old, young):
        assert table.admit(c) is None

    assert table.admit(FakeConnection("10.0.0.4:1", None)) is None
    assert (busy.closed, old.closed, young.closed) == (False, True, False)
    assert refused == [("10.0.0.2:1", "idle_closed_for_room")]


def test_a_full_table_of_busy_connections_refuses_the_new_one() -> None:
    table, metrics, refused = limits(max_total=1)
    assert table.admit(FakeConnection("10.0.0.1:1", None)) is None
    refusal = table.admit(FakeConnection("10.0.0.2:1", None))
    assert refusal is not None and refusal.reason == "too_many_connections"
    assert refused == [("10.0.0.2:1", "too_many_connections")]
    assert (
        metrics.registry.get_sample_value("notifier_ingest_connections", {"receiver": "test"}) == 1
    )


def test_the_per_peer_count_is_by_address_and_freed_on_release() -> None:
    table, metrics, _ = limits(max_total=10, max_per_peer=2)
    a, b = FakeConnection("10.0.0.9:1", 1.0), FakeConnection("10.0.0.9:2", 2.0)
    assert table.admit(a) is None and table.admit(b) is None
    refusal = table.admit(FakeConnection("10.0.0.9:3", 3.0))
    assert refusal is not None and refusal.reason == "too_many_connections_per_peer"
    assert table.admit(FakeConnection("10.0.0.8:1", 3.0)) is None  # another address

    table.release(a)
    table.release(a)  # connection_lost after an eviction already released it
    assert table.admit(FakeConnection("10.0.0.9:4", 4.0)) is None
    gauge = metrics.registry.get_sample_value("notifier_ingest_connections", {"receiver": "test"})
    assert gauge == len(table) == 3
