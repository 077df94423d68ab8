"""Route templates in the sandbox, composed into real messages (no server needed)."""

from __future__ import annotations

import datetime as dt
import socket
from zoneinfo import ZoneInfo

import pytest

from notifier.config import load_settings
from notifier.mail.compose import MailItem, Reason, compose
from notifier.mail.preview import template_problems
from notifier.mail.style import MailStyle, RouteTemplates, TemplateConfigError, compile_template
from notifier.mail.testmail import compose_test_mail
from notifier.records import Kind
from tests.mail.conftest import ENVELOPE, NOW, alarm
from tests.mail.test_compose import plain, received


def style(**sources: str) -> MailStyle:
    compiled = {
        part: compile_template(source, html=part == "html", key=f"routes.0.{part}")
        for part, source in sources.items()
    }
    return MailStyle(
        route="ops", zone=ZoneInfo("Europe/Berlin"), templates=RouteTemplates(**compiled)
    )


def test_subject_template_output_becomes_one_line_and_empty_means_built_in() -> None:
    items = [MailItem(alarm(), Reason.NEW)]
    lines = received(
        compose(items, ENVELOPE, style=style(subject="A\n{{ row.device }}\n"), now=NOW)
    )
    assert lines["Subject"] == "A gw01"
    empty = received(compose(items, ENVELOPE, style=style(subject="{# nothing #}"), now=NOW))
    assert empty["Subject"] == "[ALARM Major] gw01 RELAY/RECH: Registration down (0x00010002)"


def test_counts_cover_every_record_of_a_digest_not_only_those_listed() -> None:
    items = [MailItem(alarm(code=f"0x{i}"), Reason.NEW) for i in range(5)]
    items.append(MailItem(alarm(kind=Kind.CLEAR), Reason.CLEAR))
    template = "{{ counts.alarm }}/{{ counts.cleared }} of {{ count }}, {{ rows | length }} listed"
    message = compose(items, ENVELOPE, max_shown=2, style=style(text=template), now=NOW)
    assert plain(received(message)) == "5/1 of 6, 2 listed\n"


def test_times_follow_the_mail_time_zone() -> None:
    record = alarm(device_time=dt.datetime(2026, 1, 15, 8, 0, tzinfo=dt.UTC).timestamp())
    message = compose([MailItem(record, Reason.NEW)], ENVELOPE, style=style(), now=NOW)
    assert "Device time:  2026-01-15 09:00:00 CET\n" in plain(received(message))


def test_a_syntax_error_names_the_key_and_the_line() -> None:
    with pytest.raises(TemplateConfigError, match=r"^routes\.0\.text: line 2: "):
        compile_template("ok\n{% for %}", html=False, key="routes.0.text")


def test_check_config_renders_each_route_template_with_the_samples() -> None:
    settings = load_settings(
        environ={
            "NOTIFIER_ROUTES": '[{"name": "a", "body_template": "{{ row.set_at[0] }}"},'
            ' {"name": "b", "subject_template": "{{ \'\'.__class__.__mro__ }}"}]'
        }
    )
    problems = template_problems(settings)
    assert len(problems) == 2, problems
    # set_at is empty on a new alarm: the alarm sample finds the template's mistake.
    assert problems[0].startswith("routes.0.body_template: UndefinedError")
    assert "(rendering the alarm sample)" in problems[0]
    assert problems[1].startswith("routes.1.subject_template: SecurityError")


def test_the_footer_names_the_configured_instance_and_this_host() -> None:
    settings = load_settings(environ={"NOTIFIER_INSTANCE_NAME": "berlin-2"})
    message = received(compose_test_mail(settings, to="ops@example.com", now=NOW).message)
    assert message["Subject"] == "[TEST] notifier test mail from berlin-2"
    assert f"Sent by notifier on {socket.gethostname()} (instance berlin-2), " in plain(message)
