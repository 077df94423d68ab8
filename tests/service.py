"""A real notifier process for end-to-end tests: started, killed and restarted by the tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something true, and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def render_toml(config: dict[str, Any]) -> str:
    """Just enough TOML for test configs: top-level keys, tables, arrays of tables."""
    lines: list[str] = []
    for key, value in config.items():
        if not isinstance(value, dict | list) or (
            isinstance(value, list) and not all(isinstance(x, dict) for x in value)
        ):
            lines.append(f"{key} = {toml_value(value)}")
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for item in value:
                lines.append(f"\n[[{key}]]")
                subtables = {k: v for k, v in item.items() if isinstance(v, dict) and k != "match"}
                lines += [f"{k} = {toml_value(v)}" for k, v in item.items() if k not in subtables]
                for sub, table in subtables.items():
                    lines.append(f"\n[{key}.{sub}]")
                    lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


@dataclass
class NotifierProcess:
    """`notifier run` in a subprocess with its own data dir and free loopback ports."""

    workdir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # NOTIFIER_* and the like, for the run
    http_port: int = 0
    syslog_port: int = 0
    tcp_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.http_port = self.http_port or free_port()
        self.syslog_port = self.syslog_port or free_port()
        self.tcp_port = self.tcp_port or free_port()
        self.data_dir = self.workdir / "var"
        self.config_path = self.workdir / "notifier.toml"
        self.log_path = self.workdir / "notifier.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def outbox(self) -> Path:
        return self.data_dir / "outbox"

    def config(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "log": {"level": "info", "format": "json"},
            "http": {"listen": f"127.0.0.1:{self.http_port}"},
            "syslog": {
                "udp": f"127.0.0.1:{self.syslog_port}",
                "tcp": f"127.0.0.1:{self.syslog_port}",
            },
            "tcp": {"listen": f"127.0.0.1:{self.tcp_port}"},
        }
        for key, value in self.overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return base

    def config_text(self) -> str:
        return render_toml(self.config())

    @property
    def pid(self) -> int:
        assert self.proc is not None, "notifier is not running"
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait for /healthz; raises RuntimeError with the process log when it fails."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "notifier", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"notifier exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"notifier did not become healthy in {timeout}s:\n{self.logs()}")

    def __enter__(self) -> NotifierProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye — what a crash or power cut looks like to the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.logs().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def problems(self) -> Counter[str]:
        """The warnings and errors logged, by event (the driver's own lines by logger: their
        text names a connection object); "traceback" counts those with one."""
        lines: Counter[str] = Counter()
        for event in self.log_events():
            if event.get("level") in ("warning", "error", "critical"):
                lines[str(event.get("logger") or event.get("event"))] += 1
            if "exception" in event or "exc_info" in event:
                lines["traceback"] += 1
        return lines

    def wait_tcp(self, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(port)


def metric(proc: NotifierProcess, name: str, **labels: str) -> float:
    """The sum of the samples of `name` in /metrics that have `labels` (0 when absent)."""
    text = httpx.get(f"{proc.url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
