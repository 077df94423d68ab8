"""End-to-end mail benchmarks: alarm-to-mail latency, a storm of alarms, SMTP connection reuse.

    .venv/bin/python bench/e2e.py [--quick] [--only latency,cluster,storm,reuse] [--runs 3]

- latency: one alarm at a time over HTTP (`POST /api/v1/records`), group_wait_s = 0; the time
  from sending the request to the SMTP server accepting the mail's DATA (timestamped in the
  server's DATA handler), and the HTTP answer time alone (ingest incl. fsync). p50/p90/p99/max.
- cluster: the same with two instances on one PostgreSQL that the bench starts on loopback
  (tests/pg.py, fsync on), alarm i sent to instance i mod 2: half reach the route's owner
  through the other instance and the database (LISTEN/NOTIFY).
- storm: 10,000 alarms spread evenly over 10 s by several paced senders, once with a storm
  config a user would pick and once with the defaults: mails sent, alarms the subjects account
  for ("[N ALARMS] ..."), and the drain (last alarm answered -> last mail accepted).
- reuse: notifier's SmtpSender directly: N mails as one batch (one connection) vs one send()
  per mail (a new connection each), mails/s and the ratio, in the same run.

The SMTP server is aiosmtpd in a separate process (this file with --smtp-sink), so it does not
share a GIL with the measuring code; it reports every mail it accepts on its stdout with a
CLOCK_MONOTONIC timestamp, which is the same clock in every process on Linux.
The Markdown on stdout is ready for BENCHMARKS.md; progress goes to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/e2e.py` puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import datetime as dt
import email.parser
import email.policy
import json
import math
import os
import re
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bench.common import (
    LOOPBACK,
    HttpConnection,
    NotifierProcess,
    baseline_rev,
    code_at,
    fmt_ratio,
    free_port,
    machine,
    markdown_table,
    median,
    new_database,
    on_postgresql,
    postgresql,
    scratch_dir,
    uvloop_loaded,
)
from tests.pg import PgServer

SECTIONS = ("latency", "cluster", "storm", "reuse")
RECORDS_PATH = "/api/v1/records"
TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0
TARGET_STORM_MAILS = 20
TARGET_DRAIN_S = 15.0

# The storm config this bench recommends: the first digest after 5 s, then one every 5 s at
# most while the storm lasts, so the last alarms wait 5 s at most once it is over.
STORM_ROUTE: dict[str, float | int] = {
    "group_wait_s": 5.0,
    "group_interval_s": 5.0,
    "max_mails_per_minute": 10,
    "max_records_per_mail": 50,
}
DEFAULT_ROUTE: dict[str, float | int] = {}  # group_wait 10 s, group_interval 300 s, 10/min, 50
LATENCY_ROUTE: dict[str, float | int] = {
    "group_wait_s": 0.0,
    "group_interval_s": 0.0,
    "max_mails_per_minute": 1_000_000,
}

E2E_CONFIG = """\
data_dir = "{data_dir}"

[log]
level = "info"
format = "json"

[http]
listen = "127.0.0.1:{http_port}"

[syslog]
udp = "127.0.0.1:{syslog_port}"
tcp = "127.0.0.1:{syslog_port}"

[tcp]
listen = "127.0.0.1:{tcp_port}"

[[accounts]]
name = "ops"
server = "127.0.0.1:{smtp_port}"
tls = "none"
sender_address = "alarms@notifier.test"
sender_name = "notifier"

[[routes]]
name = "ops"
account = "ops"
to = ["Ops Team <ops@example.test>"]
{route}
"""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of `values`."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def alarms_in_subject(subject: str) -> int:
    """Alarms a mail's subject accounts for: "[37 ALARMS] gw01" -> 37, "[ALARM Major] ..." -> 1."""
    found = re.match(r"\[(\d+) ALARMS?\b", subject)
    if found:
        return int(found.group(1))
    return 1 if subject.startswith("[ALARM") else 0


def records_in_ids_header(value: str) -> int:
    """Record count in X-Notifier-Record-Ids: "N records, sha256 ..." or space-separated ids."""
    found = re.match(r"(\d+) records, sha256 ", value)
    return int(found.group(1)) if found else len(value.split())


def route_toml(route: Mapping[str, float | int]) -> str:
    return "".join(f"{key} = {value!r}\n" for key, value in route.items())


