"""Acknowledge only what is stored: SIGKILL under load loses nothing that got a 2xx."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash import crash_trial

KILLS = 10


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
