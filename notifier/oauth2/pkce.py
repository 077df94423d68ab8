"""PKCE (RFC 7636, S256 only) and the state value that binds a callback to its request."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class Pkce:
    """A code verifier (kept server-side) and its S256 challenge (sent in the URL)."""

    verifier: str
    challenge: str
    method: str = "S256"

    def __repr__(self) -> str:
        return "Pkce(verifier=..., method='S256')"


def s256(verifier: str) -> str:
    """BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_pkce() -> Pkce:
    # 48 random bytes: a 64-character verifier (RFC 7636 allows 43..128).
    verifier = secrets.token_urlsafe(48)
    return Pkce(verifier=verifier, challenge=s256(verifier))


def new_state() -> str:
    return secrets.token_urlsafe(24)