def route_text(route: Mapping[str, float | int]) -> str:
    if not route:
        return "defaults (group_wait_s 10, group_interval_s 300, 10 mails/min, 50 per mail)"
    return ", ".join(f"{key} {value:,}" for key, value in route.items())


# --- the SMTP server, in its own process --------------------------------------------------------


def run_sink(port: int) -> None:
    """aiosmtpd on 127.0.0.1:`port`; one JSON line per accepted mail on stdout."""
    from aiosmtpd.smtp import SMTP, Envelope, Session

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    headers_only = email.parser.BytesHeaderParser(policy=email.policy.compat32)

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            at = time.monotonic()
            content = envelope.original_content or b""
            head = headers_only.parsebytes(content.split(b"\r\n\r\n", 1)[0])
            report = {
                "at": at,
                "conn": getattr(server, "number", 0),
                "ids": " ".join(str(head.get("X-Notifier-Record-Ids", "")).split()),
                "subject": " ".join(str(head.get("Subject", "")).split()),
            }
            sys.stdout.write(json.dumps(report) + "\n")
            sys.stdout.flush()
            return "250 2.0.0 OK queued"

    handler = Handler()
    connections = 0

    def factory() -> SMTP:
        nonlocal connections
        connections += 1
        smtp = SMTP(handler, hostname="sink.test")
        smtp.number = connections  # type: ignore[attr-defined]
        return smtp

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, LOOPBACK, port, backlog=1024)
        sys.stdout.write(json.dumps({"ready": port}) + "\n")
        sys.stdout.flush()
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@dataclass(frozen=True)
class Mail:
    at: float  # time.monotonic() in the SMTP server when DATA was accepted
    conn: int  # the server's connection number
    ids: str  # X-Notifier-Record-Ids
    subject: str


