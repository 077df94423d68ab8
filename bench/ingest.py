"""Ingest throughput of a running notifier, next to rsyslog when it is installed.

    .venv/bin/python bench/ingest.py [--quick] [--only udp,tcp,http] [--runs 3]

- UDP: a paced sender (a separate process) sends 200-byte RFC 3164 datagrams at a target rate
  for a few seconds; a binary search finds the highest rate at which every datagram arrived
  (notifier: `notifier_ingest_accepted_total{receiver="syslog-udp"}`; rsyslog: lines written).
- TCP: N lines (LF framing) over a few connections as fast as they go; lines/s until all of
  them are accepted (notifier) or written (rsyslog).
- HTTP (notifier only): innovaphone GET and POST, JSON alarms one per request and 100 per
  request, with K concurrent connections (wrk when installed, else httpx).

Every measurement runs `--runs` times; the table shows medians and the ratio notifier/rsyslog.
The Markdown on stdout is ready for BENCHMARKS.md; progress goes to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/ingest.py` puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import multiprocessing
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from urllib.parse import urlencode

import httpx

from bench.common import (
    LOOPBACK,
    REPO,
    HttpConnection,
    NotifierProcess,
    Rsyslog,
    baseline_rev,
    code_at,
    cpu_probe_ms,
    fmt_rate,
    fmt_ratio,
    kernel_udp_drops,
    machine,
    markdown_table,
    median,
    metric_sum,
    new_database,
    on_postgresql,
    postgresql,
    rsyslogd_path,
    scratch_dir,
    uvloop_loaded,
    wait_stable,
)
from tests.pg import PgServer
from tests.service import NotifierProcess as DefaultNotifier

LINE_BYTES = 200
SECTIONS = ("udp", "tcp", "http", "durable", "flood")
FLOOD_ALARM_EVERY = 1000  # one alarm in this many datagrams of the flood
# Single-box SQLite figures may be at most this much slower than the baseline (issue #9).
BASELINE_TOLERANCE = 0.10


# --- what is sent ---------------------------------------------------------------------------


def syslog_lines(count: int = 4096, size: int = LINE_BYTES) -> list[bytes]:
    """`count` distinct RFC 3164 lines of exactly `size` bytes (no line end), innovaphone-like."""
    # RFC 3164: the day space-padded ("Nov  3"), the hour zero-padded ("09:05:00"). (A
    # replace(" 0", "  ") on the whole stamp also padded an hour before 10:00, "Nov 30  9:05",
    # which is not the usual shape: those runs measured the lenient parser.)
    now = dt.datetime.now()
    stamp = f"{now:%b} {now.day:2d} {now:%H:%M:%S}"
    lines = []
    for i in range(count):
        head = (
            f"<{134 + 8 * (i % 8)}>{stamp} gw{i % 16:02d} SIP[{1000 + i % 97}]: "
            f"seq={i:06d} REGISTER sip:user{i % 50}@pbx.example.com from 192.0.2.{i % 250} "
        ).encode()
        lines.append((head + b"x" * size)[:size])
    return lines


def form_body(i: int = 0) -> str:
    """innovaphone External GET/POST fields of one log line."""
    return urlencode(
        {
            "event": "syslog",
            "time": str(int(time.time())),
            "from": f"gw{i % 16:02d}",
            "msg": syslog_lines(1)[0].decode().split(": ", 1)[1][:150],
        }
    )


def alarm(i: int = 0) -> dict[str, object]:
    return {
        "type": "alarm",
        "code": f"0x{0x00010002 + i % 8:08x}",
        "severity": "major",
        "active": True,
        "host": f"gw{i % 16:02d}",
        "source": "PRI1",
        "text": "Layer 1 down",
    }


# --- the sender process -----------------------------------------------------------------------


def _send_udp(address: tuple[str, int], rate: float, duration_s: float) -> tuple[int, float]:
    """Send `rate` datagrams/s for `duration_s`; returns (sent, seconds it took)."""
    lines = syslog_lines()
    total = int(rate * duration_s)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect(address)
        send = sock.send
        slot = max(1, int(rate / 2000))  # sleep granularity: about half a millisecond of sends
        now = time.perf_counter
        start = now()
        sent = 0
        while sent < total:
            due = min(total, int((now() - start) * rate) + 1)
            if due <= sent:
                time.sleep(max(0.0, (sent + slot) / rate - (now() - start)))
                continue
            for i in range(sent, due):
                # not contextlib.suppress: it costs more than the send itself in this loop
                try:  # noqa: SIM105
                    send(lines[i & 4095])
                except OSError:  # ENOBUFS, ECONNREFUSED from an earlier ICMP: counted as lost
                    pass
            sent = due
        return sent, now() - start


def flood_alarm(i: int) -> bytes:
    """An innovaphone alarm record in an RFC 3164 line, distinct for each `i`."""
    now = dt.datetime.now()
    return (
        f"<131>{now:%b} {now.day:2d} {now:%H:%M:%S} gw{i % 16:02d} ALARM: "
        f'<alarm type="alarm" severity="major" code="0x{i:08x}" host="gw{i % 16:02d}" '
        f'source="PRI1" text="Layer 1 down {i}"/>'
    ).encode()


def _send_flood(address: tuple[str, int], duration_s: float) -> tuple[int, float, int]:
    """Datagrams as fast as one sender goes for `duration_s`, one alarm record in every
    `FLOOD_ALARM_EVERY` (the rest log lines); returns (sent, seconds, alarms sent)."""
    lines = syslog_lines()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect(address)
        send = sock.send
        start = time.perf_counter()
        deadline = start + duration_s
        sent = alarms = 0
        while time.perf_counter() < deadline:
            for i in range(sent, sent + FLOOD_ALARM_EVERY - 1):
                try:  # noqa: SIM105
                    send(lines[i & 4095])
                except OSError:
                    pass
            try:
                send(flood_alarm(alarms))
                alarms += 1
            except OSError:
                pass
            sent += FLOOD_ALARM_EVERY
        return sent, time.perf_counter() - start, alarms


def _send_tcp(address: tuple[str, int], seconds: float, connections: int) -> tuple[int, float]:
    """LF-framed lines over `connections` connections as fast as they go for `seconds`.

    Returns (lines sent, seconds). Sending for a time rather than a count keeps a run short
    whatever the receiver's speed; TCP flow control paces the sender to the receiver.
    """
    lines = syslog_lines(1000)
    chunk = b"".join(line + b"\n" for line in lines)
    sent = [0] * connections
    errors: list[BaseException] = []
    deadline = time.perf_counter() + seconds

    def one(index: int) -> None:
        try:
            with socket.create_connection(address) as sock:
                # A small send buffer: little is left in flight when the time is up.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 << 10)
                while time.perf_counter() < deadline:
                    sock.sendall(chunk)
                    sent[index] += len(lines)
        except OSError as e:
            errors.append(e)

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"TCP sender to {address}: {errors[0]}")
    return sum(sent), time.perf_counter() - start


def _sender_main(conn: Connection) -> None:
    """The sender process: runs the commands the bench sends it until told to stop."""
    while True:
        command = conn.recv()
        if command[0] == "stop":
            return
        try:
            if command[0] == "udp":
                conn.send(_send_udp(*command[1:]))
            elif command[0] == "flood":
                conn.send(_send_flood(*command[1:]))
            else:
                conn.send(_send_tcp(*command[1:]))
        except Exception as e:  # report it to the bench rather than hang it
            conn.send(e)


class Sender:
    """One sender process, apart from the bench (which polls counters) and the receiver."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_sender_main, args=(child,), daemon=True)
        self._proc.start()

    def start_udp(self, address: tuple[str, int], rate: float, duration_s: float) -> None:
        self._conn.send(("udp", address, rate, duration_s))

    def start_tcp(self, address: tuple[str, int], seconds: float, connections: int) -> None:
        self._conn.send(("tcp", address, seconds, connections))

    def flood(self, address: tuple[str, int], duration_s: float) -> tuple[int, float, int]:
        """`_send_flood`, waited for."""
        self._conn.send(("flood", address, duration_s))
        answer = self._conn.recv()
        if isinstance(answer, Exception):
            raise answer
        sent, seconds, alarms = answer
        return int(sent), float(seconds), int(alarms)

    def result(self) -> tuple[int, float]:
        answer = self._conn.recv()
        if isinstance(answer, Exception):
            raise answer
        sent, seconds = answer
        return int(sent), float(seconds)

    def close(self) -> None:
        self._conn.send(("stop",))
        self._proc.join(5)


