"""A real rsyslogd on loopback for forwarding tests: UDP, TCP and TLS inputs, one output file.

The bench's `Rsyslog` (bench/common.py) with its own config: the same process handling, plus
two TLS inputs (gtls; one requires a client certificate of the test CA) and a template that
writes each received message as one line
``input|facility|severity|hostname|app-name|structured-data|rawmsg`` (control characters in the
message escaped by rsyslog as ``#012`` and the like).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.common import Rsyslog, rsyslogd_path
from tests.certs import TestPKI
from tests.conftest import free_port
from tests.service import wait_for

TEMPLATE = (
    "%inputname%|%syslogfacility%|%syslogseverity%|%hostname%|%app-name%|"
    "%structured-data%|%rawmsg%\\n"
)

CONFIG = """
global(workDirectory="{workdir}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imudp")
module(load="imtcp" maxSessions="100")
template(name="fields" type="string" string="{template}")
ruleset(name="out") {{
  action(type="omfile" file="{out}" template="fields" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="out" name="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="out" name="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="out" name="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{mtls}" ruleset="out" name="mtls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
"""


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
class ForwardRsyslog(Rsyslog):
    pki: TestPKI | None = None
    tls_port: int = 0
    mtls_port: int = 0  # TLS that requires a client certificate signed by the test CA

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tls_port = self.tls_port or free_port()
        self.mtls_port = self.mtls_port or free_port()

    def config_text(self) -> str:
        assert self.pki is not None
        return CONFIG.format(
            workdir=self.workdir,
            ca=self.pki.ca_file,
            cert=self.pki.server_cert,
            key=self.pki.server_key,
            template=TEMPLATE,
            out=self.out,
            udp=self.udp_port,
            tcp=self.tcp_port,
            tls=self.tls_port,
            mtls=self.mtls_port,
        )

    def received(self) -> list[Received]:
        if not self.out.exists():
            return []
        got = []
        for line in self.out.read_text(errors="replace").splitlines():
            parts = line.split("|", 6)
            if len(parts) == 7:
                inp, fac, sev, host, app, sd, raw = parts
                got.append(Received(inp, int(fac), int(sev), host, app, sd, raw))
        return got

    def wait_received(self, count: int, timeout: float = 20.0) -> list[Received]:
        wait_for(lambda: len(self.received()) >= count, timeout, f"{count} messages in rsyslog")
        time.sleep(0.2)  # anything more than expected would show up now
        return self.received()


def run_rsyslog(tmp_path: Path, pki: TestPKI) -> Iterator[ForwardRsyslog]:
    """The body of the `rsyslog` fixture: a started server, stopped afterwards."""
    if not rsyslog_available():
        pytest.fail(
            "rsyslogd with the gtls driver is missing: run scripts/install-test-deps.sh "
            "(Debian packages rsyslog, rsyslog-gnutls)"
        )
    server = ForwardRsyslog(tmp_path / "rsyslog", pki=pki)
    server.start()
    yield server
    server.stop()


def rsyslog_available() -> bool:
    # The gtls driver (package rsyslog-gnutls), where install-test-deps.sh looks for it.
    gtls = any(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"))
    return rsyslogd_path() is not None and gtls
