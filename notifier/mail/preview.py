"""Sample mails: what `notifier render` prints, and what `check-config` renders every route's
templates with, so that a template error stops the start rather than a mail."""

from __future__ import annotations

import datetime as dt
import enum
from email.message import EmailMessage

import jinja2

from notifier.config import Settings
from notifier.mail.accounts import envelope_for
from notifier.mail.compose import (
    MailItem,
    Reason,
    compose,
    load_templates,
    mail_context,
    subject_for,
)
from notifier.mail.style import (
    TEMPLATE_KEYS,
    MailStyle,
    TemplateConfigError,
    compile_template,
    mail_zone,
    route_styles,
)
from notifier.records import Kind, Record, Severity


class Sample(enum.StrEnum):
    ALARM = "alarm"  # a new alarm
    CLEAR = "clear"  # its clear, an hour later
    DIGEST = "digest"  # a storm: alarms and a clear in one mail


def _record(now: float, **changes: object) -> Record:
    values: dict[str, object] = {
        "kind": Kind.ALARM,
        "received_at": now - 59,
        "device_time": now - 60,
        "sender": "192.0.2.10:514",
        "receiver": "syslog-tcp",
        "raw": b"",
        "text": "Registration down",
        "device": "gw01",
        "serial": "009033a1b2c3",
        "code": "0x00010002",
        "severity": Severity.CRITICAL,
        "severity_raw": "Critical",
        "source": "RELAY/RECH",
        "details": '<relay prot="SH323" reg="sip:gw01@pbx.example.com"/>',
    }
    values.update(changes)
    return Record(**values)  # type: ignore[arg-type]


def sample_items(sample: Sample, now: float) -> list[MailItem]:
    """The records of a sample mail, as the dispatcher would hand them to `compose`."""
    if sample is Sample.ALARM:
        return [MailItem(_record(now), Reason.NEW)]
    cleared = MailItem(
        _record(now, kind=Kind.CLEAR, severity=Severity.MAJOR, severity_raw="Major"),
        Reason.CLEAR,
        active_since=now - 3960,
        repeat_count=3,
        set_severity=Severity.CRITICAL,
    )
    if sample is Sample.CLEAR:
        return [cleared]
    storm = [
        MailItem(
            _record(
                now,
                device=f"gw{n:02d}",
                text=f"Trunk {n} down",
                code="0x00020001",
                device_time=now - 40 + n,
            ),
            Reason.NEW,
        )
        for n in (2, 3, 4)
    ]
    return [*storm, cleared]


def render_sample(
    settings: Settings, route: str, sample: Sample, now: float, instance: str = "notifier"
) -> EmailMessage:
    """The mail `route` would send for `sample`, composed as the running service composes it.

    Raises KeyError for an unknown route, `TemplateConfigError` for a template that does not
    compile."""
    style = route_styles(settings)[route]
    settings_route = next(r for r in settings.effective_routes() if r.name == route)
    account = settings.account(settings_route.account)
    envelope = envelope_for(account, settings_route.to, settings_route.cc, settings_route.bcc)
    return compose(sample_items(sample, now), envelope, instance=instance, style=style, now=now)


def template_problems(settings: Settings, now: float = 1_764_280_220.0) -> list[str]:
    """One line per template that does not compile or fails on a sample mail: the built-in
    ones, and every route's own (rendered with each sample, so an unknown variable is found
    here, not in a mail)."""
    try:
        load_templates()
    except Exception as e:  # jinja2.TemplateError, or the package files are missing
        return [f"mail templates: {e}: reinstall notifier"]
    problems: list[str] = []
    zone = mail_zone(settings)
    for i, route in enumerate(settings.effective_routes()):
        for key, part in TEMPLATE_KEYS:
            source: str = getattr(route, key)
            if not source:
                continue
            where = f"routes.{i}.{key}"
            try:
                template = compile_template(source, html=part == "html", key=where)
            except TemplateConfigError as e:
                problems.append(str(e))
                continue
            problems += _render_problems(template, route.name, zone, where, now)
    return problems


def _render_problems(
    template: jinja2.Template, route: str, zone: dt.tzinfo, where: str, now: float
) -> list[str]:
    style = MailStyle(route=route, zone=zone)
    for sample in Sample:
        items = sample_items(sample, now)
        context = mail_context(items, subject=subject_for(items), style=style, now=now)
        try:
            template.render(context)
        except Exception as e:  # whatever the operator's template raises
            error = f"{type(e).__name__}: {str(e).rstrip('.')}"
            return [
                f"{where}: {error} (rendering the {sample.value} sample): "
                "the README lists the variables a template can use"
            ]
    return []
