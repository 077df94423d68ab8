"""The long crash test: many SIGKILLs under concurrent HTTP load, counts of what survived.

    .venv/bin/python bench/crash.py [--kills 50] [--senders 8] [--seed N]

Every alarm that got a 2xx must be in the spool exactly once after the last kill; the suite's
tests/e2e/test_crash.py runs the same trial with 10 kills and 4 senders.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.crash import crash_trial


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="notifier-crash-") as tmp:
        started = time.monotonic()
        result = crash_trial(Path(tmp), senders=args.senders, kills=args.kills, seed=args.seed)
        took = time.monotonic() - started
    print(f"seed {args.seed}, {args.senders} senders, {took:.0f} s: {result.summary()}")
    if result.lost or result.twice:
        print(f"LOST: {result.lost[:20]}  TWICE: {result.twice[:20]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
