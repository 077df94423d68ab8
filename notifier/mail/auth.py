"""SMTP AUTH mechanisms as pure functions: what to send, and which mechanism to use.

The exchange itself (commands and replies) lives in smtp.py. Nothing here does I/O, and nothing
here puts a secret into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Iterable

from notifier.mail.transport import MailError


class Mechanism(enum.StrEnum):
    PLAIN = "PLAIN"
    LOGIN = "LOGIN"
    XOAUTH2 = "XOAUTH2"
    OAUTHBEARER = "OAUTHBEARER"

    @property
    def uses_token(self) -> bool:
        return self in (Mechanism.XOAUTH2, Mechanism.OAUTHBEARER)


# Password mechanisms in order of preference: PLAIN is one round trip.
PASSWORD_MECHANISMS = (Mechanism.PLAIN, Mechanism.LOGIN)

# The client's answer to a 334 error challenge after a refused token: XOAUTH2 (Google's
# documentation) wants an empty line, OAUTHBEARER (RFC 7628 §3.2.3) a single %x01 (AQ==).
ERROR_CHALLENGE_ANSWER = {Mechanism.XOAUTH2: b"", Mechanism.OAUTHBEARER: b"AQ=="}


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _utf8(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def plain_response(username: str | bytes, password: str | bytes) -> bytes:
    """RFC 4616: base64 of authzid (empty) NUL authcid NUL password."""
    return _b64(b"\0" + _utf8(username) + b"\0" + _utf8(password))


def login_responses(username: str | bytes, password: str | bytes) -> tuple[bytes, bytes]:
    """LOGIN: the username and the password, each base64, answered to one 334 each."""
    return _b64(_utf8(username)), _b64(_utf8(password))


def xoauth2_response(user: str | bytes, token: str | bytes) -> bytes:
    """XOAUTH2: base64 of ``user=`` addr ``^Aauth=Bearer `` token ``^A^A``."""
    return _b64(b"user=" + _utf8(user) + b"\x01auth=Bearer " + _utf8(token) + b"\x01\x01")


def oauthbearer_response(user: str | bytes, token: str | bytes, host: str, port: int) -> bytes:
    """RFC 7628 OAUTHBEARER: gs2 header ``n,a=user,`` then host, port and auth key-values.

    A ``,`` or ``=`` in the user name is escaped as RFC 5801 saslname requires.
    """
    saslname = _utf8(user).replace(b"=", b"=3D").replace(b",", b"=2C")
    return _b64(
        b"n,a="
        + saslname
        + b",\x01host="
        + _utf8(host)
        + b"\x01port="
        + str(port).encode("ascii")
        + b"\x01auth=Bearer "
        + _utf8(token)
        + b"\x01\x01"
    )


def describe_error_challenge(challenge: str) -> str:
    """The server's 334 error challenge after a refused token, decoded for a log line.

    Google and RFC 7628 servers send base64 JSON such as ``{"status":"invalid_token",
    "schemes":"bearer","scope":"https://mail.google.com/"}``; it names no secret.
    """
    text = challenge.strip()
    try:
        decoded = base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return text[:200]
    try:
        data = json.loads(decoded)
    except ValueError:
        return decoded[:200]
    if isinstance(data, dict):
        return ", ".join(f"{k}={v}" for k, v in data.items())[:200]
    return decoded[:200]


class AuthUnavailable(MailError):
    """No way to authenticate with these credentials on this connection; says why and what to do."""


def choose_mechanism(
    offered: Iterable[str],
    *,
    has_password: bool,
    has_token: bool,
    preferred_token_mechanism: Mechanism = Mechanism.XOAUTH2,
    encrypted: bool,
    allow_plaintext: bool,
) -> Mechanism | None:
    """Which AUTH mechanism to use, or None when no credentials are configured.

    Raises `AuthUnavailable` when credentials exist but must not or cannot be used: the
    connection is not encrypted (and plaintext AUTH is not allowed), or the server offers no
    mechanism we can use with them. A token account falls back to the other bearer mechanism
    when only that one is offered.
    """
    if not (has_password or has_token):
        return None
    if not encrypted and not allow_plaintext:
        raise AuthUnavailable(
            "refusing to send credentials over an unencrypted connection: use tls = "
            '"starttls" or "tls", or set allow_plaintext_auth only for a trusted local relay'
        )
    available = {m.upper() for m in offered}
    if has_token:
        other = (
            Mechanism.OAUTHBEARER
            if preferred_token_mechanism is Mechanism.XOAUTH2
            else Mechanism.XOAUTH2
        )
        candidates: tuple[Mechanism, ...] = (preferred_token_mechanism, other)
    else:
        candidates = PASSWORD_MECHANISMS
    for mechanism in candidates:
        if mechanism.value in available:
            return mechanism
    wanted = " or ".join(m.value for m in candidates)
    if not available:
        raise AuthUnavailable(
            f"the server offers no AUTH at all, and {wanted} is needed for the configured "
            "credentials: check the port (587 or 465 for submission) and the TLS mode"
        )
    if has_password and available & {m.value for m in Mechanism if m.uses_token}:
        hint = "configure OAuth2 ([accounts.oauth2]) instead of a password"
    elif has_token and available & {m.value for m in PASSWORD_MECHANISMS}:
        hint = "this server wants a password, not an OAuth2 token"
    else:
        hint = "notifier supports PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER"
    raise AuthUnavailable(
        f"the server offers AUTH {' '.join(sorted(available))} but not {wanted}: {hint}"
    )
