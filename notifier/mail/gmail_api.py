"""The Gmail API's messages.send with the MIME message: Google's recommended way to send.

`POST {gmail_url}/gmail/v1/users/me/messages/send` with `{"raw": base64url(MIME)}`; 200 means
sent. "me" is the mailbox the token belongs to (the signed-in user, or the service account's
delegated subject).
"""

from __future__ import annotations

import base64
import json

from notifier.mail.httpapi import ApiRequest


def gmail_send_url(gmail_url: str) -> str:
    return f"{gmail_url.rstrip('/')}/gmail/v1/users/me/messages/send"


def gmail_request(gmail_url: str, mime: bytes) -> ApiRequest:
    """The messages.send request for one composed message."""
    raw = base64.urlsafe_b64encode(mime).decode("ascii")
    return ApiRequest(
        gmail_send_url(gmail_url), json.dumps({"raw": raw}).encode(), "application/json"
    )