@dataclass
class Sink:
    """The SMTP server process and the mails it reported, in order."""

    port: int = 0
    mails: list[Mail] = field(default_factory=list)
    _proc: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None
    _by_id: dict[str, Mail] = field(default_factory=dict)
    _waiters: dict[str, asyncio.Future[Mail]] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.port = self.port or free_port()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--smtp-sink",
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
        if not line.startswith(b'{"ready"'):
            raise RuntimeError(f"the SMTP sink did not start (said {line[:200]!r})")
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            data = json.loads(line)
            mail = Mail(float(data["at"]), int(data["conn"]), data["ids"], data["subject"])
            self.mails.append(mail)
            self._by_id[mail.ids] = mail
            waiter = self._waiters.pop(mail.ids, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(mail)
            self._changed.set()

    async def mail_for(self, record_id: str, timeout_s: float) -> Mail:
        """The mail about exactly this one record (waits for it)."""
        found = self._by_id.get(record_id)
        if found is not None:
            return found
        waiter = self._waiters.setdefault(record_id, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            raise RuntimeError(f"no mail for record {record_id} within {timeout_s:g} s") from None

    async def wait(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `done()` (checked after each mail) or `timeout_s`; whether it got done."""
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
        return True

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 5)
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


# --- notifier and a lean HTTP client ------------------------------------------------------------


@dataclass
class MailingNotifier(NotifierProcess):
    """`notifier run` with one SMTP account (the sink, no TLS) and one route to it."""

    smtp_port: int = 0
    route: Mapping[str, float | int] = field(default_factory=dict)

    def config_text(self) -> str:
        return E2E_CONFIG.format(
            data_dir=self.workdir / "var",
            http_port=self.http_port,
            syslog_port=self.syslog_port,
            tcp_port=self.tcp_port,
            smtp_port=self.smtp_port,
            route=route_toml(self.route),
        )


def alarm(code: int, host: str = "gw01", text: str = "Registration down") -> dict[str, str]:
    return {
        "type": "alarm",
        "severity": "Major",
        "code": f"0x{code:08x}",  # distinct codes: each is a new alarm, none is a re-send
        "host": host,
        "source": "RELAY/RECH",
        "text": f"{text} {code}",
    }


async def start_notifier(
    workdir: Path, sink: Sink, route: Mapping[str, float | int], env: Mapping[str, str] = {}
) -> MailingNotifier:
    """`env`: e.g. `code_at(rev)`'s, to run notifier as it was at an earlier commit."""
    proc = MailingNotifier(workdir, env=env, smtp_port=sink.port, route=route)
    await asyncio.to_thread(proc.start)
    return proc


async def stop_notifier(proc: MailingNotifier) -> None:
    await asyncio.to_thread(proc.stop)


# --- 1. latency ---------------------------------------------------------------------------------


@dataclass
class LatencyRun:
    mail_ms: list[float]
    http_ms: list[float]


async def start_instances(
    workdir: Path,
    sink: Sink,
    route: Mapping[str, float | int],
    server: PgServer | None,
    env: Mapping[str, str],
) -> list[MailingNotifier]:
    """One notifier on SQLite, or (`server` given) two instances on a new database there."""
    if server is None:
        return [await start_notifier(workdir, sink, route, env)]
    dsn = new_database(server)
    procs = [
        MailingNotifier(
            workdir / name,
            env={**on_postgresql(dsn), "NOTIFIER_INSTANCE_NAME": name},
            smtp_port=sink.port,
            route=route,
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        await asyncio.to_thread(proc.start)
    return procs


async def latency_run(
    sink: Sink,
    samples: int,
    warmup: int,
    server: PgServer | None = None,
    env: Mapping[str, str] = {},
) -> tuple[LatencyRun, bool | None]:
    """`server`: two instances on PostgreSQL there, alarm i sent to instance i % 2 (so half of
    them reach the route's owner through the other instance and the database). `env`: for the
    notifier on SQLite, e.g. the baseline's."""
    with scratch_dir("bench-e2e-latency-") as workdir:
        procs = await start_instances(workdir, sink, LATENCY_ROUTE, server, env)
        conns = [HttpConnection(LOOPBACK, proc.http_port) for proc in procs]
        run = LatencyRun([], [])
        try:
            uvloop = uvloop_loaded(procs[0].pid)
            for i in range(warmup + samples):
                conn = conns[i % len(conns)]
                sent = time.monotonic()
                status, _, content = await conn.post_json(RECORDS_PATH, alarm(i))
                answered = time.monotonic()
                if status != 200:
                    raise RuntimeError(f"alarm {i}: HTTP {status}: {content[:300]!r}")
                (record_id,) = json.loads(content)["ids"]
                mail = await sink.mail_for(record_id, timeout_s=30)
                if i >= warmup:
                    run.mail_ms.append((mail.at - sent) * 1000)
                    run.http_ms.append((answered - sent) * 1000)
        finally:
            for conn in conns:
                await conn.close()
            for proc in procs:
                await stop_notifier(proc)
    return run, uvloop


# --- 2. storm -----------------------------------------------------------------------------------


@dataclass
class StormRun:
    mails: int
    alarms_in_subjects: int
    records_in_headers: int
    drain_s: float  # last alarm answered -> last mail accepted; NaN when not all were mailed
    first_mail_s: float  # first alarm sent -> first mail accepted
    send_s: float  # first alarm sent -> last alarm answered
    refusals: int  # non-200 answers (retried)
    connections: int  # SMTP connections the notifier opened


async def send_storm(
    port: int, total: int, seconds: float, senders: int
) -> tuple[float, float, int]:
    """`total` alarms evenly over `seconds`, alarm i at start + i * seconds / total, by `senders`
    connections; a refused alarm is sent again (as a device would). Returns (start, end,
    refusals): monotonic times of the first send and the last 200 answer."""
    start = time.monotonic() + 0.2
    gap = seconds / total
    last_answer = 0.0
    refusals = 0

    async def sender(k: int) -> None:
        nonlocal last_answer, refusals
        conn = HttpConnection(LOOPBACK, port)
        try:
            for i in range(k, total, senders):
                delay = start + i * gap - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                while True:
                    status, headers, _ = await conn.post_json(
                        RECORDS_PATH, alarm(i, host=f"gw{i % 50:02d}")
                    )
                    if status == 200:
                        break
                    refusals += 1
                    retry = float(headers.get("retry-after", "0.1") or 0.1)
                    await asyncio.sleep(min(retry, 1.0))
                last_answer = max(last_answer, time.monotonic())
        finally:
            await conn.close()

    await asyncio.gather(*(sender(k) for k in range(senders)))
    return start, last_answer, refusals


async def storm_run(
    sink: Sink,
    route: Mapping[str, float | int],
    total: int,
    seconds: float,
    senders: int,
) -> StormRun:
    first = len(sink.mails)

    def mails() -> list[Mail]:
        return sink.mails[first:]

    def accounted() -> int:
        return sum(alarms_in_subject(m.subject) for m in mails())

    with scratch_dir("bench-e2e-storm-") as workdir:
        proc = await start_notifier(workdir, sink, route)
        try:
            start, end, refusals = await send_storm(proc.http_port, total, seconds, senders)
            wait_s = float(route.get("group_wait_s", 10.0))
            interval_s = float(route.get("group_interval_s", 300.0))
            done = await sink.wait(lambda: accounted() >= total, wait_s + interval_s + 60)
            # A little longer: a mail beyond the count (a duplicate) would show up here.
            await asyncio.sleep(1.0)
        finally:
            await stop_notifier(proc)
    got = mails()
    return StormRun(
        mails=len(got),
        alarms_in_subjects=accounted(),
        records_in_headers=sum(records_in_ids_header(m.ids) for m in got),
        drain_s=max(m.at for m in got) - end if done and got else math.nan,
        first_mail_s=min(m.at for m in got) - start if got else math.nan,
        send_s=end - start,
        refusals=refusals,
        connections=len({m.conn for m in got}),
    )


# --- 3. connection reuse ------------------------------------------------------------------------


@dataclass
class ReuseRun:
    batch_per_s: float
    single_per_s: float
    batch_connections: int
    single_connections: int


async def reuse_run(sink: Sink, count: int, batch_first: bool) -> ReuseRun:
    from notifier.mail.compose import Envelope, MailItem, Reason, compose, outgoing
    from notifier.mail.smtp import SendResult, SmtpSender, SmtpSettings
    from notifier.mail.transport import Outgoing
    from notifier.records import Kind, Record, Severity

    envelope = Envelope("alarms@notifier.test", "notifier", ("Ops Team <ops@example.test>",))
    now = time.time()

    def messages() -> list[Outgoing]:
        out = []
        for i in range(count):
            record = Record(
                kind=Kind.ALARM,
                received_at=now,
                sender="127.0.0.1",
                receiver="json",
                raw=b"",
                text=f"Registration down {i}",
                device="gw01",
                code=f"0x{i:08x}",
                severity=Severity.MAJOR,
                source="RELAY/RECH",
            )
            out.append(outgoing(compose([MailItem(record, Reason.NEW)], envelope), envelope))
        return out

    sender = SmtpSender(SmtpSettings(host=LOOPBACK, port=sink.port, tls="none"), account="bench")

    async def timed(send: Callable[[list[Outgoing]], Awaitable[int]]) -> tuple[float, int]:
        batch = messages()  # composing is not what is measured
        first = len(sink.mails)
        began = time.perf_counter()
        ok = await send(batch)
        took = time.perf_counter() - began
        if ok != count:
            raise RuntimeError(f"only {ok} of {count} mails were accepted")
        await sink.wait(lambda: len(sink.mails) - first >= count, 10)
        return count / took, len({m.conn for m in sink.mails[first:]})

    async def one_batch(batch: list[Outgoing]) -> int:
        results = await sender.send(batch)
        return sum(isinstance(r, SendResult) for r in results)

    async def one_by_one(batch: list[Outgoing]) -> int:
        ok = 0
        for message in batch:
            (result,) = await sender.send([message])
            ok += isinstance(result, SendResult)
        return ok

    try:
        if batch_first:
            batch_rate, batch_conns = await timed(one_batch)
            single_rate, single_conns = await timed(one_by_one)
        else:
            single_rate, single_conns = await timed(one_by_one)
            batch_rate, batch_conns = await timed(one_batch)
    finally:
        await sender.close()
    return ReuseRun(batch_rate, single_rate, batch_conns, single_conns)


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    only: tuple[str, ...]
    runs: int
    latency_samples: int
    latency_warmup: int
    storm_alarms: int
    storm_seconds: float
    storm_senders: int
    storm_route: dict[str, float | int]
    default_runs: int
    reuse_mails: int
    quick: bool
    baseline: str  # latency: "" the commit before the PostgreSQL work; "none": no baseline


def _ms(value: float) -> str:
    return "–" if value != value else f"{value:.1f} ms"


def _s(value: float) -> str:
    return "not drained" if value != value else f"{value:.1f} s"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def latency_table(runs: list[LatencyRun]) -> str:
    rows = []
    measures: list[tuple[str, list[list[float]], bool]] = [
        ("alarm → SMTP DATA accepted", [r.mail_ms for r in runs], True),
        ("HTTP answer alone (ingest + fsync)", [r.http_ms for r in runs], False),
    ]
    for name, samples, target in measures:
        per_run = {p: [percentile(s, p) for s in samples] for p in (50, 90, 99, 100)}
        p50, p99 = median(per_run[50]), median(per_run[99])
        rows.append(
            [
                name,
                _ms(p50),
                _ms(median(per_run[90])),
                _ms(p99),
                _ms(max(per_run[100])),
                " / ".join(
                    f"{a:.1f}, {b:.1f}" for a, b in zip(per_run[50], per_run[99], strict=True)
                ),
                (
                    f"p50 ≤ {TARGET_P50_MS:g} ms: {_met(p50 <= TARGET_P50_MS)}; "
                    f"p99 ≤ {TARGET_P99_MS:g} ms: {_met(p99 <= TARGET_P99_MS)}"
                )
                if target
                else "–",
            ]
        )
    return markdown_table(
        ["Latency", "p50", "p90", "p99", "max", "runs (p50, p99 ms)", "target"], rows
    )


def baseline_section(rev: str, runs: list[LatencyRun], base_runs: list[LatencyRun]) -> str:
    """The same latency with notifier as it was at `rev`, and this tree ÷ baseline."""
    pairs = list(zip(runs, base_runs, strict=True))

    def ratio(p: float, mail: bool) -> float:
        def of(r: LatencyRun) -> float:
            return percentile(r.mail_ms if mail else r.http_ms, p)

        return median([of(ours) / of(base) for ours, base in pairs])

    return (
        f"#### The same, one instance on SQLite, notifier as it was at {rev} (the baseline, "
        "measured in the same command, runs interleaved)\n\n"
        + latency_table(base_runs)
        + "\n\nThis tree ÷ baseline (median of the per-run ratios; above 1 is slower): "
        f"mail p50 {ratio(50, True):.2f}×, mail p99 {ratio(99, True):.2f}×, "
        f"HTTP p50 {ratio(50, False):.2f}×."
    )


@dataclass(frozen=True)
class StormCase:
    route: dict[str, float | int]
    seconds: float
    runs: int

    @property
    def label(self) -> str:
        return f"{route_text(self.route)}; storm over {self.seconds:g} s"


def storm_table(rows_in: list[tuple[StormCase, list[StormRun], int]]) -> str:
    rows = []
    for case, runs, total in rows_in:
        mails = median([r.mails for r in runs])
        drain = median([r.drain_s for r in runs])
        accounted = [r.alarms_in_subjects for r in runs]
        rows.append(
            [
                case.label,
                f"{mails:g}",
                " / ".join(f"{a:,} of {total:,}" for a in accounted),
                _s(median([r.first_mail_s for r in runs])),
                _s(drain),
                " / ".join(f"{r.mails} mails, {_s(r.drain_s)}" for r in runs),
                " / ".join(f"{r.send_s:.1f} s" for r in runs),
                str(sum(r.refusals for r in runs)),
                f"≤ {TARGET_STORM_MAILS} mails: {_met(mails <= TARGET_STORM_MAILS)}; "
                f"drain ≤ {TARGET_DRAIN_S:g} s: {_met(drain <= TARGET_DRAIN_S)}",
            ]
        )
    return markdown_table(
        [
            "Storm config",
            "mails (median)",
            "alarms in subjects (each run)",
            "first mail after (median)",
            "drain (median)",
            "runs",
            "alarms sent in",
            "HTTP refusals",
            "target",
        ],
        rows,
    )


def reuse_table(runs: list[ReuseRun], count: int) -> str:
    batch = median([r.batch_per_s for r in runs])
    single = median([r.single_per_s for r in runs])
    ratios = [r.batch_per_s / r.single_per_s for r in runs]
    rows = [
        [
            f"{count} mails, one `send(batch)`",
            f"{batch:.0f} mails/s",
            " / ".join(f"{r.batch_per_s:.0f}" for r in runs),
            " / ".join(str(r.batch_connections) for r in runs),
        ],
        [
            f"{count} mails, `send([m])` each",
            f"{single:.0f} mails/s",
            " / ".join(f"{r.single_per_s:.0f}" for r in runs),
            " / ".join(str(r.single_connections) for r in runs),
        ],
        [
            "one connection / new connection each",
            fmt_ratio(batch, single),
            " / ".join(f"{x:.2f}×" for x in ratios),
            "–",
        ],
    ]
    return markdown_table(["SMTP sending", "median", "runs", "connections (server)"], rows)


# --- main ---------------------------------------------------------------------------------------


async def bench(opts: Options) -> tuple[list[str], dict[str, str]]:
    sections: list[str] = []
    facts: dict[str, str] = {}
    sink = Sink()
    await sink.start()
    try:
        for section in ("latency", "cluster"):
            if section not in opts.only:
                continue
            with contextlib.ExitStack() as stack:
                server = stack.enter_context(postgresql()) if section == "cluster" else None
                baseline = section == "latency" and opts.baseline != "none"
                rev = (opts.baseline or baseline_rev()) if baseline else ""
                base_env = stack.enter_context(code_at(rev)) if baseline else {}
                runs: list[LatencyRun] = []
                base_runs: list[LatencyRun] = []
                order: list[tuple[list[LatencyRun], dict[str, str]]] = [(runs, {})]
                if baseline:
                    order.append((base_runs, base_env))
                for n in range(opts.runs):
                    # Interleaved, each first in turn: a busy spell of the machine hits both.
                    for into, env in order if n % 2 == 0 else order[::-1]:
                        what = f"{section} (baseline {rev})" if env else section
                        _progress(f"{what} run {n + 1}/{opts.runs}: {opts.latency_samples} alarms")
                        run, uvloop = await latency_run(
                            sink, opts.latency_samples, opts.latency_warmup, server, env
                        )
                        _progress(
                            f"  mail p50 {percentile(run.mail_ms, 50):.1f} ms, "
                            f"p99 {percentile(run.mail_ms, 99):.1f} ms; "
                            f"HTTP p50 {percentile(run.http_ms, 50):.1f} ms"
                        )
                        into.append(run)
            facts["uvloop in notifier"] = {True: "yes", False: "no", None: "unknown"}[uvloop]
            where = (
                "two instances on PostgreSQL (fsync on, loopback), alarm i sent to instance "
                "i mod 2; the route's owner mails"
                if section == "cluster"
                else "one instance on SQLite"
            )
            sections.append(
                f"### Alarm to mail, one at a time, {where} ({opts.latency_samples:,} alarms "
                f"per run after {opts.latency_warmup} warm-up, {opts.runs} runs, medians of the "
                f"per-run percentiles; route {route_text(LATENCY_ROUTE)})\n\n" + latency_table(runs)
            )
            if base_runs:
                sections.append(baseline_section(rev, runs, base_runs))
        if "storm" in opts.only:
            storm_rows: list[tuple[StormCase, list[StormRun], int]] = []
            cases = [StormCase(opts.storm_route, opts.storm_seconds, opts.runs)]
            if opts.default_runs > 0:
                # The same storm, then one that outlasts group_wait_s (10 s): what comes after
                # the first digest waits out group_interval_s (300 s).
                cases += [
                    StormCase(DEFAULT_ROUTE, opts.storm_seconds, opts.default_runs),
                    StormCase(DEFAULT_ROUTE, opts.storm_seconds * 1.5, opts.default_runs),
                ]
            for case in cases:
                results: list[StormRun] = []
                for n in range(case.runs):
                    _progress(
                        f"storm run {n + 1}/{case.runs}: {opts.storm_alarms:,} alarms, {case.label}"
                    )
                    result = await storm_run(
                        sink, case.route, opts.storm_alarms, case.seconds, opts.storm_senders
                    )
                    _progress(f"  {result}")
                    results.append(result)
                storm_rows.append((case, results, opts.storm_alarms))
            sections.append(
                f"### Storm: {opts.storm_alarms:,} alarms, evenly spread "
                f"({opts.storm_senders} paced HTTP senders, one JSON alarm per request, distinct "
                "codes over 50 devices; drain = last alarm answered → last mail accepted)\n\n"
                + storm_table(storm_rows)
            )
        if "reuse" in opts.only:
            reuse: list[ReuseRun] = []
            for n in range(opts.runs):
                _progress(f"reuse run {n + 1}/{opts.runs}: {opts.reuse_mails} mails each way")
                reused = await reuse_run(sink, opts.reuse_mails, batch_first=n % 2 == 0)
                _progress(f"  {reused}")
                reuse.append(reused)
            sections.append(
                f"### SMTP connection reuse (SmtpSender, tls none, {opts.runs} runs, order "
                "alternated)\n\n" + reuse_table(reuse, opts.reuse_mails)
            )
    finally:
        await sink.stop()
    return sections, facts


def parse_args(argv: Sequence[str] | None = None) -> Options | int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small counts, one run: a smoke check")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="comma-separated sections to run: latency,cluster,storm,reuse (default: all)",
    )
    p.add_argument("--runs", type=int, default=None, help="runs of each measurement (default 3)")
    p.add_argument(
        "--default-runs",
        type=int,
        default=None,
        help="storm runs with the default route config, for each of two storms (default 1; "
        "the longer storm takes ~5.5 min, as its last alarms wait out group_interval_s 300; "
        "0 in --quick)",
    )
    p.add_argument(
        "--senders",
        type=int,
        default=8,
        help="concurrent HTTP connections sending the storm (default 8)",
    )
    p.add_argument(
        "--baseline",
        default="",
        metavar="REV",
        help="latency: also run notifier as it was at git revision REV, interleaved, and give "
        "the ratios (default: the parent of the first commit touching notifier/spool/pg; "
        "none: skip)",
    )
    p.add_argument("--smtp-sink", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.smtp_sink is not None:
        run_sink(a.smtp_sink)
        return 0
    only = tuple(s.strip() for s in a.only.split(",") if s.strip())
    unknown = set(only) - set(SECTIONS)
    if unknown:
        p.error(
            f"--only: unknown section(s) {', '.join(sorted(unknown))}; use {','.join(SECTIONS)}"
        )
    runs = a.runs or (1 if a.quick else 3)
    if runs < 1:
        p.error("--runs must be at least 1")
    quick = bool(a.quick)
    return Options(
        only=only,
        runs=runs,
        latency_samples=100 if quick else 1000,
        latency_warmup=10 if quick else 20,
        storm_alarms=1000 if quick else 10_000,
        storm_seconds=2.0 if quick else 10.0,
        storm_senders=max(a.senders, 1),
        storm_route=(
            {**STORM_ROUTE, "group_wait_s": 1.0, "group_interval_s": 1.0} if quick else STORM_ROUTE
        ),
        default_runs=a.default_runs if a.default_runs is not None else (0 if quick else 1),
        reuse_mails=100 if quick else 500,
        quick=quick,
        baseline=a.baseline,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if isinstance(opts, int):
        return opts
    command = " ".join([".venv/bin/python bench/e2e.py", *map(shlex.quote, sys.argv[1:])])
    load_at_start = os.getloadavg()[0]
    if load_at_start > 0.5:
        _progress(
            f"warning: load average {load_at_start:.2f} before the bench: other processes use "
            "the CPU and the numbers will be worse; run it on a quiet machine"
        )
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    sections, facts = asyncio.run(bench(opts))
    facts["SMTP server"] = (
        "aiosmtpd in a separate process (its own GIL), no TLS, no AUTH, loopback; the DATA "
        "handler timestamps each mail (CLOCK_MONOTONIC, shared by all processes)"
    )
    facts["notifier"] = (
        "`notifier run` from this checkout, data_dir on disk (alarms durable: SQLite, fsync; "
        "cluster: PostgreSQL 15 started by the bench, fsync on), log level info (JSON to a "
        "file), one account (SMTP, tls none) and one route"
    )
    facts["HTTP client"] = (
        "this process (asyncio" + (", uvloop" if "uvloop" in sys.modules else "") + "), raw "
        "keep-alive HTTP/1.1 POSTs of one JSON alarm each"
    )
    facts["Load average (1 min) before / after the bench"] = (
        f"{load_at_start:.2f} / {os.getloadavg()[0]:.2f} (2 cores: above ~0.5 other work competed)"
    )
    machine_rows = [[k, v] for k, v in {**machine(), **facts}.items()]
    print(
        "\n\n".join(
            [
                f"## End-to-end mail ({dt.date.today().isoformat()})",
                f"Command: `{command}`",
                *sections,
                markdown_table(["Machine and set-up", ""], machine_rows),
            ]
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
