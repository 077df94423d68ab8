"""Full queues: refuse loudly or drop the least important, never lose silently."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.e2e.test_alarm_mail import route
from tests.e2e.test_delivery_failures import FAST_RETRY, account_on
from tests.service import NotifierProcess, metric, wait_for
from tests.smtpserver import SmtpTestServer


def log_route(**changes: object) -> dict[str, object]:
    return route(match={"kinds": ["log"]}, max_records_per_mail=1000, **changes)


def texts_mailed(smtp: SmtpTestServer) -> set[str]:
    found: set[str] = set()
    for m in smtp.received:
        body = m.message.get_body(("plain",))
        assert body is not None
        found.update(re.findall(r"line-\d+", body.get_content()))
    return found


def test_full_memory_queue_gives_503_and_pauses_tcp_without_losing_a_line(
    tmp_path: Path,
) -> None:
    smtp_port = free_port()
    proc = NotifierProcess(
        tmp_path,
        {
            "accounts": [account_on(smtp_port)],
            "routes": [log_route()],
            "spool": {"memory_queue_entries": 50, "overflow": "reject", **FAST_RETRY},
        },
    )
    proc.start()
    try:
        lines = [f"line-{i}" for i in range(200)]
        with socket.create_connection(("127.0.0.1", proc.tcp_port)) as sender:
            sender.sendall("".join(f"{t}\n" for t in lines).encode())
            # The mail server is down: 50 lines fill the queue and the connection stops being
            # read (back-pressure), while HTTP senders are told to come back later.
            wait_for(
                lambda: metric(proc, "notifier_ingest_accepted_total", receiver="tcp") >= 50,
                what="the queue to fill",
            )
            response = httpx.post(
                f"{proc.url}/api/v1/records", json={"kind": "log", "text": "one more"}, timeout=5
            )
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) >= 1
            assert metric(proc, "notifier_ingest_accepted_total", receiver="tcp") == 50
            with SmtpTestServer(port=smtp_port) as smtp:
                wait_for(
                    lambda: texts_mailed(smtp) == set(lines),
                    timeout=30,
                    what="every accepted line mailed once the server is back",
                )
        assert metric(proc, "notifier_ingest_rejected_total", receiver="tcp") == 0
        assert metric(proc, "notifier_ingest_spool_waits_total", receiver="tcp") >= 1
    finally:
        proc.stop()


def test_drop_oldest_drops_log_lines_counts_them_and_the_next_mail_says_so(
    tmp_path: Path,
) -> None:
    smtp_port = free_port()
    proc = NotifierProcess(
        tmp_path,
        {
            "accounts": [account_on(smtp_port)],
            "routes": [log_route()],
            "spool": {"memory_queue_entries": 5, "overflow": "drop_oldest", **FAST_RETRY},
        },
    )
    proc.start()
    try:
        with socket.create_connection(("127.0.0.1", proc.tcp_port)) as sender:
            sender.sendall("".join(f"line-{i}\n" for i in range(20)).encode())
        wait_for(
            lambda: metric(proc, "notifier_ingest_accepted_total", receiver="tcp") == 20,
            what="all 20 lines accepted",
        )
        assert metric(proc, "notifier_spool_dropped_total") == 15
        time.sleep(0.5)
        drops = [e for e in proc.log_events() if "drop" in str(e.get("event", ""))]
        assert drops, "the drop is logged"
        with SmtpTestServer(port=smtp_port) as smtp:
            wait_for(lambda: smtp.received, what="the mail after the server is back")
            body = smtp.received[0].message.get_body(("plain",))
            assert body is not None
            text = body.get_content()
        assert "15 log record(s) were dropped because the queue was full" in text
        assert texts_mailed(smtp) == {f"line-{i}" for i in range(15, 20)}
    finally:
        proc.stop()
