"""The file outbox: whole .eml files with the same headers as the SMTP mail."""

from __future__ import annotations

import email.policy
import os
from email.parser import BytesParser
from pathlib import Path

from notifier.mail.compose import Envelope, MailItem, Reason, compose, outgoing
from notifier.mail.outbox import Outbox, outbox_name
from notifier.mail.transport import DeliveryError, SendResult
from tests.mail.conftest import ENVELOPE, NOW, alarm, alarm_mail
from tests.mail.test_injection import EXPECTED_HEADERS, hostile


async def test_each_mail_becomes_one_readable_eml_file(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    mails = [alarm_mail(), alarm_mail(code="0x2")]

    results = await outbox.send(mails)

    files = sorted((tmp_path / "outbox").iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]
    assert all(isinstance(r, SendResult) for r in results)
    by_path = {Path(r.path): r for r in results if isinstance(r, SendResult)}
    assert set(by_path) == set(files)
    for path, result in by_path.items():
        message = BytesParser(policy=email.policy.default).parsebytes(path.read_bytes())
        assert message["Message-ID"] == result.message_id
        assert list(message.keys()) == EXPECTED_HEADERS
        assert message.get_body(("plain",)) is not None


async def test_outbox_files_carry_the_same_headers_even_for_hostile_text(tmp_path: Path) -> None:
    record = alarm(text=hostile("\r\n"), device=hostile("\u2028"))
    mail = outgoing(compose([MailItem(record, Reason.NEW)], ENVELOPE, now=NOW), ENVELOPE)
    (result,) = await Outbox(tmp_path).send([mail])
    assert isinstance(result, SendResult)
    message = BytesParser(policy=email.policy.default).parsebytes(Path(result.path).read_bytes())
    assert list(message.keys()) == EXPECTED_HEADERS


async def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    await Outbox(tmp_path).send([alarm_mail(code=f"0x{i}") for i in range(5)])
    names = os.listdir(tmp_path)
    assert len(names) == 5
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


async def test_bcc_is_not_written_into_the_file(tmp_path: Path) -> None:
    envelope = Envelope("n@example.com", "N", ("a@example.com",), bcc=("hidden@example.com",))
    (result,) = await Outbox(tmp_path).send([alarm_mail(envelope=envelope)])
    assert isinstance(result, SendResult)
    assert b"hidden@example.com" not in Path(result.path).read_bytes()
    assert "hidden@example.com" in result.accepted


async def test_an_unwritable_outbox_is_a_temporary_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    (result,) = await Outbox(blocker / "outbox").send([alarm_mail()])
    assert isinstance(result, DeliveryError)
    assert result.temporary and "cannot write" in str(result)


async def test_test_report_names_the_file(tmp_path: Path) -> None:
    report = await Outbox(tmp_path).test(alarm_mail())
    assert report.ok and report.transport == "outbox"
    assert report.result is not None and Path(report.result.path).exists()


def test_file_names_sort_by_time_and_name_the_mail() -> None:
    first = outbox_name("<a@example.com>", NOW)
    later = outbox_name("<a@example.com>", NOW + 1)
    assert first < later
    assert first.startswith("20251127T215020.000000Z-") and first.endswith(".eml")
    assert first.split("-", 1)[1] == later.split("-", 1)[1]
