"""SIGKILL under load: concurrent HTTP senders, a notifier killed and restarted at random
moments, then a count of what survived. Used by the suite (small) and bench/crash.py (long)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from notifier.spool import admin
from tests.service import NotifierProcess


@dataclass(frozen=True)
class CrashResult:
    kills: int
    requests: int
    acknowledged: int
    stored: int
    stored_without_answer: int
    lost: list[str]  # acknowledged, not in the spool exactly once
    twice: list[str]  # in the spool more than once

    def summary(self) -> str:
        return (
            f"{self.kills} SIGKILLs, {self.requests} requests, {self.acknowledged} acknowledged, "
            f"{self.stored} in the spool ({self.stored_without_answer} stored without an answer), "
            f"{len(self.lost)} acknowledged but missing, {len(self.twice)} stored twice"
        )


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


def crash_trial(
    workdir: Path, *, senders: int, kills: int, seed: int, up_s: tuple[float, float] = (0.2, 1.0)
) -> CrashResult:
    """Run senders against a notifier, SIGKILL and restart it `kills` times, count.

    Nothing is mailed during the trial (group_wait of an hour) and the last stop is a SIGKILL
    too, so every acknowledged alarm must still be in the spool, exactly once.
    """
    proc = NotifierProcess(
        workdir,
        {"routes": [{"name": "ops", "to": ["ops@example.test"], "group_wait_s": 3600.0}]},
    )
    rng = random.Random(seed)
    acked: list[str] = []
    sent: list[str] = []
    proc.start()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_sender, args=(proc.url, f"gw{i}", stop, acked, sent))
        for i in range(senders)
    ]
    for t in threads:
        t.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(*up_s))
            proc.kill()
            proc.start()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        proc.kill()
    stored = Counter(row.text for row in admin.list_records(proc.data_dir, limit=10**8))
    return CrashResult(
        kills=proc.starts - 1,
        requests=len(sent),
        acknowledged=len(acked),
        stored=sum(stored.values()),
        stored_without_answer=sum(1 for text in set(sent) - set(acked) if stored[text]),
        lost=[text for text in acked if stored[text] != 1],
        twice=[text for text, n in stored.items() if n > 1],
    )
