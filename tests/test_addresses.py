"""Addresses are written one way everywhere: ``host:port``, ``[v6]:port``."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from notifier.config import host_port, parse_listen


def test_host_port_brackets_ipv6_only() -> None:
    assert host_port("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert host_port("::1", 5514) == "[::1]:5514"
    assert host_port("smtp.example.com", 587) == "smtp.example.com:587"
    assert str(parse_listen("[::1]:5514")) == "[::1]:5514"


def test_a_busy_ipv6_port_is_named_with_brackets(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as busy:
        busy.bind(("::1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "notifier", "run"],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                "PATH": "/usr/bin:/bin",
                "NOTIFIER_DATA_DIR": str(tmp_path / "var"),
                "NOTIFIER_HTTP__LISTEN": f"[::1]:{port}",
                "NOTIFIER_SYSLOG__UDP": "",
                "NOTIFIER_SYSLOG__TCP": "",
                "NOTIFIER_TCP__LISTEN": "",
                "NOTIFIER_LOG__FORMAT": "console",
            },
        )
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"cannot listen on [::1]:{port}" in out.stdout + out.stderr
