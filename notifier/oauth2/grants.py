"""The grants as pure functions: form fields for each token request, and response parsing.

One builder per grant (RFC 6749 §4.1, §4.3, §4.4, §6; RFC 7523 §2.1; RFC 8628 §3.4); client
authentication is added separately (`client_auth`). Parsing turns the endpoint's JSON into a
`TokenSet` or a `TokenEndpointError` that says whether to retry.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cryptography import x509

from notifier.oauth2.client_auth import PrivateKey, SigningAlg, sign
from notifier.oauth2.errors import TokenEndpointError
from notifier.oauth2.pkce import Pkce

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"


class Grant(StrEnum):
    AUTHORIZATION_CODE = "authorization_code"
    PASSWORD = "password"
    CLIENT_CREDENTIALS = "client_credentials"
    JWT_BEARER = "jwt_bearer"


@dataclass(frozen=True)
class TokenSet:
    """An access token with its absolute expiry (epoch seconds) and, maybe, a refresh token."""

    access_token: str = field(repr=False)
    expires_at: float
    refresh_token: str | None = field(default=None, repr=False)
    scope: str = ""
    token_type: str = "Bearer"


@dataclass(frozen=True)
class DeviceAuthorization:
    """RFC 8628 §3.2: what to show the user, and what to poll with."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_at: float
    interval_s: float


# --- request builders -------------------------------------------------------------------------


def authorization_code(code: str, redirect_uri: str, code_verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }


def refresh_token(token: str, scope: str = "") -> dict[str, str]:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    if scope:
        form["scope"] = scope
    return form


def password(username: str, secret: str, scope: str) -> dict[str, str]:
    form = {"grant_type": "password", "username": username, "password": secret}
    if scope:
        form["scope"] = scope
    return form


def client_credentials(scope: str) -> dict[str, str]:
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    return form


def jwt_bearer(assertion: str, scope: str = "") -> dict[str, str]:
    form = {"grant_type": JWT_BEARER, "assertion": assertion}
    if scope:
        form["scope"] = scope
    return form


def device_code(code: str) -> dict[str, str]:
    return {"grant_type": DEVICE_CODE, "device_code": code}


def device_authorization(scope: str) -> dict[str, str]:
    return {"scope": scope} if scope else {}


def jwt_bearer_assertion(
    *,
    key: PrivateKey,
    alg: SigningAlg,
    issuer: str,
    subject: str,
    audience: str,
    scope: str,
    now: float,
    kid: str = "",
    certificate: x509.Certificate | None = None,
    lifetime_s: int = 3600,
) -> str:
    """RFC 7523 §2.1 assertion as Google's service accounts want it: iss = client e-mail,
    sub = the mailbox to act as, scope in the claims, exp at most one hour after iat."""
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "iat": int(now),
        "exp": int(now) + min(lifetime_s, 3600),
        "jti": str(uuid.uuid4()),
    }
    if subject:
        claims["sub"] = subject
    if scope:
        claims["scope"] = scope
    return sign(claims, key, alg, kid, certificate)


def authorization_url(
    base: str,
    *,
    client_id: str,
    redirect_uri: str,
    scope: str,
    state: str,
    pkce: Pkce,
    login_hint: str = "",
    prompt: str = "consent",
    extra: dict[str, str] | None = None,
) -> str:
    """`base` with response_type=code, prompt, login_hint, redirect_uri, client_id, scope, state
    and the PKCE challenge appended (any query the base already has is kept)."""
    params: dict[str, str] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "code_challenge": pkce.challenge,
        "code_challenge_method": pkce.method,
    }
    if prompt:
        params["prompt"] = prompt
    if login_hint:
        params["login_hint"] = login_hint
    params.update(extra or {})
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += [(k, v) for k, v in params.items() if v]
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- response parsing ------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def endpoint_error(
    account: str, endpoint: str, status: int, body: bytes
) -> TokenEndpointError | None:
    """The error in a token-endpoint answer, or None if it is a success (2xx without error)."""
    data = _json_object(body)
    if data is not None and isinstance(data.get("error"), str):
        description = data.get("error_description")
        return TokenEndpointError(
            account,
            endpoint,
            str(data["error"]),
            description if isinstance(description, str) else "",
            status,
        )
    if 200 <= status < 300:
        return None
    return TokenEndpointError(account, endpoint, f"http_{status}", "", status)


def parse_token_response(
    account: str, endpoint: str, status: int, body: bytes, now: float
) -> TokenSet:
    """A `TokenSet` from a token-endpoint answer; raises `TokenEndpointError` otherwise.

    A missing `expires_in` is read as one hour (RFC 6749 leaves it optional).
    """
    error = endpoint_error(account, endpoint, status, body)
    if error is not None:
        raise error
    data = _json_object(body)
    access = data.get("access_token") if data else None
    if data is None or not isinstance(access, str) or not access:
        raise TokenEndpointError(
            account, endpoint, "invalid_response", "the answer has no access_token", status
        )
    lifetime = _number(data.get("expires_in"), 3600.0)
    refresh = data.get("refresh_token")
    scope = data.get("scope")
    token_type = data.get("token_type")
    return TokenSet(
        access_token=access,
        expires_at=now + lifetime,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        scope=scope if isinstance(scope, str) else "",
        token_type=token_type if isinstance(token_type, str) else "Bearer",
    )


def parse_device_authorization(
    account: str, endpoint: str, status: int, body: bytes, now: float
) -> DeviceAuthorization:
    """RFC 8628 §3.2; Google names the URI `verification_url`, so both spellings are read."""
    error = endpoint_error(account, endpoint, status, body)
    if error is not None:
        raise error
    data = _json_object(body) or {}
    uri = data.get("verification_uri") or data.get("verification_url")
    device = data.get("device_code")
    user = data.get("user_code")
    if not (isinstance(uri, str) and isinstance(device, str) and isinstance(user, str)):
        raise TokenEndpointError(
            account,
            endpoint,
            "invalid_response",
            "the answer lacks device_code, user_code or verification_uri",
            status,
        )
    complete = data.get("verification_uri_complete")
    return DeviceAuthorization(
        device_code=device,
        user_code=user,
        verification_uri=uri,
        verification_uri_complete=complete if isinstance(complete, str) else "",
        expires_at=now + _number(data.get("expires_in"), 900.0),
        interval_s=_number(data.get("interval"), 5.0),
    )


def _number(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return default
    return default
