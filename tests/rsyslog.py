"""A real rsyslogd on loopback for forwarding tests: UDP, TCP and TLS inputs, one output file.

Each received message becomes one line of `messages.log`:
``input|facility|severity|hostname|app-name|structured-data|rawmsg`` (control characters in
the message escaped by rsyslog as ``#012`` and the like).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import TestPKI
from tests.conftest import free_port
from tests.service import wait_for

TEMPLATE = (
    "%inputname%|%syslogfacility%|%syslogseverity%|%hostname%|%app-name%|"
    "%structured-data%|%rawmsg%\\n"
)


@dataclass
class Received:
    input: str
    facility: int
    severity: int
    hostname: str
    app: str
    structured_data: str
    raw: str


@dataclass
class Rsyslog:
    workdir: Path
    pki: TestPKI
    udp_port: int = 0
    tcp_port: int = 0
    tls_port: int = 0
    mtls_port: int = 0  # TLS that requires a client certificate signed by the test CA
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.udp_port = self.udp_port or free_port()
        self.tcp_port = self.tcp_port or free_port()
        self.tls_port = self.tls_port or free_port()
        self.mtls_port = self.mtls_port or free_port()
        self.output = self.workdir / "messages.log"

    def config(self) -> str:
        return f"""
global(workDirectory="{self.workdir}"
       defaultNetstreamDriverCAFile="{self.pki.ca_file}"
       defaultNetstreamDriverCertFile="{self.pki.server_cert}"
       defaultNetstreamDriverKeyFile="{self.pki.server_key}"
       maxMessageSize="64k")
module(load="imudp")
module(load="imtcp" maxSessions="100")
template(name="fields" type="string" string="{TEMPLATE}")
ruleset(name="out") {{
  action(type="omfile" file="{self.output}" template="fields" flushOnTXEnd="on"
         asyncWriting="off")
}}
input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="out" name="udp")
input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="out" name="tcp")
input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="out" name="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{self.mtls_port}" ruleset="out" name="mtls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
"""

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "rsyslog.conf"
        conf.write_text(self.config())
        log = (self.workdir / "rsyslogd.out").open("ab")
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(conf), "-i", str(self.workdir / "rsyslogd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.logs()}")
            try:
                for port in (self.tcp_port, self.tls_port, self.mtls_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, timeout=20, what="rsyslogd listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def logs(self) -> str:
        path = self.workdir / "rsyslogd.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def received(self) -> list[Received]:
        if not self.output.exists():
            return []
        out = []
        for line in self.output.read_text(errors="replace").splitlines():
            parts = line.split("|", 6)
            if len(parts) == 7:
                inp, fac, sev, host, app, sd, raw = parts
                out.append(Received(inp, int(fac), int(sev), host, app, sd, raw))
        return out

    def wait_received(self, count: int, timeout: float = 20.0) -> list[Received]:
        wait_for(lambda: len(self.received()) >= count, timeout, f"{count} messages in rsyslog")
        time.sleep(0.2)  # anything more than expected would show up now
        return self.received()


def run_rsyslog(tmp_path: Path, pki: TestPKI) -> Iterator[Rsyslog]:
    """The body of the `rsyslog` fixture: a started server, stopped afterwards."""
    if not rsyslog_available():
        pytest.fail(
            "rsyslogd with the gtls driver is missing: run scripts/install-test-deps.sh "
            "(Debian packages rsyslog, rsyslog-gnutls)"
        )
    server = Rsyslog(tmp_path / "rsyslog", pki)
    server.start()
    yield server
    server.stop()


def rsyslog_available() -> bool:
    modules = [Path(p) for p in ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/rsyslog")]
    has_gtls = any((d / "lmnsd_gtls.so").exists() for d in modules)
    return shutil.which("rsyslogd") is not None and has_gtls
