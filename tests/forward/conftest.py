"""Fixtures of the forwarding tests: a real rsyslogd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import TestPKI
from tests.rsyslog import Rsyslog, rsyslog_available


@pytest.fixture
def rsyslog(tmp_path: Path, pki: TestPKI) -> Iterator[Rsyslog]:
    if not rsyslog_available():
        pytest.fail(
            "rsyslogd with the gtls driver is missing: run scripts/install-test-deps.sh "
            "(Debian packages rsyslog, rsyslog-gnutls)"
        )
    server = Rsyslog(tmp_path / "rsyslog", pki)
    server.start()
    yield server
    server.stop()
