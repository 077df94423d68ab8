"""Everything `run` compiles from the settings, compiled before anything starts.

`notifier run` and `notifier check-config` both call `config_problems`, so what check-config
calls valid, run does not refuse: route rules (regular expressions, code ranges, severities),
mail addresses, OAuth2 account settings, TLS files, the mail templates (the built-in
ones and every route's own, rendered with sample mails) and the maintenance windows (cron
schedule, time zone, duration, matchers).
"""

from __future__ import annotations

import ssl

from notifier.config import Settings


def config_problems(settings: Settings) -> list[str]:
    """One line per problem, each naming its key; [] when `run` can start on `settings`."""
    from notifier.mail.preview import template_problems

    return (
        account_problems(settings)
        + route_problems(settings)
        + tls_problems(settings)
        + template_problems(settings)
        + forward_problems(settings)
        + maintenance_problems(settings)
    )


def maintenance_problems(settings: Settings) -> list[str]:
    from notifier.dispatch.control import maintenance_problems

    return maintenance_problems(settings)


def forward_problems(settings: Settings) -> list[str]:
    from notifier.forward.consumer import forward_problems

    return forward_problems(settings)


def account_problems(settings: Settings) -> list[str]:
    """Mail addresses and OAuth2 settings: what every command that mails or signs in needs."""
    from notifier.mail.accounts import address_problems, transport_problems
    from notifier.oauth2.runtime import validate_accounts

    return address_problems(settings) + transport_problems(settings) + validate_accounts(settings)


def route_problems(settings: Settings) -> list[str]:
    from notifier.dispatch.rules import RuleError, compile_routes

    try:
        compile_routes(settings.effective_routes())
    except RuleError as e:
        return [str(e)]
    return []


def tls_problems(settings: Settings) -> list[str]:
    """The certificate, key and CA files the receivers and the accounts will load."""
    from notifier.ingest.tls import server_context

    problems: list[str] = []
    servers = [("http", settings.http.tls_cert_file, settings.http.tls_key_file, "")]
    if settings.syslog.tls:
        s = settings.syslog
        servers.append(("syslog", s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file))
    if settings.smtp_relay.listen:
        r = settings.smtp_relay
        servers.append(("smtp_relay", r.tls_cert_file, r.tls_key_file, ""))
    for section, cert, key, client_ca in servers:
        if not cert:
            continue
        try:
            server_context(cert, key, client_ca, section=section)
        except ValueError as e:
            problems.append(str(e))
    for account in settings.accounts:
        if not account.ca_file or account.uses_outbox:
            continue
        try:
            ssl.create_default_context(cafile=account.ca_file)
        except (OSError, ssl.SSLError) as e:
            problems.append(
                f"accounts.{account.name}.ca_file: cannot load {account.ca_file!r} ({e}): "
                "it must hold PEM certificates"
            )
    return problems
