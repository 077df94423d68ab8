"""A clear's mail threads to its alarm's mail: In-Reply-To / References from the stored
Message-ID of the set mail, as a mail reader sees them."""

from __future__ import annotations

from notifier.mail.compose import MAX_REFERENCES, MailItem, Reason, compose
from notifier.records import Kind
from tests.mail.conftest import ENVELOPE, NOW, alarm
from tests.mail.test_compose import received

SET_MAIL = "<0123abcd.notifier@notifier.example>"


def clear(code: str = "0x00010002", thread_id: str = SET_MAIL) -> MailItem:
    return MailItem(alarm(kind=Kind.CLEAR, code=code), Reason.CLEAR, thread_id=thread_id)


def test_the_mail_of_one_clear_replies_to_the_mail_of_its_set() -> None:
    mail = received(compose([clear()], ENVELOPE, now=NOW))

    assert mail["In-Reply-To"] == SET_MAIL
    assert mail["References"] == SET_MAIL


def test_a_digest_of_clears_references_their_set_mails_at_most_twenty_and_replies_to_none() -> None:
    items = [clear(f"0x{n:08x}", f"<set{n}.notifier@notifier.example>") for n in range(25)]
    items.append(clear("0xffffffff"))  # two clears of alarms set in one digest: listed once
    items.append(clear("0xfffffffe"))

    mail = received(compose(items, ENVELOPE, now=NOW))

    assert mail["In-Reply-To"] is None
    references = str(mail["References"]).split()
    assert len(references) == MAX_REFERENCES
    assert references == [f"<set{n}.notifier@notifier.example>" for n in range(MAX_REFERENCES)]


def test_a_new_alarm_or_a_clear_without_a_known_set_mail_starts_no_thread() -> None:
    new = MailItem(alarm(), Reason.NEW, thread_id=SET_MAIL)  # only clears reply
    unknown = MailItem(alarm(kind=Kind.CLEAR), Reason.CLEAR_UNKNOWN)
    broken = clear(thread_id="<a@b>\r\nBcc: x@evil.example")  # stored state is not trusted

    for item in (new, unknown, broken):
        mail = received(compose([item], ENVELOPE, now=NOW))
        assert mail["In-Reply-To"] is None and mail["References"] is None
        assert mail["Bcc"] is None
