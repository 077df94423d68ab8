"""Shared helpers for the benchmarks: the processes under test, the machine, and the numbers.

- `NotifierProcess`: `notifier run` in a subprocess on free loopback ports with a bench config
  (log lines kept in memory with ``drop_oldest``, one route that mails nothing).
- `Rsyslog`: rsyslogd in the foreground with its own config (imudp + imtcp on loopback, omfile),
  counting what it received by counting the lines it wrote.
- `machine()`, `cpu_probe_ms()`, `uvloop_loaded()`, `median()`, `fmt_rate()`, `fmt_ratio()`,
  `markdown_table()`.

The bench may import notifier; the notifier package never imports the bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from notifier.ingest.udp import udp_rcvbuf_errors
from tests.pg import PgServer, start_server
from tests.service import NotifierProcess as TestNotifierProcess

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
# Memory-backed scratch space for files whose disk writes are not what is measured.
TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both TCP and UDP on `host` right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2:
                s2.bind((host, port))
        except OSError:
            continue
        return port


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll `check` until it is true (True) or `timeout_s` passed (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def wait_stable(
    read: Callable[[], float],
    *,
    quiet_s: float = 0.5,
    timeout_s: float = 10.0,
    interval_s: float = 0.1,
    target: float | None = None,
) -> float:
    """The value of `read()` once it stops changing for `quiet_s` (or reaches `target`)."""
    deadline = time.monotonic() + timeout_s
    last = read()
    since = time.monotonic()
    while time.monotonic() < deadline:
        if target is not None and last >= target:
            return last
        time.sleep(interval_s)
        value = read()
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def kernel_udp_drops() -> int:
    """Host-wide UDP datagrams the kernel dropped for a full receive buffer so far."""
    return udp_rcvbuf_errors() or 0


# --- notifier -------------------------------------------------------------------------------

# Log lines go to the memory spool: big, and dropping the oldest instead of refusing, so the
# spool never limits ingest. The one route matches a device that never sends: nothing is mailed.
BENCH_CONFIG = """\
data_dir = "{data_dir}"

[log]
level = "warning"
format = "json"

[http]
listen = "127.0.0.1:{http_port}"
max_connections = 10000
max_connections_per_peer = 10000  # every bench connection comes from 127.0.0.1

[syslog]
udp = "127.0.0.1:{syslog_port}"
tcp = "127.0.0.1:{syslog_port}"
udp_rcvbuf_bytes = {rcvbuf}

[tcp]
listen = "127.0.0.1:{tcp_port}"

[spool]
memory_queue_entries = {queue}
persistent_queue_entries = {queue}
overflow = "drop_oldest"
{extra}
[[accounts]]
name = "bench"