# --- what is measured -------------------------------------------------------------------------


@dataclass
class Peer:
    """A receiver under test: where to send, and a cumulative count of what it took in."""

    name: str
    udp: tuple[str, int]
    tcp: tuple[str, int]
    udp_count: Callable[[], float]
    tcp_count: Callable[[], float]
    pid: int
    reset: Callable[[], None] = lambda: None  # forget what was counted (rsyslog: empty its file)


@dataclass
class UdpTrial:
    rate: float
    sent: int
    arrived: int
    seconds: float
    kernel_drops: int

    @property
    def lost(self) -> int:
        return self.sent - self.arrived

    @property
    def sender_kept_pace(self) -> bool:
        return self.sent / self.seconds >= 0.97 * self.rate


@dataclass
class UdpSearch:
    """One binary search for the highest zero-loss rate."""

    best: float = 0.0
    trials: list[UdpTrial] = field(default_factory=list)
    sender_limited: bool = False
    at_ceiling: bool = False


def udp_trial(sender: Sender, peer: Peer, rate: float, duration_s: float) -> UdpTrial:
    before, drops_before = peer.udp_count(), kernel_udp_drops()
    sender.start_udp(peer.udp, rate, duration_s)
    sent, seconds = sender.result()
    after = wait_stable(peer.udp_count, target=before + sent, quiet_s=0.6, timeout_s=30)
    trial = UdpTrial(rate, sent, int(after - before), seconds, kernel_udp_drops() - drops_before)
    peer.reset()
    return trial


