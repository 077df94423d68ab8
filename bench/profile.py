"""Where a running notifier spends its time per ingested line: a py-spy profile under load.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile.py [--only tcp,udp,http,mail] [--seconds 8] [--rate 40000]
        [--baseline REV]

Starts `notifier run` from this checkout with the bench config (`bench/common.py`), loads it
with the same sender as `bench/ingest.py` (TCP: 4 connections, 300 lines a write, as fast as
they go; UDP: paced at `--rate`), and samples it with `py-spy record --format raw` meanwhile.
Prints, per load, the functions with the largest share of self time (the innermost frame of
each sample) and the lines/s accepted while sampling, as Markdown.

`http` profiles durable single-alarm HTTP ingest (`bench/ingest.py`'s durable trial: one
JSON alarm per POST over 16 keep-alive connections, SQLite), by function and by package.

`mail` profiles the path of `bench/e2e.py`'s latency instead: one JSON alarm at a time over
HTTP, each waited for until the SMTP sink accepted its mail (group_wait_s 0), with notifier
from this checkout and, interleaved, as it was at `--baseline REV` (default: the commit before
the PostgreSQL work); the table gives CPU ms per alarm by function for both, biggest
difference first: where a slower single box spends the extra time.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Mapping

from bench.common import (
    LOOPBACK,
    HttpConnection,
    NotifierProcess,
    baseline_rev,
    code_at,
    markdown_table,
    scratch_dir,
)
from bench.e2e import LATENCY_ROUTE, RECORDS_PATH, Sink, alarm, start_notifier, stop_notifier
from bench.ingest import QUIET_ROUTE, Sender, keys_unknown_at, post_alarms
from tests.service import NotifierProcess as DefaultNotifier

SAMPLE_HZ = 200


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


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` for `seconds` into `out` (raw collapsed stacks)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args = ["record", "--format", "raw", "-r", str(SAMPLE_HZ), "-d", str(int(seconds))]
    return subprocess.Popen(
        [exe, *args, "--nonblocking", "-o", str(out), "--pid", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def mail_samples(seconds: float, env: Mapping[str, str]) -> tuple[Counter[str], int]:
    """Self-time samples of a notifier mailing one alarm at a time for `seconds`, and how many
    alarms it mailed meanwhile."""
    sink = Sink()
    await sink.start()
    try:
        with scratch_dir("notifier-profile-mail-") as workdir:
            proc = await start_notifier(workdir, sink, LATENCY_ROUTE, env)
            conn = HttpConnection(LOOPBACK, proc.http_port)
            try:
                for i in range(20):  # warm-up: the first mail opens the SMTP connection
                    await mail_one(conn, sink, i)
                out = workdir / "profile.txt"
                spy = py_spy(proc.pid, seconds, out)
                await asyncio.sleep(0.5)  # py-spy attached
                mailed = 0
                while spy.poll() is None:
                    await mail_one(conn, sink, 1000 + mailed)
                    mailed += 1
                await asyncio.to_thread(spy.wait, 60)
                samples = self_time(out.read_text()) if out.exists() else Counter()
            finally:
                await conn.close()
                await stop_notifier(proc)
    finally:
        await sink.stop()
    return samples, mailed


async def mail_one(conn: HttpConnection, sink: Sink, code: int) -> None:
    status, _, content = await conn.post_json(RECORDS_PATH, alarm(code))
    if status != 200:
        raise RuntimeError(f"alarm {code}: HTTP {status}: {content[:300]!r}")
    (record_id,) = json.loads(content)["ids"]
    await sink.mail_for(record_id, timeout_s=30)


def profile_mail(seconds: float, top: int, baseline: str) -> str:
    """CPU ms per mailed alarm by function, this tree against `baseline`."""
    rev = baseline or baseline_rev()
    with contextlib.ExitStack() as stack:
        base_env = stack.enter_context(code_at(rev))
        ours, ours_n = asyncio.run(mail_samples(seconds, {}))
        theirs, theirs_n = asyncio.run(mail_samples(seconds, base_env))

    def ms(samples: Counter[str], n: int, name: str | None = None) -> float:
        count = samples[name] if name else sum(samples.values())
        return 1000 * count / SAMPLE_HZ / max(n, 1)

    names = set(ours) | set(theirs)
    worst = sorted(names, key=lambda f: ms(theirs, theirs_n, f) - ms(ours, ours_n, f))[:top]
    rows = [[f, f"{ms(ours, ours_n, f):.2f}", f"{ms(theirs, theirs_n, f):.2f}"] for f in worst]
    rows.append(["(all)", f"{ms(ours, ours_n):.2f}", f"{ms(theirs, theirs_n):.2f}"])
    return (
        f"MAIL: one alarm at a time to its mail; {ours_n} alarms mailed by this tree, "
        f"{theirs_n} by {rev} in {seconds:g} s each\n\n"
        + markdown_table(["function (self time)", "CPU ms per alarm: this tree", rev], rows)
    )


def by_package(raw: str) -> Counter[str]:
    """py-spy's raw stacks → samples by the package of the innermost frame (``starlette``,
    ``uvicorn``, ``notifier.ingest``, ``asyncio``, ...): which layer the time goes to."""
    found: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        path = stack.rsplit(";", 1)[-1].partition(" (")[2].split(":", 1)[0]
        parts = Path(path).parts
        if "notifier" in parts:
            i = parts.index("notifier")
            package = ".".join(parts[i : i + 2]).removesuffix(".py")
        elif "site-packages" in parts:
            package = parts[parts.index("site-packages") + 1].removesuffix(".py")
        elif len(parts) >= 2:  # the standard library: its module or package
            package = f"stdlib {parts[-2] if parts[-2] != 'python3.11' else parts[-1]}"
        else:  # a frame without a file (py-spy's idle or native frames)
            package = path or stack.rsplit(";", 1)[-1]
        found[package] += int(count)
    return found


def profile_http(seconds: float, top: int) -> str:
    """One durable JSON alarm per POST over 16 keep-alive connections (bench/ingest.py's
    durable trial), SQLite spool: self time by function and by package."""
    with scratch_dir("notifier-profile-http-") as workdir:
        proc = DefaultNotifier(workdir / "n", QUIET_ROUTE)
        proc.start()
        try:
            out = workdir / "profile.txt"
            spy = py_spy(proc.pid, seconds, out)
            time.sleep(0.5)  # py-spy attached
            ok, refused = asyncio.run(post_alarms([proc.http_port], 16, seconds - 1))
            spy.wait(60)
            raw = out.read_text() if out.exists() else ""
        finally:
            proc.stop()
    samples, packages = self_time(raw), by_package(raw)
    total = sum(samples.values()) or 1
    rows = [[name, f"{100 * count / total:.1f} %"] for name, count in samples.most_common(top)]
    layers = [[name, f"{100 * count / total:.1f} %"] for name, count in packages.most_common()]
    return (
        f"HTTP: {ok / (seconds - 1):.0f} durable alarms/s answered 200 while sampled "
        f"({refused} refused), {total} samples\n\n"
        + markdown_table(["function (self time)", "share"], rows)
        + "\n\n"
        + markdown_table(["package (self time)", "share"], layers)
    )


def profile(kind: str, seconds: float, rate: float, top: int, baseline: str = "") -> str:
    """TCP or UDP ingest, of this tree or (`baseline`) of notifier as it was at that revision."""
    sender = Sender()
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir("notifier-profile-"))
        n = NotifierProcess(workdir)
        if baseline:
            n = NotifierProcess(
                workdir,
                env=stack.enter_context(code_at(baseline)),
                omit_keys=keys_unknown_at(baseline),
            )
        stack.enter_context(n)
        receiver = "syslog-tcp" if kind == "tcp" else "syslog-udp"
        before = n.accepted(receiver)
        out = workdir / "profile.txt"
        spy = py_spy(n.pid, seconds, out)
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
        f"{kind.upper()}{f' at {baseline}' if baseline else ''}: "
        f"{taken / elapsed / 1000:.1f}k lines/s accepted while sampled, "
        f"{total} samples\n\n" + markdown_table(["function (self time)", "share"], rows)
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--only", default="tcp,udp")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rate", type=float, default=40_000, help="UDP datagrams/s sent")
    p.add_argument("--top", type=int, default=12)
    p.add_argument(
        "--baseline",
        default="",
        metavar="REV",
        help="mail: the revision to compare with (default: the commit before the PostgreSQL "
        "work); tcp, udp: profile notifier as it was at REV instead of this tree",
    )
    opts = p.parse_args()
    for kind in opts.only.split(","):
        if kind == "mail":
            print(profile_mail(opts.seconds, opts.top, opts.baseline) + "\n")
        elif kind == "http":
            print(profile_http(opts.seconds, opts.top) + "\n")
        else:
            print(profile(kind, opts.seconds, opts.rate, opts.top, opts.baseline) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
