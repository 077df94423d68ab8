"""Which deliveries a lease takes while the disk is full: the file's rows under the held
changes; pure, no file needed."""

from __future__ import annotations

from notifier.spool.held import ACKED, HeldDelivery, pick
from notifier.spool.schema import DEAD, QUEUED

NOW = 1000.0


def row(seq: int, ready_at: float) -> tuple[int, int, float, int, int, str]:
    return (seq, QUEUED, ready_at, 0, 0, "")


def held(state: int, ready_at: float, leased: bool = False) -> HeldDelivery:
    return HeldDelivery(state, ready_at, leased, 1, "")


def test_held_acks_leases_and_dead_letters_hide_their_rows() -> None:
    rows = [row(1, 10), row(2, 20), row(3, 30), row(4, 40)]
    changes = {
        1: held(ACKED, 10),
        2: held(QUEUED, NOW + 60, leased=True),
        3: held(DEAD, NOW),
    }
    assert [seq for seq, _ in pick(rows, changes, NOW, limit=10)] == [4]


def test_a_held_delivery_whose_retry_time_came_is_leased_again_in_ready_order() -> None:
    rows = [row(1, 10), row(3, 30)]
    changes = {2: held(QUEUED, 20), 9: held(QUEUED, NOW + 1)}
    picked = pick(rows, changes, NOW, limit=10)
    assert [seq for seq, _ in picked] == [1, 2, 3]
    assert picked[1][1] is changes[2]


def test_the_limit_takes_the_oldest_ready_first() -> None:
    rows = [row(seq, seq) for seq in range(1, 6)]
    assert [seq for seq, _ in pick(rows, {}, NOW, limit=2)] == [1, 2]
