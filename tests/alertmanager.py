"""A real Prometheus Alertmanager (the Debian package) for the tests, on loopback, with its own
config, storage and no clustering; alerts go in through its v2 API."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

BINARY = "prometheus-alertmanager"
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_alertmanager_yaml() -> str:
    """The alertmanager.yml the README gives under "Alertmanager and Grafana webhooks"."""
    text = README.read_text()
    section = text[text.index("\n### Alertmanager and Grafana webhooks\n") :]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert blocks, "no yaml block in the README's webhook section"
    return str(blocks[0])


def binary(name: str = BINARY) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/install-test-deps.sh")
    return path


def rfc3339(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


class Alertmanager:
    """`prometheus-alertmanager` with `config` (YAML text) in `workdir`; stopped on exit."""

    def __init__(self, workdir: Path, config: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "alertmanager.yml"
        self.log_path = workdir / "alertmanager.log"
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Alertmanager:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary(),
                    f"--config.file={self.config_path}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",  # no gossip: one instance, nothing on the LAN
                    "--log.level=debug",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"alertmanager did not become ready:\n{self.logs()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Alerts as Prometheus sends them: `POST /api/v2/alerts`."""
        response = httpx.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=10)
        assert response.status_code == 200, response.text