def udp_search(
    sender: Sender, peer: Peer, ceiling: float, duration_s: float, steps: int
) -> UdpSearch:
    """Bisect [0, ceiling] for the highest rate with zero loss, to ~ceiling / 2**steps.

    A lossless trial the sender could not pace proves only the rate it reached, and nothing
    higher can be tried: the search stops there (the result is a lower bound).
    """
    search = UdpSearch()
    lo, hi = 0.0, ceiling
    for _ in range(steps):
        rate = round((lo + hi) / 2, -3)
        trial = udp_trial(sender, peer, rate, duration_s)
        search.trials.append(trial)
        reached = trial.sent / trial.seconds
        _progress(
            f"  {peer.name} udp {fmt_rate(rate)}: sent {trial.sent}, arrived {trial.arrived}, "
            f"lost {trial.lost} (kernel rcvbuf drops {trial.kernel_drops})"
            + ("" if trial.sender_kept_pace else f", sender reached only {fmt_rate(reached)}")
        )
        if trial.lost > 0:
            hi = rate
        elif trial.sender_kept_pace:
            lo = rate
        else:
            search.sender_limited = True
            lo = max(lo, round(reached, -2))
            break
    search.best = lo
    search.at_ceiling = hi == ceiling and lo > 0 and not search.sender_limited
    return search


def tcp_run(
    sender: Sender,
    peer: Peer,
    address: tuple[str, int],
    count: Callable[[], float],
    seconds: float,
    connections: int,
) -> float:
    """Lines/s from the first connect until the peer counted every line (NaN when it did not)."""
    before = count()
    start = time.perf_counter()
    sender.start_tcp(address, seconds, connections)
    sent, _ = sender.result()
    target = before + sent
    got = wait_stable(count, target=target, quiet_s=3.0, timeout_s=120, interval_s=0.02)
    elapsed = time.perf_counter() - start
    if got < target:
        _progress(f"  {peer.name} tcp: only {int(got - before)} of {sent} lines arrived")
        return float("nan")
    return sent / elapsed


# --- HTTP -------------------------------------------------------------------------------------


@dataclass
class HttpCase:
    name: str
    method: str
    path: str
    body: bytes
    content_type: str
    records_per_request: int


def http_cases() -> list[HttpCase]:
    form = form_body()
    return [
        HttpCase("innovaphone GET /log", "GET", f"/log?{form}", b"", "", 1),
        HttpCase(
            "innovaphone POST /log",
            "POST",
            "/log",
            form.encode(),
            "application/x-www-form-urlencoded",
            1,
        ),
        HttpCase(
            "JSON alarm, 1 per request",
            "POST",
            "/api/v1/records",
            json.dumps(alarm()).encode(),
            "application/json",
            1,
        ),
        HttpCase(
            "JSON alarms, 100 per request",
            "POST",
            "/api/v1/records",
            json.dumps([alarm(i) for i in range(100)]).encode(),
            "application/json",
            100,
        ),
    ]


@dataclass
class HttpResult:
    requests_per_s: float
    failures: int


def _lua_string(data: bytes) -> str:
    text = data.decode()
    level = "=" * 3
    assert f"]{level}]" not in text
    return f"[{level}[{text}]{level}]"


def http_wrk(
    url: str, case: HttpCase, connections: int, seconds: float, workdir: Path
) -> HttpResult:
    """wrk with one thread (the box has 2 cores: one for wrk, one for notifier)."""
    script = workdir / "case.lua"
    lines = [f'wrk.method = "{case.method}"']
    if case.body:
        lines.append(f"wrk.body = {_lua_string(case.body)}")
        lines.append(f'wrk.headers["Content-Type"] = "{case.content_type}"')
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url + case.path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", out)
    failures = int(bad.group(1)) if bad else 0
    if errors:
        failures += sum(int(g) for g in errors.groups())
    if rps is None:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    total_rps = float(rps.group(1))
    # wrk's Requests/sec counts refused requests too: subtract them.
    completed = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if completed and failures:
        n, t, unit = int(completed.group(1)), float(completed.group(2)), completed.group(3)
        secs = t / 1000 if unit == "ms" else t
        total_rps = (n - failures) / secs
    return HttpResult(total_rps, failures)


def http_httpx(url: str, case: HttpCase, connections: int, seconds: float) -> HttpResult:
    """The same with httpx (slower client: it shares the CPU with notifier)."""

    async def main() -> HttpResult:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        headers = {"Content-Type": case.content_type} if case.content_type else {}
        ok = bad = 0
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal ok, bad
                while time.perf_counter() < deadline:
                    try:
                        r = await client.request(
                            case.method, case.path, content=case.body or None, headers=headers
                        )
                        ok, bad = (ok + 1, bad) if r.status_code == 200 else (ok, bad + 1)
                    except httpx.HTTPError:
                        bad += 1

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            return HttpResult(ok / (time.perf_counter() - start), bad)

    return asyncio.run(main())


# --- durable single-alarm HTTP ingest: SQLite, PostgreSQL, two instances, a baseline -------


