"""Would HTTP worker processes reach 5,000 durable alarms/s here? A feasibility measurement.

    .venv/bin/python bench/workers.py [--workers 1,2] [--runs 3] [--seconds 4]

Not product code: a prototype of the design issue #12 names ("worker processes that share the
parent's listening sockets and hand batches to the spool's owner"), built from notifier's own
parts, to measure before building it. The parent binds the port and owns a `SqliteSpool`
(synchronous=FULL, as `notifier run`); each worker is a fresh interpreter given the listening
socket and one end of a socketpair. A worker serves notifier's ingest app with its direct path
(`HttpServer`, `build_ingest_app`), and its spool is a stand-in that sends each put's records,
encoded as the spool stores them (`schema.encode`), to the parent and waits for the parent's
answer, which comes after the durable commit. What the prototype leaves out (the other routes,
metrics from the workers, restarts, limits shared between workers) would only add cost.

Against it, in the same command and interleaved run by run: `notifier run` on the bench config
(one process). The load is `bench/ingest.py`'s "JSON alarm, 1 per request" case: wrk -t1, 16
keep-alive connections.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import marshal
import os
import signal
import socket
import struct
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bench.common import (
    LOOPBACK,
    NotifierProcess,
    cpu_probe_ms,
    machine,
    markdown_table,
    median,
    scratch_dir,
)
from bench.cpu import _case, cpu_seconds
from bench.ingest import http_wrk

_LENGTH = struct.Struct("!I")


def _frame(obj: Any) -> bytes:
    data = marshal.dumps(obj)
    return _LENGTH.pack(len(data)) + data


async def _frames(reader: asyncio.StreamReader) -> AsyncIterator[Any]:
    """The frames until the other end closes."""
    while True:
        try:
            (n,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
            data = await reader.readexactly(n)
        except asyncio.IncompleteReadError:
            return
        yield marshal.loads(data)


class _ParentSpool:
    """The worker's spool: each put goes to the parent, which answers after its commit."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._next = 0

    async def answers(self) -> None:
        async for put_id, error in _frames(self._reader):
            future = self._waiting.pop(put_id)
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(RuntimeError(error))

    async def put(self, records: Sequence[Any]) -> None:
        from notifier.spool import schema

        put_id, self._next = self._next, self._next + 1
        future = asyncio.get_running_loop().create_future()
        self._waiting[put_id] = future
        self._writer.write(_frame((put_id, [schema.encode(r) for r in records])))
        await future


async def _worker(listen_fd: int, channel_fd: int) -> None:
    from notifier.ingest.http import build_ingest_app
    from notifier.ingest.httpserver import HttpServer
    from notifier.metrics import Metrics

    listening = socket.socket(fileno=listen_fd)
    listening.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=channel_fd))
    spool = _ParentSpool(reader, writer)
    answers = asyncio.create_task(spool.answers())
    metrics = Metrics()
    app = build_ingest_app(spool=spool, metrics=metrics)  # type: ignore[arg-type]
    server = HttpServer(
        app, LOOPBACK, 0, metrics=metrics, max_connections=10_000, max_connections_per_peer=10_000
    )
    server._bind = lambda: listening  # type: ignore[method-assign]  # the parent's socket
    await server.start()
    await answers  # ends when the parent goes


