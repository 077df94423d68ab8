"""The pure decisions: what drop_oldest drops, which records are durable, retry delays."""

from __future__ import annotations

import random

from notifier.backoff import Backoff, Jitter
from notifier.records import Kind
from notifier.spool import Overflow, ReceiverPolicy, SpoolPolicy
from notifier.spool.policy import drop_order, make_room
from tests.spool.helpers import rec


def test_drop_order_is_lowest_kind_first_then_oldest() -> None:
    held = [(Kind.LOG.rank, "log-old"), (Kind.LOG.rank, "log-new"), (Kind.EVENT.rank, "event")]
    held += [(Kind.ALARM.rank, "alarm")]
    incoming = [rec(Kind.ALARM, "in-alarm"), rec(Kind.LOG, "in-log")]

    order = [key if key is not None else incoming[i].text for key, i in drop_order(held, incoming)]

    assert order == ["log-old", "log-new", "in-log", "event", "alarm", "in-alarm"]


def test_drop_order_consumes_held_candidates_lazily() -> None:
    def held():  # type: ignore[no-untyped-def]
        yield Kind.LOG.rank, "first"
        raise AssertionError("read past what was needed")

    first = next(iter(drop_order(held(), [rec(Kind.ALARM)])))

    assert first == ("first", None)


def test_make_room_drops_a_record_nobody_wants_only_while_bytes_are_needed() -> None:
    held = [(Kind.ALARM.rank, ("held alarm", 100))]
    incoming = [rec(Kind.LOG, "history only"), rec(Kind.ALARM, "alarm")]
    owes, sizes = [False, True], [100, 100]

    # One entry over: the log line takes no entry, so the held alarm goes.
    assert make_room(held, incoming, owes, sizes, 1, 0, 10) == (["held alarm"], set())
    # Bytes over as well: the log line goes first (lowest kind), then the held alarm.
    assert make_room(held, incoming, owes, sizes, 1, 150, 10) == (["held alarm"], {0})
    # Bytes only, and the log line is enough.
    assert make_room(held, incoming, owes, sizes, 0, 50, 10) == ([], {0})
    # No room to be made.
    assert make_room([], incoming, owes, sizes, 3, 0, 10) is None


def test_receiver_overrides_decide_durability_and_overflow() -> None:
    policy = SpoolPolicy.of(
        durable_kinds=["alarm", "clear", "event"],
        overflow="reject",
        receivers={
            "syslog-udp": ReceiverPolicy(durable_kinds=frozenset(), overflow=Overflow.DROP_OLDEST)
        },
    )

    assert policy.is_durable(rec(Kind.ALARM, receiver="http"))
    assert not policy.is_durable(rec(Kind.LOG, receiver="http"))
    assert not policy.is_durable(rec(Kind.ALARM, receiver="syslog-udp"))
    assert policy.overflow_for([rec(receiver="syslog-udp")]) is Overflow.DROP_OLDEST
    # A batch with any rejecting receiver is refused whole.
    mixed = [rec(receiver="syslog-udp"), rec(receiver="http")]
    assert policy.overflow_for(mixed) is Overflow.REJECT


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(base_s=5, factor=2, cap_s=900, jitter=Jitter.NONE)

    assert [backoff.delay(n) for n in range(4)] == [5, 10, 20, 40]
    assert backoff.delay(10) == 900
    assert backoff.delay(10_000) == 900  # no float overflow after months of retries


def test_backoff_jitter_stays_within_its_bounds() -> None:
    rng = random.Random(7)
    equal = Backoff(base_s=5, cap_s=60, jitter=Jitter.EQUAL)
    full = Backoff(base_s=5, cap_s=60, jitter=Jitter.FULL)

    for attempt in range(12):
        top = min(60, 5 * 2**attempt)
        assert top / 2 <= equal.delay(attempt, rng) <= top
        assert 0 <= full.delay(attempt, rng) <= top
    assert len({equal.delay(3, rng) for _ in range(20)}) > 1
