"""Connection limits from the config file reach every receiver of a real notifier process."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from tests.service import NotifierProcess, metric, wait_for

PER_PEER = {"max_connections_per_peer": 2}
RECEIVERS = ("http", "syslog-tcp", "tcp")


def test_max_connections_per_peer_from_the_config_holds_on_every_receiver(tmp_path: Path) -> None:
    overrides = {"http": PER_PEER, "syslog": PER_PEER, "tcp": PER_PEER}
    with NotifierProcess(tmp_path, overrides=overrides) as proc:
        held: list[socket.socket] = []
        try:
            for port in (proc.http_port, proc.syslog_port, proc.tcp_port):
                for _ in range(3):
                    sock = socket.socket()
                    held.append(sock)
                    sock.bind(("127.0.0.2", 0))
                    sock.connect(("127.0.0.1", port))

            def refused(receiver: str) -> float:
                return metric(
                    proc,
                    "notifier_ingest_rejected_total",
                    receiver=receiver,
                    reason="too_many_connections_per_peer",
                )

            wait_for(
                lambda: [refused(r) for r in RECEIVERS] == [1.0, 1.0, 1.0],
                what="the third connection refused on each receiver",
            )
            device = httpx.get(f"{proc.url}/log", params={"from": "gw", "msg": "device"})
            assert device.status_code == 200
        finally:
            for sock in held:
                sock.close()
