"""CPU time per ingested line, notifier next to rsyslog: a measure a busy machine bends less.

    .venv/bin/python bench/cpu.py [--runs 3] [--seconds 3] [--udp-rate 20000]
        [--only tcp,udp,alarm,get] [--baseline REV] [--pure-python] [--volatile]

`bench/ingest.py` measures rates, which on a shared 2-core box mostly measure how often the
receiver gets a core. This bench measures what each line costs the receiver: the CPU time
(user + system, all threads, from /proc/PID/stat) the receiving process used while taking a
load, divided by the lines it took. The same loads as `bench/ingest.py`: TCP, 4 connections of
200-byte lines as fast as they go for `--seconds`; UDP, 200-byte datagrams paced at
`--udp-rate` for `--seconds` (lines lost to a full socket buffer cost the receiver nothing and
are not counted). The ratio is notifier / rsyslog: how many times more CPU a line costs
notifier (1/ratio is the rate notifier would reach against rsyslog if both had a core each).

`alarm` and `get` are HTTP (notifier only, with `wrk`): one JSON alarm per POST to the records
API, each answered after its durable commit (SQLite), and the innovaphone ``GET /log``; 16
keep-alive connections for `--seconds`. A request's CPU there is what one core allows: 200 µs
is 5,000 requests/s. `--volatile` adds a notifier whose alarms stay in the memory queue (no
durable kinds), so the difference is what the durable commit costs a request.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import functools
import os
from collections.abc import Callable

from bench.common import (
    LOOPBACK,
    NotifierProcess,
    Rsyslog,
    code_at,
    markdown_table,
    median,
    rsyslogd_path,
    scratch_dir,
    wait_stable,
)
from bench.ingest import HttpCase, _send_tcp, _send_udp, http_cases, http_wrk, keys_unknown_at

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        after_name = f.read().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) * _TICK_S


def cost_per_line(
    pid: int, count: Callable[[], float], send: Callable[[], tuple[int, float]]
) -> float:
    """µs of the receiver's CPU per line it took while `send` ran."""
    before_lines, before_cpu = count(), cpu_seconds(pid)
    sent, _ = send()
    got = wait_stable(count, target=before_lines + sent, quiet_s=1.5, timeout_s=120)
    taken = got - before_lines
    return (cpu_seconds(pid) - before_cpu) / taken * 1e6 if taken else float("nan")


def _case(name: str) -> HttpCase:
    return next(case for case in http_cases() if case.name.startswith(name))


def _send_http(url: str, case: HttpCase, seconds: float, workdir: Path) -> tuple[int, float]:
    """`case` with wrk, 16 connections for `seconds`: (requests answered, seconds)."""
    result = http_wrk(url, case, 16, seconds, workdir)
    return round(result.requests_per_s * seconds), seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--udp-rate", type=float, default=20_000)
    p.add_argument("--only", default="tcp,udp")
    p.add_argument(
        "--baseline", default="", metavar="REV", help="also measure notifier as it was at REV"
    )
    p.add_argument(
        "--volatile",
        action="store_true",
        help="also measure this tree with no durable kinds (alarms in the memory queue only):"
        " what the durable commit costs a request",
    )
    p.add_argument(
        "--pure-python",
        action="store_true",
        help="also measure this tree with PURE_PYTHON=1 (the compiled hot loops not used)",
    )
    opts = p.parse_args()
    kinds = opts.only.split(",")
    http = {
        "alarm": (_case("JSON alarm, 1 per request"), "json"),
        "get": (_case("innovaphone GET"), "http"),
    }
    with_rsyslog = rsyslogd_path() is not None
    costs: dict[tuple[str, str], list[float]] = {}
    load = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir("notifier-cpu-"))
        notifiers = {"notifier": NotifierProcess(workdir / "n")}
        if opts.baseline:
            notifiers[f"notifier at {opts.baseline}"] = NotifierProcess(
                workdir / "b",
                env=stack.enter_context(code_at(opts.baseline)),
                omit_keys=keys_unknown_at(opts.baseline),
            )
        if opts.volatile:
            notifiers["notifier, durable_kinds = []"] = NotifierProcess(
                workdir / "v", env={"NOTIFIER_SPOOL__DURABLE_KINDS": "[]"}
            )
        if opts.pure_python:
            notifiers["notifier, PURE_PYTHON=1"] = NotifierProcess(
                workdir / "p", env={"PURE_PYTHON": "1"}
            )
        for n in notifiers.values():
            stack.enter_context(n)
        r = Rsyslog(workdir / "r") if with_rsyslog else None
        if r is not None:
            r.start()
            stack.callback(r.stop)
        for run in range(opts.runs):
            for kind in kinds:
                if kind in http:
                    case, receiver = http[kind]
                    for name, n in notifiers.items():
                        send = functools.partial(_send_http, n.url, case, opts.seconds, workdir)
                        us = cost_per_line(n.pid, functools.partial(n.accepted, receiver), send)
                        costs.setdefault((kind, name), []).append(us)
                        print(f"run {run + 1} {kind} {name}: {us:.2f} µs/request", file=sys.stderr)
                    continue
                peers: list[tuple[str, int, int, Callable[[], float]]] = [
                    (name, n.pid, n.syslog_port, functools.partial(n.accepted, f"syslog-{kind}"))
                    for name, n in notifiers.items()
                ]
                if r is not None:
                    port = r.tcp_port if kind == "tcp" else r.udp_port
                    peers.append(("rsyslog", r.pid, port, r.lines))
                for name, pid, port, count in peers:
                    address = (LOOPBACK, port)
                    send = (
                        (lambda a=address: _send_tcp(a, opts.seconds, 4))
                        if kind == "tcp"
                        else (lambda a=address: _send_udp(a, opts.udp_rate, opts.seconds))
                    )
                    us = cost_per_line(pid, count, send)
                    costs.setdefault((kind, name), []).append(us)
                    print(f"run {run + 1} {kind} {name}: {us:.2f} µs/line", file=sys.stderr)
    rows = []
    for kind in kinds:
        theirs = costs.get((kind, "rsyslog"), [])
        for name in notifiers:
            ours = costs[(kind, name)]
            ratio = f"{median(ours) / median(theirs):.1f}×" if theirs else "–"
            rows.append(
                [
                    kind.upper(),
                    name,
                    f"{median(ours):.2f}",
                    f"{median(theirs):.2f}" if theirs else "–",
                    ratio,
                    " / ".join(f"{v:.2f}" for v in ours),
                    " / ".join(f"{v:.2f}" for v in theirs) or "–",
                ]
            )
    print(f"Command: `{' '.join(['.venv/bin/python', 'bench/cpu.py', *sys.argv[1:]])}`")
    print(f"Load average (1 min) before: {load:.2f}\n")
    headers = ["path", "receiver", "µs CPU/line (request)", "rsyslog µs CPU/line", "÷ rsyslog"]
    print(markdown_table([*headers, "runs", "runs: rsyslog"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
