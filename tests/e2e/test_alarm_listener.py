"""The alarm listener: a device's alarm forward server has its own port, and a log flood on the
log port costs it nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port
from tests.service import NotifierProcess, metric, wait_for

# One sender process, as fast as it can, for `seconds`: far more than one event-loop thread
# parses, so the log socket's receive buffer overflows and the kernel drops datagrams.
_FLOOD = """
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
line = b"<134>Mar 10 11:59:58 gw01 SIP[1000]: " + b"x" * 160
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(200):
        try:
            s.sendto(line, ("127.0.0.1", port))
            sent += 1
        except OSError:
            pass
print(sent)
"""


def alarm(code: int) -> bytes:
    return (
        f'<131>Mar 10 11:59:58 gw01 ALARM: <alarm type="alarm" severity="Major" '
        f'code="0x{code:08x}" host="gw01" source="RELAY/RECH" text="Registration down"/>'
    ).encode()


def test_no_alarm_on_the_alarm_listener_is_lost_during_a_udp_log_flood(tmp_path: Path) -> None:
    alarm_port = free_port()
    proc = NotifierProcess(
        tmp_path,
        overrides={
            # The smallest buffer the config allows: the flood must overflow the log socket.
            "syslog": {"alarm_udp": f"127.0.0.1:{alarm_port}", "udp_rcvbuf_bytes": 65536},
            "spool": {"memory_queue_entries": 1_000_000},
        },
    )
    alarms = 100
    with proc:
        flood = subprocess.Popen(
            [sys.executable, "-c", _FLOOD, str(proc.syslog_port), "4"],
            stdout=subprocess.PIPE,
        )
        try:
            time.sleep(0.5)  # the flood is on
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for code in range(alarms):
                    sender.sendto(alarm(code), ("127.0.0.1", alarm_port))
                    time.sleep(0.02)
        finally:
            sent = int(flood.communicate(timeout=30)[0])
        taken = wait_for(
            lambda: (
                metric(
                    proc,
                    "notifier_ingest_accepted_total",
                    receiver="syslog-alarm-udp",
                    kind="alarm",
                )
                >= alarms
            ),
            timeout=30,
            what="every alarm in the spool",
        )
        assert taken
        logs = wait_for(
            lambda: metric(proc, "notifier_ingest_received_total", receiver="syslog-udp"),
            what="log lines received",
        )
        assert metric(proc, "notifier_ingest_accepted_total", receiver="syslog-alarm-udp") == alarms
        # It was a flood: the log listener could not take everything it was sent.
        assert logs < sent, f"the flood of {sent} datagrams was all taken: not a flood"


def test_an_alarm_on_the_alarm_tcp_listener_is_an_alarm_record(tmp_path: Path) -> None:
    alarm_port = free_port()
    proc = NotifierProcess(tmp_path, overrides={"syslog": {"alarm_tcp": f"127.0.0.1:{alarm_port}"}})
    with proc, socket.create_connection(("127.0.0.1", alarm_port)) as conn:
        conn.sendall(alarm(7) + b"\n")
        wait_for(
            lambda: (
                metric(
                    proc,
                    "notifier_ingest_accepted_total",
                    receiver="syslog-alarm-tcp",
                    kind="alarm",
                )
                == 1
            ),
            what="the alarm in the spool",
        )
