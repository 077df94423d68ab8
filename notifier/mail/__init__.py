"""Mail: composing messages from records and delivering them (SMTP, the file outbox, Microsoft
Graph or the Gmail API).

Token acquisition is not here: OAuth2 tokens come from a `TokenProvider` (notifier/oauth2).
"""

from notifier.mail.compose import (
    Envelope,
    MailItem,
    Reason,
    compose,
    message_id_for,
    outgoing,
    parse_mailbox,
)
from notifier.mail.httpapi import ApiSender
from notifier.mail.outbox import Outbox
from notifier.mail.smtp import SmtpSender, SmtpSettings
from notifier.mail.tokens import StaticTokenProvider, TokenProvider
from notifier.mail.transport import (
    DeliveryError,
    MailError,
    MailTransport,
    Outcome,
    Outgoing,
    SendReport,
    SendResult,
)

__all__ = [
    "ApiSender",
    "DeliveryError",
    "Envelope",
    "MailError",
    "MailItem",
    "MailTransport",
    "Outbox",
    "Outcome",
    "Outgoing",
    "Reason",
    "SendReport",
    "SendResult",
    "SmtpSender",
    "SmtpSettings",
    "StaticTokenProvider",
    "TokenProvider",
    "compose",
    "message_id_for",
    "outgoing",
    "parse_mailbox",
]
