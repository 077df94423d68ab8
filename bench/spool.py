"""Spool benchmark: durable puts per second, the raw SQLite ceiling, RSS at 1M, restart time.

    .venv/bin/python bench/spool.py [--dir DIR] [--seconds 2] [--runs 3] [--spooled 1000000]

Works in a temporary directory (default: under the system temp dir; pass --dir to measure
another disk) and writes nothing else. Prints one table; throughput rows are medians of --runs.
The RSS and restart cases run in a fresh interpreter each, so earlier cases do not inflate them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from notifier.log import configure
from notifier.records import Kind, Record, new_record_id
from notifier.spool import SqliteSpool

_TEXT = "Registration of gw01 at pbx.example.com failed: no response (RELAY/RECH)"
_RAW = b"<131>1 2026-01-01T00:00:00Z gw01 RELAY - - - " + _TEXT.encode()


def record(n: int = 0) -> Record:
    return Record(
        kind=Kind.ALARM,
        received_at=time.time(),
        sender="192.0.2.7:5060",
        receiver="syslog-tcp",
        raw=_RAW,
        text=_TEXT,
        device="gw01",
        code="NO_LINK",
        source="RELAY",
    )


# -- durable puts through the spool ---------------------------------------------------------


async def _puts(path: Path, producers: int, seconds: float, synchronous: str) -> dict[str, float]:
    spool = SqliteSpool(path, ["mail"], max_entries=10**9, max_disk_bytes=1 << 40,
                        synchronous=synchronous)  # fmt: skip
    await spool.start()
    count = 0
    stop = time.perf_counter() + seconds

    async def producer() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await spool.put([record()])
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    elapsed = time.perf_counter() - start
    stats = spool.stats()
    await spool.close()
    return {
        "puts_per_s": count / elapsed,
        "records_per_commit": stats.records_committed / max(stats.fsyncs, 1),
    }


def _arun(coro: Any) -> Any:
    """Run on the loop the service runs on: uvloop when installed (notifier.app installs it)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def bench_puts(tmp: Path, producers: int, seconds: float, synchronous: str) -> dict[str, float]:
    path = tmp / f"puts-{synchronous}-{producers}-{time.monotonic_ns()}.sqlite3"
    try:
        return dict(_arun(_puts(path, producers, seconds, synchronous)))
    finally:
        _remove(path)


# -- the raw SQLite ceiling on the same disk -------------------------------------------------


def bench_raw(tmp: Path, rows_per_commit: int, seconds: float) -> dict[str, float]:
    path = tmp / f"raw-{rows_per_commit}-{time.monotonic_ns()}.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, data TEXT, raw BLOB)")
    data = json.dumps(record().to_dict())
    count = 0
    start = time.perf_counter()
    stop = start + seconds
    while time.perf_counter() < stop:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?)",
            [(new_record_id(), data, _RAW) for _ in range(rows_per_commit)],
        )
        conn.execute("COMMIT")
        count += rows_per_commit
    elapsed = time.perf_counter() - start
    conn.close()
    _remove(path)
    return {"puts_per_s": count / elapsed, "records_per_commit": float(rows_per_commit)}


# -- RSS with many records spooled, and restart time (each in a fresh interpreter) ---------


def _rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def _fill(path: Path, n: int, batch: int = 5000) -> None:
    spool = SqliteSpool(path, ["mail"], max_entries=10**9, max_disk_bytes=1 << 40)
    await spool.start()
    for start in range(0, n, batch):
        await spool.put([record() for _ in range(min(batch, n - start))])
    await spool.close()


async def _rss_case(path: Path, n: int) -> dict[str, float]:
    base = _rss_kib()
    spool = SqliteSpool(path, ["mail"], max_entries=10**9, max_disk_bytes=1 << 40)
    await spool.start()
    t0 = time.perf_counter()
    for start in range(0, n, 5000):
        await spool.put([record() for _ in range(min(5000, n - start))])
    fill_s = time.perf_counter() - t0
    # Serve from the full spool, as the service would: lease, history, stats.
    await spool.lease("mail", 100, 30)
    spool.history(100)
    stats = await spool.refresh_stats()
    rss = _rss_kib()
    await spool.close()
    return {
        "rss_mib": rss / 1024,
        "rss_peak_mib": _rss_kib("VmHWM") / 1024,
        "rss_before_mib": base / 1024,
        "fill_records_per_s": n / fill_s,
        "pending": float(stats.persistent_entries),
        "file_mib": stats.disk_bytes / 2**20,
    }


