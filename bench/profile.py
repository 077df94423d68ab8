"""Where a running notifier spends its time per ingested line: a py-spy profile under load.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile.py [--only tcp,udp] [--seconds 8] [--rate 40000]

Starts `notifier run` from this checkout with the bench config (`bench/common.py`), loads it
with the same sender as `bench/ingest.py` (TCP: 4 connections, 300 lines a write, as fast as
they go; UDP: paced at `--rate`), and samples it with `py-spy record --format raw` meanwhile.
Prints, per load, the functions with the largest share of self time (the innermost frame of
each sample) and the lines/s accepted while sampling, as Markdown.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import shutil
import subprocess
import time
from collections import Counter

from bench.common import LOOPBACK, NotifierProcess, markdown_table, scratch_dir
from bench.ingest import Sender


def self_time(raw: str) -> Counter[str]:
    """py-spy's raw (collapsed) stacks ``frame;frame;... count`` → samples by innermost frame,
    named ``function (file)`` as the profile in PERF-NOTES names them."""
    found: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        innermost = stack.rsplit(";", 1)[-1]
        # "function (path/to/file.py:123)" → "function (file.py)"
        name, _, where = innermost.partition(" (")
        file = where.rsplit("/", 1)[-1].split(":", 1)[0].rstrip(")")
        found[f"{name} ({file})" if file else name] += int(count)
    return found


def profile(kind: str, seconds: float, rate: float, top: int) -> str:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    sender = Sender()
    spy_args = ["record", "--format", "raw", "-r", "200", "-d", str(int(seconds)), "--nonblocking"]
    with scratch_dir("notifier-profile-") as workdir, NotifierProcess(workdir) as n:
        receiver = "syslog-tcp" if kind == "tcp" else "syslog-udp"
        before = n.accepted(receiver)
        out = workdir / "profile.txt"
        spy = subprocess.Popen(
            [py_spy, *spy_args, "-o", str(out), "--pid", str(n.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # py-spy attached
        start = time.perf_counter()
        if kind == "tcp":
            sender.start_tcp((LOOPBACK, n.syslog_port), seconds - 1, 4)
        else:
            sender.start_udp((LOOPBACK, n.syslog_port), rate, seconds - 1)
        sender.result()
        spy.wait(60)
        taken = n.accepted(receiver) - before
        elapsed = time.perf_counter() - start
        samples = self_time(out.read_text()) if out.exists() else Counter()
    sender.close()
    total = sum(samples.values()) or 1
    rows = [[name, f"{100 * count / total:.1f} %"] for name, count in samples.most_common(top)]
    return (
        f"{kind.upper()}: {taken / elapsed / 1000:.1f}k lines/s accepted while sampled, "
        f"{total} samples\n\n" + markdown_table(["function (self time)", "share"], rows)
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--only", default="tcp,udp")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rate", type=float, default=40_000, help="UDP datagrams/s sent")
    p.add_argument("--top", type=int, default=12)
    opts = p.parse_args()
    for kind in opts.only.split(","):
        print(profile(kind, opts.seconds, opts.rate, opts.top) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
