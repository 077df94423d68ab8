"""Acknowledge only what is stored: SIGKILL under load loses nothing that got a 2xx."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from notifier.spool import admin
from tests.service import NotifierProcess

SENDERS = 4
KILLS = 10


def _sender(url: str, name: str, stop: threading.Event, acked: list[str], sent: list[str]) -> None:
    n = 0
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            text = f"{name}-{n}"
            n += 1
            sent.append(text)
            alarm = {
                "type": "alarm",
                "severity": "Major",
                "code": "0x00010002",
                "host": name,
                "source": "RELAY/RECH",
                "text": text,
            }
            try:
                response = client.post(f"{url}/api/v1/records", json=alarm)
            except httpx.HTTPError:
                time.sleep(0.02)  # down: a device would queue and retry later with a new request
                continue
            if response.status_code == 200:
                acked.append(text)


def test_sigkill_under_concurrent_http_load_loses_no_acknowledged_alarm(tmp_path: Path) -> None:
    # Nothing is mailed during the test (group_wait of an hour): every acknowledged alarm must
    # still be in the spool at the end, exactly once.
    proc = NotifierProcess(
        tmp_path,
        {
            "routes": [{"name": "ops", "to": ["ops@example.test"], "group_wait_s": 3600.0}],
        },
    )
    rng = random.Random(20261127)
    acked: list[str] = []
    sent: list[str] = []
    proc.start()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_sender, args=(proc.url, f"gw{i}", stop, acked, sent))
        for i in range(SENDERS)
    ]
    for t in threads:
        t.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.0))
            proc.kill()
            proc.start()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        # A last SIGKILL rather than a clean stop, which would mail (and ack) what waits.
        proc.kill()

    stored = Counter(row.text for row in admin.list_records(proc.data_dir, limit=10**7))
    lost = [text for text in acked if stored[text] != 1]
    twice = [text for text, n in stored.items() if n > 1]
    unacked_stored = sum(1 for text in set(sent) - set(acked) if stored[text])
    print(
        f"\ncrash test: {proc.starts - 1} SIGKILLs, {len(sent)} requests,"
        f" {len(acked)} acknowledged,"
        f" {sum(stored.values())} in the spool ({unacked_stored} stored without an answer),"
        f" {len(lost)} acknowledged but missing, {len(twice)} stored twice"
    )
    assert proc.starts == KILLS + 1
    assert len(acked) > 100, "the senders got too little through to prove anything"
    assert lost == []
    assert twice == []
