"""PostgreSQL stopped under load and started again: two instances ride it out by themselves.

While the database is down, senders hear 503 with Retry-After (and retry, as a device does);
nothing they were told was stored is lost, both instances reconnect without a restart, and
every acknowledged alarm is mailed once the database is back.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.crash import Traffic, mailed_at, settle, start_senders, stop_senders
from tests.e2e.test_two_instances import agreed_owner, instances, smtp
from tests.pg import PgServer, start_server, start_server_again, stop_server
from tests.service import wait_for
from tests.smtpserver import SmtpTestServer

__all__ = ["smtp"]  # the fixture, shared with the two-instance tests

OUTAGE_S = 30.0
RECOVERY_S = 15.0


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A server of this test's own: it is stopped mid-test, which others must not see."""
    yield from start_server()


# 30 s of outage, the instances' reconnect and the mails after it: a liveness guard.
@pytest.mark.timeout(300)
def test_postgresql_stopped_for_30_s_under_load_loses_nothing_and_both_instances_reconnect(
    tmp_path: Path, own_pg: PgServer, smtp: SmtpTestServer
) -> None:
    with psycopg.connect(own_pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE outage")
    procs = instances(tmp_path, own_pg.dsn("outage"), smtp)
    urls = [p.url for p in procs]
    traffic = Traffic()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        for proc in procs:
            proc.start()
        wait_for(lambda: agreed_owner(procs), what="one owner of the route")
        pids = [p.pid for p in procs]
        targets = [urls[i % 2 :] + urls[: i % 2] for i in range(8)]
        threads = start_senders(targets, stop, traffic, retry=True, both_every=4, code_each=True)
        wait_for(lambda: len(traffic.acked) > 50, what="the senders getting through")

        stop_server(own_pg)
        before, reasons_before = Counter(traffic.refused), Counter(traffic.reasons)
        time.sleep(OUTAGE_S)
        during, reasons = Counter(traffic.refused), Counter(traffic.reasons)
        during.subtract(before)
        reasons.subtract(reasons_before)
        start_server_again(own_pg)
        traffic.mark()

        # Both instances store again by themselves, within seconds of the server's return
        # (the pool retries a lost server every 2 s; left to double its wait, it came back
        # up to 30 s late): each acknowledges new alarms.
        back_at = time.monotonic()
        wait_for(
            lambda: all(traffic.acked_since_mark[url] > 20 for url in urls),
            timeout=RECOVERY_S,
            what=f"both instances taking records again ({traffic.acked_since_mark})",
        )
        recovered_s = time.monotonic() - back_at
        stop_senders(threads, stop)
        settle(procs, smtp, traffic.acked)
        assert [p.pid for p in procs] == pids, "an instance was restarted or died"
        assert all(p.proc is not None and p.proc.poll() is None for p in procs)
        logged = [p.problems() for p in procs]
    finally:
        stop_senders(threads, stop)
        for proc in procs:
            proc.stop()

    print(
        f"\nduring the outage the senders heard: {dict(+during)} ({dict(+reasons)}); "
        f"logged: {logged}; "
        f"both instances stored again {recovered_s:.1f} s after the server was back"
    )
    # What a sender heard while the database was down: "retry later", promptly.
    assert during["503"] > 0, during
    assert set(+during) <= {"503"}, during
    # ...and why: the database, not a full queue (an operator must not raise the limits).
    assert reasons["spool_unavailable"] > 0, reasons
    assert "spool_full" not in +reasons, reasons
    mailed = mailed_at(list(smtp.received))
    assert [text for text in traffic.acked if text not in mailed] == []
    for lines in logged:
        # Each kind of trouble a few lines a minute, none with a traceback: an outage
        # that lasts an hour must not bury the log.
        assert lines["traceback"] == 0, lines
        assert max(lines.values()) <= 6, lines
