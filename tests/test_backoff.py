"""The one backoff: spool retries of mails, token-endpoint retries and receivers waiting for room
in the spool all wait `Backoff` delays."""

from __future__ import annotations

import random

from notifier.backoff import Backoff, Jitter


def test_retries_within_a_budget_double_up_to_the_cap() -> None:
    backoff = Backoff(base_s=0.5, cap_s=5.0, jitter=Jitter.NONE)
    assert backoff.within(30.0) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    assert Backoff(base_s=1.0, cap_s=5.0).within(0.5) == []


def test_jitter_spreads_the_waits_but_not_how_many_retries_fit() -> None:
    exact = Backoff(base_s=0.5, cap_s=5.0, jitter=Jitter.NONE).within(30.0)
    for seed in range(20):
        waits = Backoff(base_s=0.5, cap_s=5.0).within(30.0, random.Random(seed))
        assert len(waits) == len(exact)
        assert all(top / 2 <= wait <= top for wait, top in zip(waits, exact, strict=True))
    spread = {round(Backoff(base_s=0.5, cap_s=5.0).within(30.0)[3], 6) for _ in range(20)}
    assert len(spread) > 1