[[routes]]
name = "bench-nothing"
account = "bench"
to = ["nobody@example.invalid"]
match = {{ devices = ["no-such-device-bench"] }}
"""


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition."""
    return [
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def metric_sum(samples: Sequence[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@dataclass
class NotifierProcess(TestNotifierProcess):
    """`notifier run` with the bench config (tests/service.py starts, waits and stops it).

    `extra_toml` is pasted into the config after the [spool] table (top-level tables only);
    `env` adds NOTIFIER_* overrides. Use as a context manager, or `start()` / `stop()`.
    """

    rcvbuf_bytes: int = 4 << 20
    queue_entries: int = 1_000_000
    extra_toml: str = ""
    omit_keys: tuple[str, ...] = ()  # config keys left out (a baseline that did not know them)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._http = httpx.Client(timeout=10)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def config_text(self) -> str:
        text = BENCH_CONFIG.format(
            data_dir=self.workdir / "var",
            http_port=self.http_port,
            syslog_port=self.syslog_port,
            tcp_port=self.tcp_port,
            rcvbuf=self.rcvbuf_bytes,
            queue=self.queue_entries,
            extra=self.extra_toml,
        )
        return "".join(
            line
            for line in text.splitlines(keepends=True)
            if not line.startswith(tuple(f"{key} " for key in self.omit_keys))
        )

    def samples(self) -> list[Sample]:
        response = self._http.get(f"{self.url}/metrics")
        response.raise_for_status()
        return parse_metrics(response.text)

    def counter(self, name: str, **labels: str) -> float:
        """A counter summed over the labels not given, e.g. accepted for one receiver."""
        return metric_sum(self.samples(), name, **labels)

    def accepted(self, receiver: str) -> float:
        return self.counter("notifier_ingest_accepted_total", receiver=receiver)

    def rejected(self, receiver: str) -> float:
        return self.counter("notifier_ingest_rejected_total", receiver=receiver)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`."""
        try:
            return super().stop(timeout)
        finally:
            self._http.close()


class HttpConnection:
    """One keep-alive HTTP/1.1 connection doing JSON POSTs: little client-side CPU, so the
    times measured are the server's (httpx costs ~10x more per request)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, payload: Any) -> tuple[int, dict[str, str], bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        body = json.dumps(payload).encode()
        self._writer.write(
            (
                f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise RuntimeError(f"answer without Content-Length: {status_line}")
        content = await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, content

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


# --- PostgreSQL, and notifier as it was at an earlier commit -----------------------------------


@contextlib.contextmanager
def postgresql() -> Iterator[PgServer]:
    """A throwaway PostgreSQL on loopback (tests/pg.py: initdb + pg_ctl in a scratch directory),
    fsync on as a production server runs it; stopped and removed afterwards."""
    run = start_server(durable=True)
    server = next(run)
    try:
        yield server
    finally:
        run.close()


_databases = itertools.count(1)


def new_database(server: PgServer) -> str:
    """The DSN of a new, empty database on `server`: each trial starts from an empty spool."""
    name = f"bench_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.dsn(name)


def on_postgresql(dsn: str) -> dict[str, str]:
    """The environment that puts a notifier's spool on the database `dsn`."""
    return {"NOTIFIER_SPOOL__BACKEND": "postgresql", "NOTIFIER_SPOOL__DSN": dsn}


def baseline_rev() -> str:
    """The last commit before the PostgreSQL work: the parent of the first commit that touched
    notifier/spool/pg (abbreviated)."""
    firsts = git("log", "--format=%H", "--", "notifier/spool/pg").split()
    if not firsts:
        raise RuntimeError("no commit touches notifier/spool/pg: give --baseline REV")
    return git("rev-parse", "--short", f"{firsts[-1]}^").strip()


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@contextlib.contextmanager
def code_at(rev: str) -> Iterator[dict[str, str]]:
    """The environment in which `python -m notifier` runs the `notifier` package as it was at
    git revision `rev`: exported with `git archive` (no worktree, nothing in .git changes) into
    a scratch directory that goes first on PYTHONPATH, ahead of this checkout's editable
    install. Its dependencies are this venv's."""
    with scratch_dir("bench-baseline-") as path:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "notifier"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(path)], input=archive, check=True)
        yield {"PYTHONPATH": str(path)}


def uvloop_loaded(pid: int) -> bool | None:
    """Whether process `pid` has uvloop's extension loaded (None when that cannot be read)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    return "uvloop" in maps


# --- rsyslog --------------------------------------------------------------------------------

RSYSLOG_CONFIG = """\
global(workDirectory="{workdir}" maxMessageSize="64k")
module(load="imudp")
module(load="imtcp" maxSessions="1000")
# Large enough that the queue never throttles the inputs during a bench run.
main_queue(queue.type="FixedArray" queue.size="2000000" queue.dequeueBatchSize="1024")
input(type="imudp" address="127.0.0.1" port="{udp_port}" rcvbufSize="{rcvbuf}")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
action(type="omfile" file="{out}" template="RSYSLOG_TraditionalFileFormat")
"""


def rsyslogd_path() -> str | None:
    """rsyslogd's path when it is installed (it often lives in /usr/sbin, off a user's PATH)."""
    return shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")


@dataclass
class Rsyslog:
    """rsyslogd -n with its own config: imudp and imtcp on loopback, every message to one file.

    `lines()` counts the lines written so far; `reset()` empties the file between trials (omfile
    appends, so writing continues at the new end).
    """

    workdir: Path
    rcvbuf_bytes: int = 4 << 20
    udp_port: int = 0
    tcp_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _offset: int = 0
    _count: int = 0

    def __post_init__(self) -> None:
        self.udp_port = self.udp_port or free_port()
        self.tcp_port = self.tcp_port or free_port()
        self.out = self.workdir / "rsyslog-out.log"
        self.config_path = self.workdir / "rsyslog.conf"
        self.log_path = self.workdir / "rsyslog.stderr"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "rsyslogd is not running"
        return self.proc.pid

    def config_text(self) -> str:
        """The rsyslog.conf `start()` writes; a subclass may listen and write differently, as
        long as imtcp listens on `tcp_port` (`start()` waits for it) and output goes to `out`."""
        return RSYSLOG_CONFIG.format(
            workdir=self.workdir,
            udp_port=self.udp_port,
            tcp_port=self.tcp_port,
            rcvbuf=self.rcvbuf_bytes,
            out=self.out,
        )

    @staticmethod
    def version() -> str:
        path = rsyslogd_path()
        if path is None:
            return ""
        out = subprocess.run([path, "-v"], capture_output=True, text=True, check=False).stdout
        first = out.splitlines()[0] if out else ""
        return " ".join(first.replace("compiled with:", "").split()) or "rsyslogd (version ?)"

    def start(self, timeout_s: float = 15.0) -> None:
        path = rsyslogd_path()
        if path is None:
            raise RuntimeError("rsyslogd is not installed (apt-get install rsyslog)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        check = subprocess.run(
            [path, "-N1", "-f", str(self.config_path)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"rsyslog rejected {self.config_path}:\n{check.stderr[-2000:]}")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [path, "-n", "-f", str(self.config_path), "-i", str(self.workdir / "pid")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with status {self.proc.returncode}")
            with contextlib.suppress(OSError):
                socket.create_connection((LOOPBACK, self.tcp_port), timeout=1).close()
                return True
            return False

        if not wait_until(ready, timeout_s):
            self.stop()
            raise RuntimeError(f"rsyslogd did not listen on {self.tcp_port} in {timeout_s:g} s")

    def lines(self) -> int:
        """Lines written to the output file since the last `reset()`."""
        try:
            with self.out.open("rb") as f:
                f.seek(self._offset)
                while chunk := f.read(1 << 22):
                    self._count += chunk.count(b"\n")
                    self._offset += len(chunk)
        except FileNotFoundError:
            pass
        return self._count

    def reset(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self.out, 0)
        self._offset = self._count = 0

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(FileNotFoundError):
            self.out.unlink()

    def __enter__(self) -> Rsyslog:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- the machine and the numbers --------------------------------------------------------------


def _first_line_with(path: str, prefix: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return "unknown"


def machine() -> dict[str, str]:
    """What the numbers were measured on: CPUs, model, memory, kernel, OS, Python."""
    mem_kib = _first_line_with("/proc/meminfo", "MemTotal").split()[0]
    os_name = "unknown"
    with contextlib.suppress(OSError):
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU model": _first_line_with("/proc/cpuinfo", "model name"),
        "Memory": f"{int(mem_kib) / 1024 / 1024:.1f} GiB" if mem_kib.isdigit() else "unknown",
        "Kernel": platform.release(),
        "OS": os_name,
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "net.core.rmem_max": _read_sysctl("net/core/rmem_max"),
    }


def cpu_probe_ms() -> float:
    """How long a fixed pure-Python loop takes now, in ms (the median of 5).

    These machines are virtual and shared: how much CPU the box gets changes within minutes
    (the same work has taken twice as long a few minutes later). A bench prints it before and
    after its runs, so an absolute rate can be read against the state the box was in."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        times.append((time.perf_counter() - started) * 1e3)
    return float(statistics.median(times))


def _read_sysctl(name: str) -> str:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return "unknown"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def fmt_rate(value: float, unit: str = "/s") -> str:
    """1234567 -> "1.23M/s", 45678 -> "45.7k/s"."""
    if value != value:  # NaN: not measured
        return "–"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M{unit}"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k{unit}"
    return f"{value:.0f}{unit}"


def fmt_ratio(ours: float, theirs: float) -> str:
    """ours/theirs as "0.52×", or "–" when either side is missing."""
    if ours != ours or theirs != theirs or theirs <= 0:
        return "–"
    return f"{ours / theirs:.2f}×"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def scratch_dir(prefix: str, *, tmpfs: bool = False) -> Iterator[Path]:
    """A temporary directory (on the disk, or in memory with `tmpfs`), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=TMPFS if tmpfs else None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