def distinct_alarm(i: int) -> dict[str, object]:
    """Alarm `i`, unlike every other: on PostgreSQL, identical alarms sent within
    dedupe_window_s are stored once, which would measure the de-duplication, not the store."""
    return {**alarm(i), "code": f"0x{i:08x}", "text": f"Layer 1 down {i}"}


@dataclass(frozen=True)
class Setup:
    """One way of running notifier for the durable ingest trials."""

    name: str
    instances: int = 1
    postgresql: bool = False
    env: dict[str, str] = field(default_factory=dict)  # e.g. PYTHONPATH of the baseline code


# Nothing but the ports and a route that mails nothing: the default config, whose single-box
# figures must hold against the baseline (an unrouted alarm would go to the outbox).
QUIET_ROUTE: dict[str, object] = {
    "accounts": [{"name": "bench"}],
    "routes": [
        {
            "name": "bench-nothing",
            "account": "bench",
            "to": ["nobody@example.invalid"],
            "match": {"devices": ["no-such-device-bench"]},
        }
    ],
}


async def post_alarms(ports: Sequence[int], connections: int, seconds: float) -> tuple[int, int]:
    """`connections` keep-alive connections, spread round-robin over `ports`, each POSTing one
    distinct JSON alarm at a time for `seconds`; (answered 200, refused or failed)."""
    ok = refused = 0
    counter = iter(range(1 << 40))
    deadline = time.perf_counter() + seconds

    async def sender(port: int) -> None:
        nonlocal ok, refused
        conn = HttpConnection(LOOPBACK, port)
        try:
            while time.perf_counter() < deadline:
                try:
                    status, _, _ = await conn.post_json(
                        "/api/v1/records", distinct_alarm(next(counter))
                    )
                except (OSError, asyncio.IncompleteReadError):
                    status = 0
                    await conn.close()
                ok, refused = (ok + 1, refused) if status == 200 else (ok, refused + 1)
        finally:
            await conn.close()

    await asyncio.gather(*(sender(ports[k % len(ports)]) for k in range(connections)))
    return ok, refused


def durable_trial(
    setup: Setup, workdir: Path, server: PgServer | None, opts: Options
) -> tuple[float, int]:
    """Start `setup` from empty (a new data_dir, a new database), send for http_seconds, stop;
    (alarms answered 200 per second, refusals)."""
    env = dict(setup.env)
    if setup.postgresql:
        assert server is not None
        env |= on_postgresql(new_database(server))
    procs = [
        DefaultNotifier(workdir / f"n{k}", QUIET_ROUTE, env=env) for k in range(setup.instances)
    ]
    try:
        for proc in procs:
            proc.start()
        started = time.perf_counter()
        ok, refused = asyncio.run(
            post_alarms([p.http_port for p in procs], opts.http_connections, opts.http_seconds)
        )
        return ok / (time.perf_counter() - started), refused
    finally:
        for proc in procs:
            proc.stop()


def measure_durable(opts: Options) -> str:
    """The durable ingest table: each set-up `opts.runs` times, interleaved run by run."""
    setups = [Setup("SQLite, 1 instance (this tree)")]
    rev = opts.baseline
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(postgresql())
        setups += [
            Setup("PostgreSQL, 1 instance", postgresql=True),
            Setup("PostgreSQL, 2 instances (senders split over both)", 2, postgresql=True),
        ]
        if rev != "none":
            rev = rev or baseline_rev()
            old = stack.enter_context(code_at(rev))
            setups += [
                Setup(f"SQLite, 1 instance (baseline {rev})", env=old),
                Setup(f"PostgreSQL, 1 instance (baseline {rev})", env=old, postgresql=True),
                Setup(f"PostgreSQL, 2 instances (baseline {rev})", 2, env=old, postgresql=True),
            ]
        rates: dict[str, list[float]] = {s.name: [] for s in setups}
        refusals: dict[str, int] = {s.name: 0 for s in setups}
        loads: list[float] = []
        for run in range(opts.runs):
            loads.append(os.getloadavg()[0])
            # Each set-up goes first in turn: a busy spell of the shared machine hits all.
            for setup in setups[run % len(setups) :] + setups[: run % len(setups)]:
                with scratch_dir("bench-durable-") as workdir:
                    rate, refused = durable_trial(setup, workdir, server, opts)
                rates[setup.name].append(rate)
                refusals[setup.name] += refused
                _progress(
                    f"durable run {run + 1}/{opts.runs}: {setup.name}: "
                    f"{fmt_rate(rate, ' alarms/s')}, {refused} refused (load {loads[-1]:.2f})"
                )
    return durable_report(setups, rates, refusals, loads, opts, rev)


