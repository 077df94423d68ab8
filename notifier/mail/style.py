"""How a route's mails read: its own templates, the time zone of the times, who sends them.

A route may replace the built-in subject, text body and HTML body with templates of its own
(`subject_template`, `body_template`, `body_html_template`). They are compiled here in Jinja2's
immutable sandbox: a template can read the values the README lists and call nothing that changes
state or reaches outside (no attribute starting with ``_``, no methods that mutate, ranges
capped). Undefined names are errors, so a typo is found by `check-config`, not by the reader.
"""

from __future__ import annotations

import datetime as dt
import functools
import socket
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from notifier.config import RouteSettings, Settings
from notifier.mail.transport import MailError

# The same Jinja2 settings for the built-in templates and the routes' own.
TEMPLATE_OPTIONS: dict[str, Any] = {
    "undefined": jinja2.StrictUndefined,
    "trim_blocks": True,
    "lstrip_blocks": True,
    "keep_trailing_newline": True,
}

# (route key, part of the mail it replaces)
TEMPLATE_KEYS = (
    ("subject_template", "subject"),
    ("body_template", "text"),
    ("body_html_template", "html"),
)


class TemplateConfigError(MailError, ValueError):
    """A route template that does not compile; the message names the key and the line (a
    config error: ValueError too, like the other config checks)."""


@dataclass(frozen=True)
class RouteTemplates:
    """A route's own templates, compiled; None: the built-in one for that part."""

    subject: jinja2.Template | None = None
    text: jinja2.Template | None = None
    html: jinja2.Template | None = None

    def part(self, name: str) -> jinja2.Template | None:
        template: jinja2.Template | None = getattr(self, name)
        return template


@functools.cache
def local_host() -> str:
    """This machine's name, as the mail footer shows it."""
    return socket.gethostname() or "unknown host"


@dataclass(frozen=True)
class MailStyle:
    """What a route's mails look like beyond the records: templates, time zone, sender."""

    route: str = ""
    zone: dt.tzinfo = dt.UTC
    host: str = field(default_factory=local_host)
    templates: RouteTemplates = field(default_factory=RouteTemplates)

    @property
    def zone_name(self) -> str:
        return str(self.zone)


@functools.cache
def _sandbox(html: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(autoescape=html, **TEMPLATE_OPTIONS)


def compile_template(source: str, *, html: bool, key: str) -> jinja2.Template:
    """One route template compiled in the sandbox (HTML ones escape every value).

    Raises `TemplateConfigError` naming `key` and the line for a syntax error."""
    try:
        return _sandbox(html).from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateConfigError(
            f"{key}: line {e.lineno}: {(e.message or '').rstrip('.')}: fix the Jinja2 syntax "
            "(`notifier render --route NAME --sample alarm` shows the result)"
        ) from None


def route_templates(route: RouteSettings, where: str) -> RouteTemplates:
    """The route's own templates; `where` prefixes the key in errors (``routes.0``)."""
    compiled = {
        part: compile_template(source, html=part == "html", key=f"{where}.{key}")
        for key, part in TEMPLATE_KEYS
        if (source := getattr(route, key))
    }
    return RouteTemplates(**compiled)


def mail_zone(settings: Settings) -> dt.tzinfo:
    """The `[mail] timezone` (validated with the config, so it exists)."""
    name = settings.mail.timezone
    return dt.UTC if name.upper() == "UTC" else zoneinfo.ZoneInfo(name)


def route_styles(settings: Settings) -> dict[str, MailStyle]:
    """Every effective route's mail style by route name.

    Raises `TemplateConfigError` for the first template that does not compile."""
    zone = mail_zone(settings)
    return {
        route.name: MailStyle(
            route=route.name, zone=zone, templates=route_templates(route, f"routes.{i}")
        )
        for i, route in enumerate(settings.effective_routes())
    }
