"""When a waiting digest goes out: group wait, group interval, and the quiet tail of a storm."""

from __future__ import annotations

from notifier.backoff import Backoff, Jitter
from notifier.config import RouteSettings
from notifier.dispatch.worker import TokenBucket, flush_due, retry_in_s
from notifier.mail.transport import DeliveryError, Outcome

ROUTE = RouteSettings(group_wait_s=10, group_interval_s=300)
NEVER = -1e18


def test_first_record_waits_group_wait_for_others_to_join() -> None:
    assert flush_due(ROUTE, first_at=100, last_at=105, last_mail_at=NEVER) == 110


def test_a_single_alarm_long_after_the_last_mail_waits_only_group_wait() -> None:
    assert flush_due(ROUTE, first_at=1000, last_at=1000, last_mail_at=900) == 1010


def test_while_a_storm_goes_on_mails_are_group_interval_apart() -> None:
    # Records keep arriving (the latest a moment ago): the next digest waits for the interval.
    assert flush_due(ROUTE, first_at=20, last_at=299, last_mail_at=10) == 309
    assert flush_due(ROUTE, first_at=20, last_at=400, last_mail_at=10) == 310


def test_the_tail_of_a_storm_goes_out_once_the_route_is_quiet_for_group_wait() -> None:
    assert flush_due(ROUTE, first_at=11, last_at=20, last_mail_at=10) == 30


def test_a_retried_mail_goes_out_at_once_without_waiting_for_a_group_again() -> None:
    # It waited for its group before the first try and for its backoff since.
    assert flush_due(ROUTE, first_at=1000, last_at=1000, last_mail_at=990, retry=True) == 1000
    assert flush_due(ROUTE, first_at=1000, last_at=1000, last_mail_at=990) == 1010


def test_rate_limit_allows_a_burst_then_spaces_mails() -> None:
    now = [0.0]
    bucket = TokenBucket(per_minute=2, clock=lambda: now[0])
    assert bucket.wait_s() == 0
    bucket.take()
    bucket.take()
    assert bucket.wait_s() == 30.0
    now[0] = 30.0
    assert bucket.wait_s() == 0


def test_a_retry_waits_at_least_as_long_as_the_server_asked() -> None:
    backoff = Backoff(base_s=5, cap_s=900, jitter=Jitter.NONE)
    busy = DeliveryError("429 too many requests", outcome=Outcome.TEMPORARY, step="send")
    assert retry_in_s(busy, 0, backoff) == 5
    told = DeliveryError(
        "429 too many requests", outcome=Outcome.TEMPORARY, step="send", retry_after_s=120
    )
    assert retry_in_s(told, 0, backoff) == 120
    assert retry_in_s(told, 10, backoff) == 900  # the backoff is longer by then
