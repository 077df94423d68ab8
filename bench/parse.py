"""Parse cost per line: µs for one syslog / raw TCP line of a few shapes, median of runs.

    .venv/bin/python bench/parse.py [--runs 7] [--lines 20000] [--baseline REV]

Then the same syslog shapes parsed by `parse_syslog` as it is at git revision `--baseline`
(default `main`, loaded from `git show`), interleaved run by run with this tree's, and per
shape the median of the runs' ratios this tree / baseline: a parser change must keep the
common lines (the first three shapes) within 5 % of the baseline (exit status 1 otherwise;
`--baseline none` skips this part). On a busy box use many short runs (`--runs 41 --lines
2000`): each ratio compares two halves of one run, so the machine's mood cancels out.

What one line costs the single event-loop thread before it reaches the spool: the parser
(`parse_syslog`, `parse_line`) and the parts it is made of (`decode_text`, `Record(...)`,
`new_record_id`). Each case parses `--lines` distinct-enough lines `--runs` times; the table
gives the median and the fastest run in CPU µs per line. The load average is printed with it:
anything else running on the box makes every number higher.

Numbers on the 2-core bench box, CPU µs per line, median (best) of 9 runs, run back to back
with the old tree from `git archive` (load average 0.7-0.8; other engineers' jobs were running,
the Record(...) row, the same code in both, shows how comparable the two runs were):

    case                                    before 0949966    after
    parse_syslog: rfc3164 bench line        20.5 (15.8)       4.2 (3.8)
    parse_syslog: rfc3164 short, no pid     19.2 (14.3)       3.4 (3.2)
    parse_syslog: innovaphone, no timestamp  8.3 (7.4)        4.5 (4.2)
    parse_syslog: cisco seq + unsynced      20.8 (15.6)      13.0 (10.0)
    parse_syslog: rfc5424 with SD           19.7 (16.7)      14.2 (13.1)
    parse_syslog: non-UTF-8 byte in text    21.7 (15.9)       5.7 (5.3)
    parse_line (tcp): bench line            18.7 (15.4)       4.6 (4.1)
    parse_line (tcp): plain text, no PRI     7.0 (6.2)        3.2 (2.7)
    part: decode_text                        1.5 (1.3)        0.6 (0.6)
    part: Record(...) with 10 fields         5.1 (4.2)        4.3 (3.7)
    part: new_record(...) with 10 fields     (Record(...))    1.5 (1.4)
    part: new_record_id                      1.2 (1.0)        0.8 (0.7)

What made the difference: a single-regex fast path for the usual RFC 3164 shape, the year /
midnight arithmetic cached (`_Dates`), `decode_text` not counting control characters in
printable text, and `new_record` (Record's fields stored without `object.__setattr__`).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/parse.py` puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import datetime as dt
import os
import statistics
import subprocess
import time
import types
from collections.abc import Callable, Sequence

from notifier.ingest.parse.line import parse_line
from notifier.ingest.parse.syslog import decode_text, parse_syslog
from notifier.records import Kind, Record, new_record, new_record_id

NOW = time.time()
SENDER = "192.0.2.7:5140"
REPO = Path(__file__).resolve().parents[1]
PARSER_PATH = "notifier/ingest/parse/syslog.py"
COMMON_SHAPES = 3  # the first shapes of `shapes()`: the lines devices send most
MAX_RATIO = 1.05


def _stamp(t: float) -> str:
    """RFC 3164 time as devices write it: day space-padded ("Mar  1")."""
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return f"{d:%b} {d.day:2d} {d:%H:%M:%S}"


def bench_lines(n: int) -> list[bytes]:
    """The 200-byte line bench/ingest.py sends, with a few stamps and hosts."""
    out = []
    for i in range(n):
        head = (
            f"<{134 + 8 * (i % 8)}>{_stamp(NOW - i % 60)} gw{i % 16:02d} SIP[{1000 + i % 97}]: "
            f"seq={i:06d} REGISTER sip:user{i % 50}@pbx.example.com from 192.0.2.{i % 250} "
        ).encode()
        out.append((head + b"x" * 200)[:200])
    return out


def shapes(n: int) -> dict[str, list[bytes]]:
    lines = bench_lines(n)
    return {
        "rfc3164 bench line (200 B)": lines,
        "rfc3164 short, no pid": [
            f"<13>{_stamp(NOW - i % 60)} host{i % 9} kernel: link up eth{i % 4}".encode()
            for i in range(n)
        ],
        "innovaphone, no timestamp": [
            f"<134>LOG_HTTP 3 TCP-Up 172.16.10.{i % 250}:7793 172.16.0.17:471".encode()
            for i in range(n)
        ],
        "cisco seq + unsynced clock": [
            f"<189>{i}: *Mar 10 11:46:{i % 60:02d}.123: %SYS-5-CONFIG_I: Configured".encode()
            for i in range(n)
        ],
        "rfc5424 with SD": [
            f'<165>1 2026-03-10T12:00:01.123456+02:00 host.example.com app {i} ID47 [x@1 a="{i}"]'
            f" event {i}".encode()
            for i in range(n)
        ],
        "non-UTF-8 byte in text": [line[:-1] + b"\xfc" for line in lines],
    }


Case = tuple[str, Callable[[bytes], object], list[bytes]]


def cases(n: int) -> list[Case]:
    found: list[Case] = []
    for name, lines in shapes(n).items():
        found.append(
            (
                f"parse_syslog: {name}",
                lambda d: parse_syslog(d, received_at=NOW, sender=SENDER, receiver="syslog-udp"),
                lines,
            )
        )
    lines = bench_lines(n)
    found.append(
        (
            "parse_line (tcp): bench line",
            lambda d: parse_line(d, received_at=NOW, sender=SENDER, receiver="tcp"),
            lines,
        )
    )
    found.append(
        (
            "parse_line (tcp): plain text, no PRI",
            lambda d: parse_line(d, received_at=NOW, sender=SENDER, receiver="tcp"),
            [line.split(b": ", 1)[1] for line in lines],
        )
    )
    found.append(("part: decode_text", decode_text, lines))
    found.append(
        (
            "part: Record(...) with 10 fields",
            lambda d: Record(
                kind=Kind.LOG,
                received_at=NOW,
                sender=SENDER,
                receiver="syslog-udp",
                raw=d,
                text="x",
                device="gw01",
                source="SIP",
                facility=16,
                severity_raw="6",
            ),
            lines,
        )
    )
    found.append(
        (
            "part: new_record(...) with 10 fields",
            lambda d: new_record(
                Kind.LOG,
                NOW,
                SENDER,
                "syslog-udp",
                d,
                text="x",
                device="gw01",
                source="SIP",
                facility=16,
                severity_raw="6",
            ),
            lines,
        )
    )
    found.append(("part: new_record_id", lambda _d: new_record_id(), lines))
    return found


def time_case(fn: Callable[[bytes], object], lines: Sequence[bytes], runs: int) -> list[float]:
    """CPU µs per line of each run.

    CPU time of this thread, not wall time: on a shared box the time other processes hold
    the CPU is not counted (their cache and memory traffic still is).
    """
    out = []
    for _ in range(runs):
        start = time.thread_time()
        for d in lines:
            fn(d)
        out.append((time.thread_time() - start) / len(lines) * 1e6)
    return out


ParseSyslog = Callable[..., object]


def parser_at(rev: str) -> ParseSyslog:
    """`parse_syslog` from `PARSER_PATH` as it is at git revision `rev` (the rest of notifier,
    which it imports, from this tree); raises RuntimeError when git cannot show it."""
    shown = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:{PARSER_PATH}"], capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise RuntimeError(f"git show {rev}:{PARSER_PATH}: {shown.stderr.strip()}")
    module = types.ModuleType(f"syslog_at_{rev}")
    exec(compile(shown.stdout, f"{rev}:{PARSER_PATH}", "exec"), module.__dict__)
    parse: ParseSyslog = module.parse_syslog
    return parse


def compare_with_baseline(rev: str, lines_per_run: int, runs: int) -> list[tuple[str, float]]:
    """Median µs per line of each syslog shape, baseline and this tree interleaved run by run
    (a busy spell of the machine hits both; many short runs give a steadier median than a few
    long ones); prints the table, returns (shape, median of the per-run ratios)."""
    baseline = parser_at(rev)
    parsers: list[ParseSyslog] = [baseline, parse_syslog]
    found = shapes(lines_per_run)
    times: dict[tuple[str, int], list[float]] = {}
    for run in range(runs):
        for name, lines in found.items():
            # Each goes first in every other run: neither pays the warm-up of the shape alone.
            for which in (0, 1) if run % 2 == 0 else (1, 0):
                parse = parsers[which]

                def fn(d: bytes, parse: ParseSyslog = parse) -> object:
                    return parse(d, received_at=NOW, sender=SENDER, receiver="syslog-udp")

                for d in lines[:200]:
                    fn(d)
                times.setdefault((name, which), []).extend(time_case(fn, lines, 1))
    print(f"\nparse_syslog at {rev} (baseline) vs this tree, {runs} interleaved runs")
    print(
        f"{'shape (median µs, best µs in brackets)':<40} {'baseline':>15} {'this tree':>15}"
        f" {'ratio':>6} {'best':>6}"
    )
    ratios = []
    for i, name in enumerate(found):
        before, after = times[(name, 0)], times[(name, 1)]
        # The median of each run's ratio: the two halves of a run share the machine's mood.
        ratio = statistics.median(a / b for a, b in zip(after, before, strict=True))
        ratios.append((name, ratio))
        mark = "  (common)" if i < COMMON_SHAPES else ""
        print(
            f"{name:<40} {_runs(before):>15} {_runs(after):>15} {ratio:>6.3f}"
            f" {min(after) / min(before):>6.3f}{mark}"
        )
    return ratios


def _runs(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} ({min(times):.2f})"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=7, help="timed runs per case (default 7)")
    p.add_argument("--lines", type=int, default=20000, help="lines per run (default 20000)")
    p.add_argument(
        "--baseline",
        default="main",
        help="git revision whose parse_syslog to compare with (default main; 'none': skip)",
    )
    a = p.parse_args(argv)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'case':<48} {'median µs':>10} {'best µs':>9}")
    found = cases(a.lines)
    for _, fn, lines in found:
        for d in lines[:200]:  # warm caches (regexes, the time cache) as a server would be
            fn(d)
    # Round-robin: a busy spell of the machine hits every case, not one.
    times: list[list[float]] = [[] for _ in found]
    for _ in range(a.runs):
        for i, (_, fn, lines) in enumerate(found):
            times[i] += time_case(fn, lines, 1)
    for (name, _, _), runs in zip(found, times, strict=True):
        print(f"{name:<48} {statistics.median(runs):>10.2f} {min(runs):>9.2f}")
    status = 0
    if a.baseline != "none":
        ratios = compare_with_baseline(a.baseline, a.lines, a.runs)
        common = [ratio for _, ratio in ratios[:COMMON_SHAPES]]
        worst = max(common)
        verdict = "within" if worst <= MAX_RATIO else "NOT within"
        print(f"common lines: worst ratio {worst:.3f}, {verdict} {MAX_RATIO:.2f} of {a.baseline}")
        status = 0 if worst <= MAX_RATIO else 1
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return status


if __name__ == "__main__":
    sys.exit(main())
