"""How long a route goes undispatched when its owner dies: two instances on one PostgreSQL.

    .venv/bin/python bench/failover.py [--kills 5] [--stops 3]

Each round finds the instance that owns the route, kills it (SIGKILL) or stops it (SIGTERM),
and times until the other instance's /metrics names itself the owner; the dead one is started
again before the next round. The promise is 15 s after a kill (lease 10 s, heartbeat 2 s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench.common import median
from tests.e2e.test_two_instances import agreed_owner, instances, owner
from tests.pg import start_server
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import SmtpTestServer


def takeover_s(procs: list[NotifierProcess], how: str) -> float:
    """End the route's owner (`kill` or `stop`); seconds until the other one owns it."""
    first = wait_for(lambda: agreed_owner(procs), 30, "one owner of the route")
    dead, survivor = (procs[0], procs[1]) if first == "a" else (procs[1], procs[0])
    started = time.monotonic()
    dead.kill() if how == "kill" else dead.stop()
    wait_for(lambda: owner(survivor) == survivor.config()["instance_name"], 60, "a takeover")
    took = time.monotonic() - started
    dead.start()
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--stops", type=int, default=3)
    args = parser.parse_args()
    server_run = start_server()
    server = next(server_run)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="notifier-failover-") as tmp,
            SmtpTestServer() as smtp,
        ):
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE failover")
            procs = instances(Path(tmp), server.dsn("failover"), smtp)
            try:
                for proc in procs:
                    proc.start()
                kills = [takeover_s(procs, "kill") for _ in range(args.kills)]
                stops = [takeover_s(procs, "stop") for _ in range(args.stops)]
            finally:
                for proc in procs:
                    proc.stop()
    finally:
        server_run.close()
    for what, times in (("SIGKILL", kills), ("SIGTERM", stops)):
        if times:
            runs = " / ".join(f"{t:.1f}" for t in times)
            print(
                f"{what} of the owner -> the other owns the route: median {median(times):.1f} s,"
                f" max {max(times):.1f} s (runs: {runs})"
            )
    return 0 if all(t <= 15.0 for t in kills) else 1


if __name__ == "__main__":
    sys.exit(main())
