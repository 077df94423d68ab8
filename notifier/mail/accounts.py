"""A configured mail account's way out: its transport (SMTP, the file outbox, Microsoft Graph
or the Gmail API), the envelope of a route's mails, and the checks that every configured
address can be used and every account's keys fit its transport."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from notifier.config import AccountSettings, Settings
from notifier.mail.compose import Envelope, parse_mailbox
from notifier.mail.gmail_api import gmail_request
from notifier.mail.graph import graph_request
from notifier.mail.httpapi import ApiSender
from notifier.mail.outbox import Outbox
from notifier.mail.smtp import SmtpSender, SmtpSettings
from notifier.mail.tokens import TokenProvider
from notifier.mail.transport import MailTransport


def build_transport(
    data_dir: str, account: AccountSettings, token_provider: TokenProvider | None = None
) -> MailTransport:
    """The account's way out, by `transport`: Microsoft Graph or the Gmail API (both need the
    OAuth2 `token_provider`), else SMTP when a server is set, else the file outbox under
    `data_dir`.

    With a `token_provider` (an OAuth2 account) the SMTP login is XOAUTH2 / OAUTHBEARER as the
    mailbox `username` (default: the sender address) instead of a password.
    Raises ValueError when an API transport has no token provider.
    """
    if account.transport != "smtp":
        return _api_sender(account, token_provider)
    server = account.server_address
    if server is None:
        return Outbox(Path(data_dir) / "outbox")
    return SmtpSender(
        SmtpSettings(
            host=server.host,
            port=server.port,
            tls=account.tls,
            ca_file=account.ca_file,
            ehlo_name=account.ehlo_name,
            username=account.mailbox if token_provider is not None else account.username,
            password=account.password.get_secret_value(),
            token_provider=token_provider,
            mechanism=account.oauth2.mechanism if account.oauth2 else "xoauth2",
            allow_plaintext_auth=account.allow_plaintext_auth,
            timeout_s=account.timeout_s,
        ),
        account=account.name,
    )


def _api_sender(account: AccountSettings, token_provider: TokenProvider | None) -> ApiSender:
    if token_provider is None:
        raise ValueError(f"accounts.{account.name}: {_NEEDS_OAUTH2[account.transport]}")
    if account.transport == "graph":
        url = account.graph_url
        build = partial(graph_request, account.graph_url, account.mailbox)
    else:
        url = account.gmail_url
        build = partial(gmail_request, account.gmail_url)
    return ApiSender(
        account.transport,
        url,
        build,
        token_provider,
        account=account.name,
        ca_file=account.ca_file,
        timeout_s=account.timeout_s,
    )


_NEEDS_OAUTH2 = {
    "graph": 'transport = "graph" sends with an OAuth2 token: add [accounts.oauth2] with mode '
    "microsoft365_app (no person) or exchange / microsoft365 (see the README)",
    "gmail_api": 'transport = "gmail_api" sends with an OAuth2 token: add [accounts.oauth2] '
    "with mode gmail or google_service_account (see the README)",
}
# Keys that only the SMTP transport reads; set with an API transport they would do nothing.
_SMTP_ONLY = ("server", "tls", "ehlo_name", "password", "password_file", "allow_plaintext_auth")


def transport_problems(settings: Settings) -> list[str]:
    """One line per account whose keys do not fit its transport, naming the key."""
    problems = []
    for a in settings.accounts:
        prefix = f"accounts.{a.name}"
        # A key left at its default (as the example config writes them all) is not "set".
        changed = {k for k, f in AccountSettings.model_fields.items() if getattr(a, k) != f.default}
        if a.transport == "smtp":
            for key in ("graph_url", "gmail_url"):
                if key in changed:
                    problems.append(f"{prefix}.{key}: applies only to an API transport: remove it")
            continue
        if a.oauth2 is None or not a.oauth2.mode:
            problems.append(f"{prefix}.transport: {_NEEDS_OAUTH2[a.transport]}")
        other = "gmail_url" if a.transport == "graph" else "graph_url"
        for key in (*_SMTP_ONLY, other):
            if key in changed:
                problems.append(
                    f"{prefix}.{key}: applies to another transport, not transport = "
                    f'"{a.transport}" (nor does the file outbox): remove it'
                )
    return problems


def transport_label(account: AccountSettings) -> str:
    """Where the account's mails go, in words, for the status page and the start log."""
    if account.transport == "graph":
        return f"Microsoft Graph {account.graph_url}"
    if account.transport == "gmail_api":
        return f"Gmail API {account.gmail_url}"
    return "file outbox" if account.uses_outbox else f"SMTP {account.server} ({account.tls})"


def envelope_for(
    account: AccountSettings, to: list[str], cc: list[str], bcc: list[str]
) -> Envelope:
    return Envelope(
        sender=account.sender_address,
        sender_name=account.sender_name,
        to=tuple(to),
        cc=tuple(cc),
        bcc=tuple(bcc),
    )


def address_problems(settings: Settings) -> list[str]:
    """One line per configured mail address that cannot be used, naming its key."""
    problems = []
    checks = [(f"accounts.{a.name}.sender_address", a.sender_address) for a in settings.accounts]
    for i, r in enumerate(settings.routes):
        for key, entries in (("to", r.to), ("cc", r.cc), ("bcc", r.bcc)):
            checks += [(f"routes.{i}.{key}", entry) for entry in entries]
        if not r.to and not r.cc and not r.bcc:
            problems.append(f"routes.{i}.to: a route needs at least one recipient")
    for key, entry in checks:
        try:
            parse_mailbox(entry)
        except ValueError as e:
            problems.append(f"{key}: {e}")
    return problems
