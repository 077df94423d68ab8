"""Fixtures of the forwarding tests: a real rsyslogd."""

import pytest

from tests.rsyslog import run_rsyslog

rsyslog = pytest.fixture(name="rsyslog")(run_rsyslog)