def durable_report(
    setups: Sequence[Setup],
    rates: dict[str, list[float]],
    refusals: dict[str, int],
    loads: Sequence[float],
    opts: Options,
    rev: str,
) -> str:
    ours = rates[setups[0].name]
    rows = []
    for setup in setups:
        runs = rates[setup.name]
        # The median of the per-run ratios: each run's set-ups met the same machine moment.
        ratio = median([r / o for r, o in zip(runs, ours, strict=True) if o])
        rows.append(
            [
                setup.name,
                fmt_rate(median(runs), " alarms/s"),
                f"{ratio:.2f}×",
                _runs_text(runs),
                str(refusals[setup.name]),
            ]
        )
    text = (
        f"### Durable single-alarm HTTP ingest ({opts.http_connections} keep-alive connections, "
        f"one distinct JSON alarm per POST, answered after the commit; {opts.http_seconds:g} s "
        f"per run, {opts.runs} runs interleaved, a fresh data_dir and database per run)\n\n"
        + markdown_table(
            ["Set-up", "median", "÷ this tree's SQLite (median of run ratios)", "runs", "refused"],
            rows,
        )
    )
    if rev != "none":
        labels = ["SQLite single box", "PostgreSQL, 1 instance", "PostgreSQL, 2 instances"]
        # setups: this tree's three, then the baseline's three in the same order.
        for label, now, then in zip(labels, setups[:3], setups[3:], strict=True):
            mine, base = rates[now.name], rates[then.name]
            slower = 1 - median([o / b for o, b in zip(mine, base, strict=True) if b])
            verdict = "within" if slower <= BASELINE_TOLERANCE else "NOT within"
            how = f"{slower:.1%} slower" if slower > 0 else f"{-slower:.1%} faster"
            text += (
                f"\n\n{label}, this tree against {rev}: {how} (median of the run "
                f"ratios), {verdict} {BASELINE_TOLERANCE:.0%} of it."
            )
    at_start = ", ".join(f"{x:.2f}" for x in loads)
    text += f"\n\nLoad average (1 min) at the start of each run: {at_start}."
    return text


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Options:
    runs: int
    only: tuple[str, ...]
    udp_seconds: float
    udp_ceiling: float
    udp_steps: int
    tcp_seconds: float
    tcp_connections: int
    http_seconds: float
    http_connections: int
    rcvbuf_bytes: int
    rsyslog: bool
    baseline: str  # "": the commit before the PostgreSQL work; "none": no baseline


@dataclass
class Row:
    test: str
    unit: str
    notifier: list[float]
    rsyslog: list[float] | None = None
    note: str = ""
    baseline: list[float] | None = None  # the same test against notifier at --baseline REV


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _runs_text(values: Sequence[float]) -> str:
    return " / ".join(fmt_rate(v, "") for v in values)


def notifier_peer(n: NotifierProcess, name: str = "notifier") -> Peer:
    return Peer(
        name,
        (LOOPBACK, n.syslog_port),
        (LOOPBACK, n.syslog_port),
        lambda: n.accepted("syslog-udp"),
        lambda: n.accepted("syslog-tcp"),
        n.pid,
    )


def rsyslog_peer(r: Rsyslog) -> Peer:
    return Peer(
        "rsyslog", (LOOPBACK, r.udp_port), (LOOPBACK, r.tcp_port), r.lines, r.lines, r.pid, r.reset
    )


def measure_udp(opts: Options, sender: Sender, peers: list[Peer], rows: list[Row]) -> None:
    """The zero-loss search for each of `peers` ("notifier", and "baseline", "rsyslog" when
    measured), run by run."""
    results: dict[str, list[UdpSearch]] = {p.name: [] for p in peers}
    for run in range(opts.runs):
        for peer in peers:  # interleaved so a slow phase of the machine hits both
            _progress(f"UDP run {run + 1}/{opts.runs}: {peer.name}")
            results[peer.name].append(
                udp_search(sender, peer, opts.udp_ceiling, opts.udp_seconds, opts.udp_steps)
            )
    notes = []
    for name, searches in results.items():
        if any(s.at_ceiling for s in searches):
            notes.append(f"{name} reached the search ceiling ({fmt_rate(opts.udp_ceiling)})")
        if any(s.sender_limited for s in searches):
            notes.append(
                f"{name}: lossless at the most the sender could send, a lower bound "
                "(the sender shares the CPU with the receiver)"
            )
    rows.append(
        Row(
            f"UDP syslog, highest zero-loss rate ({LINE_BYTES}-byte RFC 3164, "
            f"{opts.udp_seconds:g} s trials)",
            "datagrams/s",
            [s.best for s in results["notifier"]],
            [s.best for s in results["rsyslog"]] if "rsyslog" in results else None,
            "; ".join(notes),
            [s.best for s in results["baseline"]] if "baseline" in results else None,
        )
    )


