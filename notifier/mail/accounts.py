"""A configured mail account's way out: its transport (SMTP or the file outbox), the envelope
of a route's mails, and the check that every configured address can be used."""

from __future__ import annotations

from pathlib import Path

from notifier.config import AccountSettings, Settings
from notifier.mail.compose import Envelope, parse_mailbox
from notifier.mail.outbox import Outbox
from notifier.mail.smtp import SmtpSender, SmtpSettings
from notifier.mail.tokens import TokenProvider
from notifier.mail.transport import MailTransport


def build_transport(
    data_dir: str, account: AccountSettings, token_provider: TokenProvider | None = None
) -> MailTransport:
    """The account's way out: SMTP when a server is set, else the file outbox under `data_dir`.

    With a `token_provider` (an OAuth2 account) the SMTP login is XOAUTH2 / OAUTHBEARER as the
    mailbox `username` (default: the sender address) instead of a password.
    """
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
            username=account.username
            or (account.sender_address if token_provider is not None else ""),
            password=account.password.get_secret_value(),
            token_provider=token_provider,
            mechanism=account.oauth2.mechanism if account.oauth2 else "xoauth2",
            allow_plaintext_auth=account.allow_plaintext_auth,
            timeout_s=account.timeout_s,
        ),
        account=account.name,
    )


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
