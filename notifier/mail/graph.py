"""Microsoft Graph sendMail with the MIME message: for tenants that switch SMTP AUTH off.

`POST {graph_url}/v1.0/users/{mailbox}/sendMail` with the composed MIME message, base64, as a
text/plain body; 202 means accepted. Graph keeps the Message-ID and always saves the mail to
the mailbox's Sent Items (the MIME form has no option for it).
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from notifier.mail.httpapi import ApiRequest


def graph_send_url(graph_url: str, mailbox: str) -> str:
    return f"{graph_url.rstrip('/')}/v1.0/users/{quote(mailbox, safe='@')}/sendMail"


def graph_request(graph_url: str, mailbox: str, mime: bytes) -> ApiRequest:
    """The sendMail request for one composed message."""
    return ApiRequest(graph_send_url(graph_url, mailbox), base64.b64encode(mime), "text/plain")
