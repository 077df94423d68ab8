"""A full disk under data_dir (a 4 MiB file system the test mounts there) must not stop the
alarm path: what was accepted is mailed, new alarms wait (503 + Retry-After) and are accepted
again as soon as there is room, without a restart."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.e2e.test_alarm_mail import post_alarm, route
from tests.e2e.test_delivery_failures import FAST_RETRY, _codes, account_on
from tests.e2e.test_overflow import metric
from tests.service import NotifierProcess, wait_for
from tests.smallfs import fill, small_filesystem
from tests.smtpserver import SmtpTestServer


def notifier_on_small_disk(tmp_path: Path, smtp_port: int) -> NotifierProcess:
    return NotifierProcess(
        tmp_path,
        {
            "accounts": [account_on(smtp_port)],
            "routes": [route(max_records_per_mail=1000)],
            "spool": FAST_RETRY,
        },
    )


def accepted_after_space_returns(proc: NotifierProcess, code: str) -> bool:
    return post_alarm(proc, code=code).status_code == 200


def assert_refused_for_disk(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert "disk full under data_dir" in response.text
    assert "/" not in response.json()["detail"], "the server's paths are not the sender's business"


def test_alarms_accepted_before_the_disk_filled_are_mailed_and_new_ones_wait_for_space(
    tmp_path: Path,
) -> None:
    smtp_port = free_port()
    proc = notifier_on_small_disk(tmp_path, smtp_port)
    with small_filesystem(proc.data_dir):
        proc.start()
        try:
            # The mail server is down: 15 alarms wait in the spool, then the disk fills up.
            codes = {f"0x000200{n:02d}" for n in range(15)}
            for code in sorted(codes):
                assert post_alarm(proc, code=code).status_code == 200
            filler = fill(proc.data_dir)
            assert_refused_for_disk(post_alarm(proc, code="0x0002ff00"))

            with SmtpTestServer(port=smtp_port) as smtp:
                wait_for(
                    lambda: codes <= _codes(smtp),
                    timeout=30,
                    what="the 15 accepted alarms mailed while the disk is full",
                )
                assert_refused_for_disk(post_alarm(proc, code="0x0002ff01"))
                assert metric(proc, "notifier_spool_disk_full") == 1
                assert metric(proc, "notifier_spool_disk_full_refused_total") == 2

                filler.unlink()  # the operator frees space: accepted again, no restart
                assert post_alarm(proc, code="0x0002ff02").status_code == 200
                wait_for(lambda: "0x0002ff02" in _codes(smtp), what="the new alarm mailed")
                assert metric(proc, "notifier_spool_disk_full") == 0
                assert _codes(smtp) == codes | {"0x0002ff02"}
            events = [e.get("event", "") for e in proc.log_events()]
            assert (
                f"disk full under data_dir {proc.data_dir}: new records refused, delivery goes on"
                in events
            )
            assert "disk space back under data_dir: new records accepted again" in events
        finally:
            proc.stop()

        # The acks held while the disk was full were written: a restart mails nothing again.
        with SmtpTestServer(port=smtp_port) as smtp:
            proc.start()
            try:
                assert accepted_after_space_returns(proc, "0x0002ff03")
                wait_for(lambda: _codes(smtp), what="the alarm sent after the restart")
                assert _codes(smtp) == {"0x0002ff03"}
            finally:
                proc.stop()


def test_a_spool_that_filled_the_disk_itself_accepts_again_once_it_has_delivered(
    tmp_path: Path,
) -> None:
    smtp_port = free_port()
    proc = notifier_on_small_disk(tmp_path, smtp_port)
    big = "x" * 30_000
    with small_filesystem(proc.data_dir):
        proc.start()
        try:
            codes: set[str] = set()
            while (
                response := post_alarm(proc, code=f"0x0003{len(codes):04x}", text=big)
            ).status_code == 200:
                codes.add(f"0x0003{len(codes):04x}")
            assert_refused_for_disk(response)
            assert len(codes) >= 10, "too few alarms to fill the disk: the test proves nothing"

            with SmtpTestServer(port=smtp_port) as smtp:
                wait_for(
                    lambda: codes <= _codes(smtp),
                    timeout=30,
                    what="every accepted alarm mailed",
                )
                # Delivered, they give their space back (history pruned, WAL truncated).
                wait_for(
                    lambda: accepted_after_space_returns(proc, "0x0003ffff"),
                    timeout=20,
                    what="alarms accepted again once the spool delivered what filled the disk",
                )
                wait_for(lambda: "0x0003ffff" in _codes(smtp), what="the new alarm mailed")
        finally:
            proc.stop()