def measure_tcp(
    opts: Options,
    sender: Sender,
    notifiers: dict[str, NotifierProcess],
    rsyslog: Rsyslog | None,
    rows: list[Row],
) -> None:
    """TCP syslog and raw TCP lines against each of `notifiers` ("notifier", maybe
    "baseline") and rsyslog, run by run."""
    seconds, conns = opts.tcp_seconds, opts.tcp_connections
    ours: dict[str, list[float]] = {name: [] for name in notifiers}
    raw: dict[str, list[float]] = {name: [] for name in notifiers}
    theirs: list[float] = []
    for run in range(opts.runs):
        _progress(f"TCP run {run + 1}/{opts.runs}")
        for name, notifier in notifiers.items():
            npeer = notifier_peer(notifier, name)
            ours[name].append(tcp_run(sender, npeer, npeer.tcp, npeer.tcp_count, seconds, conns))
            raw[name].append(
                tcp_run(
                    sender,
                    npeer,
                    (LOOPBACK, notifier.tcp_port),
                    functools.partial(notifier.accepted, "tcp"),
                    seconds,
                    conns,
                )
            )
            _progress(
                f"  {name} syslog-tcp {fmt_rate(ours[name][-1])}, tcp {fmt_rate(raw[name][-1])}"
            )
        if rsyslog is not None:
            peer = rsyslog_peer(rsyslog)
            theirs.append(tcp_run(sender, peer, peer.tcp, peer.tcp_count, seconds, conns))
            peer.reset()
            _progress(f"  rsyslog imtcp {fmt_rate(theirs[-1])}")
    what = f"{LINE_BYTES}-byte lines + LF for {seconds:g} s over {conns} connections"
    base = "baseline" in notifiers
    rows.append(
        Row(
            f"TCP syslog ({what})",
            "lines/s",
            ours["notifier"],
            theirs if rsyslog is not None else None,
            baseline=ours["baseline"] if base else None,
        )
    )
    rows.append(
        Row(
            "TCP raw lines, innovaphone `tcp` receiver (same load)",
            "lines/s",
            raw["notifier"],
            baseline=raw["baseline"] if base else None,
        )
    )


@dataclass
class FloodRun:
    sent: int
    seconds: float
    arrived: int  # every datagram notifier took (log lines and alarms)
    alarms_sent: int
    alarms_stored: int
    kernel_drops: int


def flood_run(sender: Sender, n: NotifierProcess, seconds: float) -> FloodRun:
    def taken() -> tuple[float, float]:
        samples = n.samples()
        return (
            metric_sum(samples, "notifier_ingest_accepted_total", receiver="syslog-udp"),
            metric_sum(
                samples, "notifier_ingest_accepted_total", receiver="syslog-udp", kind="alarm"
            ),
        )

    (before, alarms_before), drops_before = taken(), kernel_udp_drops()
    sent, elapsed, alarms = sender.flood((LOOPBACK, n.syslog_port), seconds)
    wait_stable(lambda: taken()[0], target=before + sent, quiet_s=1.0, timeout_s=60)
    after, alarms_after = taken()
    return FloodRun(
        sent,
        elapsed,
        int(after - before),
        alarms,
        int(alarms_after - alarms_before),
        kernel_udp_drops() - drops_before,
    )


def measure_flood(opts: Options, sender: Sender, notifiers: dict[str, NotifierProcess]) -> str:
    """The moonshot of issue #12: a UDP log flood from one sender with alarms inside it."""
    runs: dict[str, list[FloodRun]] = {name: [] for name in notifiers}
    for run in range(opts.runs):
        for name, n in notifiers.items():
            r = flood_run(sender, n, opts.udp_seconds)
            runs[name].append(r)
            _progress(
                f"UDP flood run {run + 1}/{opts.runs}, {name}: sent {fmt_rate(r.sent / r.seconds)}"
                f", took {r.arrived} of {r.sent}, alarms stored {r.alarms_stored} of "
                f"{r.alarms_sent} (kernel rcvbuf drops {r.kernel_drops})"
            )
    rows = [
        [
            name,
            _runs_text([r.sent / r.seconds for r in rs]),
            " / ".join(f"{1 - r.arrived / r.sent:.1%}" for r in rs),
            " / ".join(f"{r.alarms_stored} of {r.alarms_sent}" for r in rs),
            f"{sum(r.alarms_sent - r.alarms_stored for r in rs)}",
        ]
        for name, rs in runs.items()
    ]
    return "\n\n".join(
        [
            f"### UDP flood with alarms inside ({opts.udp_seconds:g} s per run, one sender as "
            f"fast as it goes, one alarm record in every {FLOOD_ALARM_EVERY} datagrams, the "
            "rest 200-byte log lines; runs interleaved)",
            markdown_table(
                [
                    "receiver",
                    "datagrams sent/s, each run",
                    "datagrams lost, each run",
                    "alarms stored, each run",
                    "alarms lost in all",
                ],
                rows,
            ),
        ]
    )


