"""Mails about Alertmanager / Grafana alerts: the job and the labels, not the fingerprint."""

from __future__ import annotations

import json

from notifier.ingest.parse.webhook import parse_webhook
from notifier.mail.compose import MailItem, Reason, compose
from notifier.records import Record
from tests.mail.conftest import ENVELOPE, NOW
from tests.mail.test_compose import html, one, plain, received, subject
from tests.parse.test_webhook import alertmanager_payload

FINGERPRINT = "a1b2c3d4e5f60718"


def disk_full() -> Record:
    body = json.dumps(alertmanager_payload()).encode()
    [record] = parse_webhook(
        body, received_at=NOW, sender="127.0.0.1:40000", receiver="alertmanager"
    )
    return record


def test_alert_mail_shows_job_labels_annotations_and_links_not_the_fingerprint() -> None:
    message = one(MailItem(disk_full(), Reason.NEW))
    assert subject(message) == (
        "[ALARM Critical] pbx01:9100 node: Disk sda1 of pbx01 is full (DiskFull)"
    )
    text = plain(message)
    assert "Source:       node" in text
    assert "Labels:\n    alertname = DiskFull\n    device = sda1\n" in text
    assert "summary: Disk sda1 of pbx01 is full" in text
    assert "generatorURL: http://prometheus:9090/graph?g0.expr=disk" in text
    assert "externalURL: http://alertmanager:9093" in text
    assert "device = sda1" in html(message)
    assert FINGERPRINT not in text + html(message) + subject(message)


def test_alert_digest_lists_each_alerts_labels() -> None:
    first = disk_full()
    second = first.evolve(labels={**first.labels, "device": "sdb1"}, id=first.id + "b")
    message = received(
        compose([MailItem(first, Reason.NEW), MailItem(second, Reason.NEW)], ENVELOPE, now=NOW)
    )
    text = plain(message)
    assert "device=sda1, instance=pbx01:9100" in text
    assert "device=sdb1, instance=pbx01:9100" in text
    assert "device=sdb1" in html(message)


def test_label_values_are_escaped_in_the_html_part() -> None:
    record = disk_full().evolve(labels={"team": "<script>x</script>"})
    for message in (
        one(MailItem(record, Reason.NEW)),
        received(
            compose(
                [MailItem(record, Reason.NEW), MailItem(record.evolve(id="2"), Reason.NEW)],
                ENVELOPE,
                now=NOW,
            )
        ),
    ):
        assert "<script>" not in html(message)
        assert "team=&lt;script&gt;" in html(message) or "team = &lt;script&gt;" in html(message)