async def _restart_case(path: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    spool = SqliteSpool(path, ["mail"], max_entries=10**9, max_disk_bytes=1 << 40)
    await spool.start()
    leases = await spool.lease("mail", 100, 30)
    serving = time.perf_counter() - t0
    pending = spool.stats().persistent_entries
    await spool.close()
    return {"start_to_first_lease_s": serving, "pending": float(pending), "leased": len(leases)}


def _child(args: argparse.Namespace) -> None:
    configure("warning")
    path = Path(args.path)
    if args.child == "rss":
        out = _arun(_rss_case(path, args.spooled))
    elif args.child == "fill":
        _arun(_fill(path, args.spooled))
        out = {}
    else:
        out = _arun(_restart_case(path))
    print(json.dumps(out))


def _run_child(case: str, path: Path, spooled: int = 0) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        case,
        "--path",
        str(path),
        "--spooled",
        str(spooled),
    ]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the table ------------------------------------------------------------------------------


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _median(fn: Callable[[], dict[str, float]], runs: int) -> tuple[dict[str, float], list[float]]:
    results = [fn() for _ in range(runs)]
    rates = [r["puts_per_s"] for r in results]
    middle = sorted(results, key=lambda r: r["puts_per_s"])[len(results) // 2]
    return middle, rates


def _machine(tmp: Path) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    fs = subprocess.run(["df", "-hT", str(tmp)], capture_output=True, text=True).stdout
    fs_line = fs.strip().splitlines()[-1] if fs.strip() else "?"
    return (
        f"cpu: {cpu}, {os.cpu_count()} cores; python {platform.python_version()}, "
        f"sqlite {sqlite3.sqlite_version}, loop {_loop_name()}\nfs: {fs_line}"
    )


def _loop_name() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    return f"uvloop {uvloop.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to put the test files (the disk)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput run")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs (median shown)")
    parser.add_argument("--spooled", type=int, default=1_000_000, help="records for RSS case")
    parser.add_argument("--pending", type=int, default=100_000, help="records for restart case")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    configure("warning")
    with tempfile.TemporaryDirectory(prefix="spool-bench-", dir=args.dir) as d:
        tmp = Path(d)
        print(_machine(tmp))
        print(f"throughput: {args.seconds:g} s per run, median of {args.runs}\n")
        print(f"{'case':<44} {'puts/s':>10} {'rec/commit':>11}  runs")
        rows: list[tuple[str, Callable[[], dict[str, float]]]] = [
            ("raw sqlite, 1 row per fsynced commit", lambda: bench_raw(tmp, 1, args.seconds)),
            ("raw sqlite, 100 rows per fsynced commit", lambda: bench_raw(tmp, 100, args.seconds)),
        ]
        for sync in ("FULL", "NORMAL"):
            for producers in (1, 10, 100):
                rows.append(
                    (
                        f"spool put, {producers:>3} producers, synchronous={sync}",
                        lambda p=producers, s=sync: bench_puts(tmp, p, args.seconds, s),
                    )
                )
        for name, fn in rows:
            middle, rates = _median(fn, args.runs)
            runs = " ".join(f"{r:.0f}" for r in rates)
            print(
                f"{name:<44} {middle['puts_per_s']:>10.0f} "
                f"{middle['records_per_commit']:>11.1f}  {runs}",
                flush=True,
            )

        rss_path = tmp / "rss.sqlite3"
        rss: dict[str, Any] = _run_child("rss", rss_path, args.spooled)
        _remove(rss_path)
        print(
            f"\nRSS with {rss['pending']:.0f} records spooled: {rss['rss_mib']:.0f} MiB "
            f"(peak {rss['rss_peak_mib']:.0f} MiB; {rss['rss_before_mib']:.0f} MiB before opening; "
            f"file {rss['file_mib']:.0f} MiB; filled at {rss['fill_records_per_s']:.0f} "
            "records/s in batches of 5000)"
        )

        restart_path = tmp / "restart.sqlite3"
        _run_child("fill", restart_path, args.pending)
        times = [_run_child("restart", restart_path) for _ in range(args.runs)]
        _remove(restart_path)
        secs = [t["start_to_first_lease_s"] for t in times]
        print(
            f"start to first lease with {times[0]['pending']:.0f} pending: "
            f"{statistics.median(secs):.3f} s median ({' '.join(f'{s:.3f}' for s in secs)})"
        )


if __name__ == "__main__":
    main()
