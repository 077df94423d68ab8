"""Acknowledge only what is stored: SIGKILL under load loses nothing that got a 2xx, on one
instance (SQLite) and on two sharing one PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash import cluster_crash_trial, crash_trial
from tests.e2e.test_two_instances import agreed_owner, instances, smtp
from tests.service import wait_for
from tests.smtpserver import SmtpTestServer

KILLS = 10
__all__ = ["smtp"]  # the fixture, shared with the two-instance tests


# Ten restarts, each waiting for /healthz: a liveness guard, not a speed test; a loaded box
# needs more than the suite's default 120 s.
@pytest.mark.timeout(360)
def test_sigkill_under_concurrent_http_load_loses_no_acknowledged_alarm(tmp_path: Path) -> None:
    result = crash_trial(tmp_path, senders=4, kills=KILLS, seed=20261127)
    print(f"\ncrash test: {result.summary()}")
    assert result.kills == KILLS
    assert result.acknowledged > 100, "the senders got too little through to prove anything"
    assert result.lost == []
    assert result.twice == []


# Two instances each restarted after every kill of theirs (a PostgreSQL spool opens in ~1 s),
# then the mails of every alarm: a liveness guard, not a speed test.
@pytest.mark.timeout(360)
def test_sigkills_of_either_of_two_instances_lose_no_alarm_and_mail_twice_only_after_a_kill(
    tmp_path: Path, pg_dsn: str, smtp: SmtpTestServer
) -> None:
    procs = instances(tmp_path, pg_dsn, smtp)
    try:
        for proc in procs:
            proc.start()
        wait_for(lambda: agreed_owner(procs), what="one owner of the route")
        result = cluster_crash_trial(procs, smtp, senders=8, kills=KILLS, seed=20261130)
    finally:
        for proc in procs:
            proc.stop()
    print(f"\ncrash test, two instances: {result.summary()}")
    print(f"mailed again after a kill before the ack (at least once): {result.resent}")
    assert result.kills == KILLS
    assert result.acknowledged > 100, "the senders got too little through to prove anything"
    assert result.lost == []
    assert result.unexplained == [], f"{result.timeline}; logged: {result.problems}"
    assert result.unrecorded <= result.kills
