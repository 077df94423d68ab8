"""Forwarding throughput: log lines in over syslog TCP, out through a forward to rsyslog.

    .venv/bin/python bench/forward.py [--lines 200000] [--protocol tcp] [--format rfc5424]

Starts rsyslogd (imtcp, writing a file on tmpfs) and `notifier run` with one forward of log
lines to it; one connection writes `--lines` LF-framed RFC 3164 lines to notifier's syslog TCP
port as fast as TCP lets it. The rate is lines / time from the first byte sent until rsyslog has
written every line (parse, spool in memory, lease, encode, batch write, rsyslog's own work).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    NotifierProcess,
    Rsyslog,
    fmt_rate,
    machine,
    scratch_dir,
    wait_stable,
)

FORWARD = """
[[forwards]]
name = "archive"
kind = "syslog"
target = "{LOOPBACK}:{port}"
protocol = "tcp"
framing = "octet-counted"
format = "{fmt}"
match = {{ kinds = ["log"] }}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--format", default="rfc5424", choices=["rfc5424", "rfc3164"])
    args = parser.parse_args()
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f}: numbers will be low")
    line = b"<134>Nov 30 10:00:00 gw01 gwlog: LOG_HTTP 3 TCP-Up 172.16.10.14:7793 %08d\n"
    payload = b"".join(line % i for i in range(args.lines))
    with scratch_dir("notifier-fwd-", tmpfs=True) as tmp, Rsyslog(tmp / "rsyslog") as rsyslog:
        extra = FORWARD.format(LOOPBACK=LOOPBACK, port=rsyslog.tcp_port, fmt=args.format)
        with NotifierProcess(tmp / "notifier", extra_toml=extra) as notifier:
            started = time.monotonic()
            with socket.create_connection((LOOPBACK, notifier.syslog_port)) as conn:
                conn.sendall(payload)
            accepted = lambda: notifier.accepted("syslog-tcp")  # noqa: E731
            wait_stable(accepted, quiet_s=3.0, timeout_s=600, target=args.lines)
            ingested = time.monotonic() - started
            written = wait_stable(rsyslog.lines, quiet_s=3.0, timeout_s=600, target=args.lines)
            took = time.monotonic() - started
            sent = notifier.counter("notifier_forward_sent_total", forward="archive")
    info = machine()
    print(f"{info['CPU model']} ({info['CPUs (nproc)']} CPUs), {info['Python']}")
    print(
        f"{args.lines} lines, format {args.format}: {int(written)} written by rsyslog "
        f"({int(sent)} counted sent) in {took:.2f} s = {fmt_rate(written / took, ' lines/s')}"
        f"; all were in the spool after {ingested:.2f} s"
    )
    return 0 if written >= args.lines else 1


if __name__ == "__main__":
    sys.exit(main())