def measure_http(
    opts: Options, notifiers: dict[str, NotifierProcess], workdir: Path, rows: list[Row]
) -> str:
    """Each HTTP case against each of `notifiers` ("notifier", maybe "baseline"), run by run."""
    use_wrk = shutil.which("wrk") is not None
    client = "wrk -t1" if use_wrk else "httpx AsyncClient"
    notifier = notifiers["notifier"]
    for case in http_cases():
        per_request: dict[str, list[float]] = {name: [] for name in notifiers}
        failures = 0
        fsyncs_before = notifier.counter("notifier_spool_fsyncs_total")
        for run in range(opts.runs):
            for name, n in notifiers.items():
                if use_wrk:
                    result = http_wrk(
                        n.url, case, opts.http_connections, opts.http_seconds, workdir
                    )
                else:
                    result = http_httpx(n.url, case, opts.http_connections, opts.http_seconds)
                per_request[name].append(result.requests_per_s)
                failures += result.failures if name == "notifier" else 0
                _progress(
                    f"HTTP {case.name} run {run + 1}/{opts.runs}, {name}: "
                    f"{fmt_rate(result.requests_per_s, ' req/s')}, {result.failures} failed"
                )
        fsyncs = notifier.counter("notifier_spool_fsyncs_total") - fsyncs_before
        per = case.records_per_request
        base = [r * per for r in per_request["baseline"]] if "baseline" in notifiers else None
        notes = []
        if case.path.startswith("/api"):
            notes.append(
                f"durable spool: {int(fsyncs)} fsyncs"
                if fsyncs
                else "no fsyncs counted (memory spool)"
            )
        if failures:
            notes.append(f"{failures} requests failed or refused (not counted)")
        if case.records_per_request > 1:
            rows.append(
                Row(
                    f"HTTP {case.name}",
                    "records/s",
                    [r * per for r in per_request["notifier"]],
                    note="; ".join([*notes, f"requests/s {_runs_text(per_request['notifier'])}"]),
                    baseline=base,
                )
            )
        else:
            rows.append(
                Row(
                    f"HTTP {case.name}",
                    "requests/s",
                    per_request["notifier"],
                    note="; ".join(notes),
                    baseline=base,
                )
            )
    return f"{client}, {opts.http_connections} connections, {opts.http_seconds:g} s per run"


def report(
    opts: Options, rows: list[Row], sections: list[str], facts: dict[str, str], command: str
) -> str:
    with_base = any(r.baseline for r in rows)
    base_head = ["baseline (median)", "÷ baseline (median of run ratios)", "runs: baseline"]
    table = rows and markdown_table(
        [
            "Test",
            "notifier (median)",
            *(base_head if with_base else []),
            "rsyslog (median)",
            "notifier / rsyslog",
            "runs: notifier",
            "runs: rsyslog",
            "notes",
        ],
        [
            [
                r.test,
                fmt_rate(median(r.notifier), " " + r.unit),
                *(_baseline_cells(r) if with_base else []),
                fmt_rate(median(r.rsyslog), " " + r.unit) if r.rsyslog else "–",
                fmt_ratio(median(r.notifier), median(r.rsyslog)) if r.rsyslog else "–",
                _runs_text(r.notifier),
                _runs_text(r.rsyslog) if r.rsyslog else "–",
                r.note,
            ]
            for r in rows
        ],
    )
    machine_rows = [[k, v] for k, v in {**machine(), **facts}.items()]
    return (
        "\n\n".join(
            [
                f"## Ingest throughput ({dt.date.today().isoformat()})",
                f"Command: `{command}`",
                *([table] if table else []),
                *sections,
                markdown_table(["Machine and set-up", ""], machine_rows),
            ]
        )
        + "\n"
    )


