"""The long crash test: many SIGKILLs under concurrent HTTP load, counts of what survived.

    .venv/bin/python bench/crash.py [--kills 50] [--senders 8] [--seed N] [--two-instances]

One instance (SQLite): every alarm that got a 2xx must be in the spool exactly once after the
last kill. `--two-instances`: two `notifier run` on one PostgreSQL (started here), senders
spread over both, every 4th alarm sent to both, either instance killed and restarted; every
alarm that got a 2xx must be mailed, and a second mail of one is counted as inside the
at-least-once window (a kill just after its first copy's 250) or not. The suite's
tests/e2e/test_crash.py runs the same trials with 10 kills.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from tests.crash import cluster_crash_trial, crash_trial
from tests.e2e.test_two_instances import agreed_owner, instances
from tests.pg import start_server
from tests.service import wait_for
from tests.smtpserver import SmtpTestServer


def one_instance(tmp: Path, args: argparse.Namespace) -> tuple[str, bool]:
    result = crash_trial(tmp, senders=args.senders, kills=args.kills, seed=args.seed)
    failed = bool(result.lost or result.twice)
    if failed:
        print(f"LOST: {result.lost[:20]}  TWICE: {result.twice[:20]}")
    return result.summary(), not failed


def two_instances(tmp: Path, args: argparse.Namespace) -> tuple[str, bool]:
    server_run = start_server(durable=True)
    server = next(server_run)
    try:
        with SmtpTestServer() as smtp:
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE crash")
            procs = instances(tmp, server.dsn("crash"), smtp)
            try:
                for proc in procs:
                    proc.start()
                wait_for(lambda: agreed_owner(procs), 30, "one owner of the route")
                result = cluster_crash_trial(
                    procs, smtp, senders=args.senders, kills=args.kills, seed=args.seed
                )
            finally:
                for proc in procs:
                    proc.stop()
    finally:
        server_run.close()
    failed = bool(result.lost or result.unexplained or result.unrecorded > result.kills)
    print(f"mailed again after a kill before the ack (at least once): {result.resent[:40]}")
    if failed:
        print(f"LOST: {result.lost[:20]}  TWICE AFTER AN ACK: {result.unexplained[:20]}")
    return result.summary(), not failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--two-instances", action="store_true", help="two instances on one PostgreSQL"
    )
    args = parser.parse_args()
    trial = two_instances if args.two_instances else one_instance
    with tempfile.TemporaryDirectory(prefix="notifier-crash-") as tmp:
        started = time.monotonic()
        summary, ok = trial(Path(tmp), args)
        took = time.monotonic() - started
    print(f"seed {args.seed}, {args.senders} senders, {took:.0f} s: {summary}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