async def _parent(port_file: str, workers: int) -> None:
    from notifier.spool import SqliteSpool, schema

    spool = SqliteSpool(Path(tempfile.mkdtemp(prefix="workers-spool-")) / "spool.db", [])
    await spool.start()
    listening = socket.create_server((LOOPBACK, 0), backlog=1024)
    children = []

    async def serve(channel: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=channel)

        async def store(put_id: int, rows: list[tuple[str, bytes]]) -> None:
            try:
                await spool.put([schema.decode(data, raw) for data, raw in rows])
            except Exception as e:
                writer.write(_frame((put_id, str(e))))
            else:
                writer.write(_frame((put_id, None)))

        tasks = set()
        async for put_id, rows in _frames(reader):
            task = asyncio.create_task(store(put_id, rows))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    serving = []
    for _ in range(workers):
        ours, theirs = socket.socketpair()
        fds = (listening.fileno(), theirs.fileno())
        children.append(
            subprocess.Popen(
                [sys.executable, __file__, "--worker", *map(str, fds)],
                pass_fds=fds,
            )
        )
        theirs.close()
        serving.append(asyncio.create_task(serve(ours)))
    Path(port_file).write_text(str(listening.getsockname()[1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for child in children:
        child.terminate()
        child.wait()
    await spool.close()


def _pids(pid: int) -> list[int]:
    """`pid` and its children."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def _cpu(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


@contextlib.contextmanager
def prototype(workdir: Path, workers: int) -> Any:
    """The prototype with `workers` workers; yields (its URL, its parent's pid)."""
    port_file = workdir / f"port-{workers}"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--parent", str(port_file), str(workers)],
    )
    try:
        for _ in range(200):
            if port_file.exists() and port_file.read_text():
                break
            if proc.poll() is not None:
                raise RuntimeError("the prototype's parent exited")
            asyncio.run(asyncio.sleep(0.05))
        url = f"http://{LOOPBACK}:{port_file.read_text()}"
        asyncio.run(asyncio.sleep(1.5))  # the workers import and listen
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--workers", default="1,2", help="worker counts to measure")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    p.add_argument("--parent", nargs=2, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.worker or opts.parent:
        import uvloop

        from notifier.log import configure

        configure("warning", "json")
        uvloop.install()
        if opts.worker:
            asyncio.run(_worker(*opts.worker))
        else:
            asyncio.run(_parent(opts.parent[0], int(opts.parent[1])))
        return 0
    counts = [int(n) for n in opts.workers.split(",")]
    case = _case("JSON alarm, 1 per request")
    rates: dict[str, list[float]] = {}
    costs: dict[str, list[float]] = {}  # µs of CPU per request, all the set-up's processes
    load = os.getloadavg()[0]
    probe = cpu_probe_ms()
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir("notifier-workers-"))
        single = stack.enter_context(NotifierProcess(workdir / "n"))
        set_ups = {"notifier run (one process)": (single.url, single.pid)}
        for n in counts:
            set_ups[f"prototype, {n} worker(s) + the spool's owner"] = stack.enter_context(
                prototype(workdir, n)
            )
        for run in range(opts.runs):
            for name, (url, pid) in set_ups.items():
                pids = _pids(pid)
                before = _cpu(pids)
                result = http_wrk(url, case, 16, opts.seconds, workdir)
                used = _cpu(pids) - before
                rates.setdefault(name, []).append(result.requests_per_s)
                costs.setdefault(name, []).append(
                    used / (result.requests_per_s * opts.seconds) * 1e6
                )
                print(
                    f"run {run + 1} {name}: {result.requests_per_s:.0f}/s, "
                    f"{costs[name][-1]:.0f} µs CPU/request, {result.failures} failed",
                    file=sys.stderr,
                )
    base = median(rates["notifier run (one process)"])
    rows = [
        [
            name,
            f"{median(values):.0f}/s",
            f"{median(values) / base:.2f}×",
            f"{median(costs[name]):.0f} µs",
            " / ".join(f"{v:.0f}" for v in values),
        ]
        for name, values in rates.items()
    ]
    command = f"bench/workers.py --workers {opts.workers} --runs {opts.runs}"
    print(f"Command: `.venv/bin/python {command}`")
    print(f"Load average (1 min) before: {load:.2f}")
    after = cpu_probe_ms()
    print(f"CPU probe before / after (lower is a faster box): {probe:.0f} / {after:.0f} ms\n")
    headers = ["set-up", "median", "÷ one process", "CPU per request (all processes)", "runs"]
    print(markdown_table(headers, rows))
    print()
    print(markdown_table(["machine", ""], list(machine().items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