def _baseline_cells(r: Row) -> list[str]:
    """Median, the median of the run-by-run ratios (runs were interleaved), and the runs."""
    if not r.baseline:
        return ["–", "–", "–"]
    ratios = [o / b for o, b in zip(r.notifier, r.baseline, strict=True) if b]
    return [
        fmt_rate(median(r.baseline), " " + r.unit),
        f"{median(ratios):.2f}×" if ratios else "–",
        _runs_text(r.baseline),
    ]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="short runs, one of each: a smoke check")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="comma-separated sections to run: udp,tcp,http,durable,flood (default: all)",
    )
    p.add_argument("--runs", type=int, default=None, help="runs of each measurement (default 3)")
    p.add_argument(
        "--udp-ceiling",
        type=float,
        default=300_000,
        help="highest UDP rate the search tries, datagrams/s (default 300000)",
    )
    p.add_argument(
        "--rcvbuf",
        type=int,
        default=4 << 20,
        help="UDP receive buffer asked by both notifier and rsyslog (default 4 MiB)",
    )
    p.add_argument(
        "--connections", type=int, default=16, help="concurrent HTTP connections (default 16)"
    )
    p.add_argument("--no-rsyslog", action="store_true", help="do not measure rsyslog")
    p.add_argument(
        "--baseline",
        default="",
        metavar="REV",
        help="also run notifier as it was at git revision REV and compare, run by run. "
        "durable: on SQLite (default: the parent of the first commit touching "
        "notifier/spool/pg; none: skip); udp, tcp, http: only when REV is given",
    )
    a = p.parse_args(argv)
    only = tuple(s.strip() for s in a.only.split(",") if s.strip())
    unknown = set(only) - set(SECTIONS)
    if unknown:
        p.error(
            f"--only: unknown section(s) {', '.join(sorted(unknown))}; use {','.join(SECTIONS)}"
        )
    runs = a.runs or (1 if a.quick else 3)
    if runs < 1:
        p.error("--runs must be at least 1")
    return Options(
        runs=runs,
        only=only,
        udp_seconds=1.0 if a.quick else 3.0,
        udp_ceiling=a.udp_ceiling,
        udp_steps=4 if a.quick else 7,
        tcp_seconds=1.0 if a.quick else 3.0,
        tcp_connections=4,
        http_seconds=2.0 if a.quick else 5.0,
        http_connections=a.connections,
        rcvbuf_bytes=a.rcvbuf,
        rsyslog=not a.no_rsyslog,
        baseline=a.baseline,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    command = " ".join([".venv/bin/python bench/ingest.py", *map(shlex.quote, sys.argv[1:])])
    facts: dict[str, str] = {}
    rows: list[Row] = []
    # rsyslog takes part in UDP and TCP only.
    compared = bool(set(opts.only) & {"udp", "tcp"})
    have_rsyslog = compared and opts.rsyslog and rsyslogd_path() is not None
    if not compared:
        pass
    elif not opts.rsyslog:
        facts["rsyslog"] = "not measured (--no-rsyslog)"
    elif not have_rsyslog:
        facts["rsyslog"] = "rsyslog not installed: skipped"
        _progress("rsyslog not installed: skipped (apt-get install rsyslog to compare)")
    else:
        facts["rsyslog"] = (
            f"{Rsyslog.version()}; imudp + imtcp on loopback, omfile (traditional format) "
            "to tmpfs, main queue 2M"
        )
    load_at_start = os.getloadavg()[0]
    if load_at_start > 0.5:
        _progress(
            f"warning: load average {load_at_start:.2f} before the bench: other processes use "
            "the CPU and the numbers will be low; run it on a quiet machine"
        )
    probe_at_start = cpu_probe_ms()
    sections: list[str] = []
    if "durable" in opts.only:
        sections.append(measure_durable(opts))
    if set(opts.only) - {"durable"}:
        measure_receivers(opts, facts, rows, sections, have_rsyslog)
    facts["Load average (1 min) before the bench"] = f"{load_at_start:.2f}"
    facts["CPU probe before / after (`common.cpu_probe_ms`: lower is a faster box)"] = (
        f"{probe_at_start:.0f} ms / {cpu_probe_ms():.0f} ms"
    )
    print(report(opts, rows, sections, facts, command))
    return 0


def measure_receivers(
    opts: Options,
    facts: dict[str, str],
    rows: list[Row],
    sections: list[str],
    have_rsyslog: bool,
) -> None:
    """UDP, TCP and HTTP against one notifier, rsyslog, and notifier as it was at
    `--baseline REV` when given, into `rows` and `facts`."""
    rev = opts.baseline if opts.baseline not in ("", "none") else None
    sender = Sender()
    try:
        with contextlib.ExitStack() as stack:
            ndir = stack.enter_context(scratch_dir("bench-notifier-"))
            rdir = stack.enter_context(scratch_dir("bench-rsyslog-", tmpfs=True))
            notifiers = {"notifier": NotifierProcess(ndir, rcvbuf_bytes=opts.rcvbuf_bytes)}
            if rev is not None:
                notifiers["baseline"] = NotifierProcess(
                    stack.enter_context(scratch_dir("bench-baseline-notifier-")),
                    rcvbuf_bytes=opts.rcvbuf_bytes,
                    env=stack.enter_context(code_at(rev)),
                    omit_keys=keys_unknown_at(rev),
                )
                facts["Baseline"] = f"notifier at {rev} (`git archive`, this venv's packages)"
            rsyslog = Rsyslog(rdir, rcvbuf_bytes=opts.rcvbuf_bytes) if have_rsyslog else None
            for n in notifiers.values():
                n.start()
                stack.callback(n.stop)
            if rsyslog is not None:
                rsyslog.start()
                stack.callback(rsyslog.stop)
            loaded = uvloop_loaded(notifiers["notifier"].pid)
            facts["uvloop in notifier"] = {True: "yes", False: "no", None: "unknown"}[loaded]
            facts["Receiver set-up"] = (
                f"UDP receive buffer {opts.rcvbuf_bytes >> 20} MiB asked by both (root: "
                "SO_RCVBUFFORCE); notifier: memory spool 1M entries, drop_oldest, one route "
                "that mails nothing, data_dir on disk"
            )
            facts["Sender"] = (
                "one Python process on the same 2-core box: it competes with the receiver "
                "for CPU (rsyslog's threads and notifier's one loop thread alike)"
            )
            if "udp" in opts.only:
                peers = [notifier_peer(n, name) for name, n in notifiers.items()]
                if rsyslog is not None:
                    peers.append(rsyslog_peer(rsyslog))
                measure_udp(opts, sender, peers, rows)
            if "tcp" in opts.only:
                measure_tcp(opts, sender, notifiers, rsyslog, rows)
            if "http" in opts.only:
                facts["HTTP client"] = measure_http(opts, notifiers, ndir, rows)
            if "flood" in opts.only:
                sections.append(measure_flood(opts, sender, notifiers))
    finally:
        sender.close()


def keys_unknown_at(rev: str) -> tuple[str, ...]:
    """Keys of the bench config that notifier at `rev` did not know yet (it refuses unknown
    keys): left out of the baseline's config."""
    config = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:notifier/config.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(key for key in ("max_connections_per_peer",) if key not in config)


if __name__ == "__main__":
    sys.exit(main())
