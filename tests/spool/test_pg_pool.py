"""The pool's reconnect schedule: a server back after a long outage is found within seconds."""

from __future__ import annotations

from notifier.spool.pg.pool import MAX_RECONNECT_DELAY_S, _CappedBackoff


def test_reconnect_attempts_never_wait_longer_than_the_cap_however_long_the_outage() -> None:
    attempt = _CappedBackoff(timeout=300.0)
    now, delays = 0.0, []
    while now < 120.0:
        attempt.update_delay(now)
        delays.append(attempt.delay)
        now += attempt.delay
    # psycopg_pool's own schedule: 1, 2, 4, 8, 16, 32, 64 s (a server back at 35 s is
    # found at 63 s); capped, the attempts keep coming every 2 s.
    assert 0.8 < delays[0] <= 1.1
    assert max(delays) == MAX_RECONNECT_DELAY_S
    assert len(delays) > 55
