"""How the client proves its identity to the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2).

Each method is a small value whose `apply` returns the extra form fields and headers for one
token request; nothing here does I/O, so each is tested without a socket.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import quote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from notifier.oauth2.errors import OAuth2Error

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SigningAlg = Literal["RS256", "PS256", "ES256"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class AuthParts:
    """What a client authentication method adds to one token request."""

    form: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class ClientAuth(Protocol):
    @property
    def client_id(self) -> str: ...
    @property
    def method(self) -> str: ...

    def apply(self, token_endpoint: str, now: float) -> AuthParts: ...


@dataclass(frozen=True)
class ClientSecretPost:
    client_id: str
    secret: str = field(repr=False)
    method: str = "client_secret_post"

    def apply(self, token_endpoint: str, now: float) -> AuthParts:
        return AuthParts(form={"client_id": self.client_id, "client_secret": self.secret})


@dataclass(frozen=True)
class ClientSecretBasic:
    client_id: str
    secret: str = field(repr=False)
    method: str = "client_secret_basic"

    def apply(self, token_endpoint: str, now: float) -> AuthParts:
        # RFC 6749 §2.3.1: both parts are form-urlencoded before they are joined and encoded.
        pair = f"{quote(self.client_id, safe='')}:{quote(self.secret, safe='')}"
        encoded = base64.b64encode(pair.encode("utf-8")).decode("ascii")
        return AuthParts(headers={"Authorization": f"Basic {encoded}"})


@dataclass(frozen=True)
class NoClientAuth:
    """A public client (RFC 6749 §2.1): it only names itself. An empty client_id sends nothing
    (the JWT bearer grant, where the assertion identifies the client)."""

    client_id: str = ""
    method: str = "none"

    def apply(self, token_endpoint: str, now: float) -> AuthParts:
        return AuthParts(form={"client_id": self.client_id} if self.client_id else {})


@dataclass(frozen=True)
class PrivateKeyJwt:
    """RFC 7523 §2.2: a signed assertion with iss = sub = client_id and aud = token endpoint.

    With a certificate, the header carries its thumbprints `x5t` (SHA-1) and `x5t#S256`:
    Microsoft finds the registered certificate by them. `kid` is sent when given.
    """

    client_id: str
    key: PrivateKey = field(repr=False)
    alg: SigningAlg = "RS256"
    kid: str = ""
    certificate: x509.Certificate | None = field(default=None, repr=False)
    lifetime_s: int = 300
    method: str = "private_key_jwt"

    def apply(self, token_endpoint: str, now: float) -> AuthParts:
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_endpoint,
            "jti": str(uuid.uuid4()),
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now) + self.lifetime_s,
        }
        assertion = sign(claims, self.key, self.alg, self.kid, self.certificate)
        return AuthParts(
            form={
                "client_id": self.client_id,
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": assertion,
            }
        )


def sign(
    claims: dict[str, object],
    key: PrivateKey,
    alg: SigningAlg,
    kid: str = "",
    certificate: x509.Certificate | None = None,
) -> str:
    """A compact JWS over `claims`, header with `kid` and the certificate thumbprints if given."""
    headers: dict[str, str] = {"typ": "JWT"}
    if kid:
        headers["kid"] = kid
    if certificate is not None:
        headers.update(thumbprints(certificate))
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def thumbprints(certificate: x509.Certificate) -> dict[str, str]:
    """{"x5t": base64url(SHA-1(DER)), "x5t#S256": base64url(SHA-256(DER))} (RFC 7515 §4.1.7/8)."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return {
        "x5t": _b64url(hashlib.sha1(der).digest()),  # a thumbprint, not a security check
        "x5t#S256": _b64url(hashlib.sha256(der).digest()),
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_private_key(pem: bytes, source: str) -> PrivateKey:
    """An RSA or EC private key from PEM (PKCS#1, PKCS#8 or SEC1), unencrypted."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise OAuth2Error(f"{source}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise OAuth2Error(f"{source}: only RSA and EC (P-256) private keys are supported")
    return key


def load_certificate(pem: bytes, source: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise OAuth2Error(f"{source}: not a PEM certificate ({e})") from None


def default_alg(key: PrivateKey) -> SigningAlg:
    """RS256 for RSA keys, ES256 for EC keys; PS256 only when asked for."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise OAuth2Error(f"EC key on curve {key.curve.name}: ES256 needs P-256")
        return "ES256"
    return "RS256"


def check_alg(key: PrivateKey, alg: str) -> SigningAlg:
    """`alg` if it fits `key`, else an error naming both."""
    if alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    if alg in ("RS256", "PS256") and isinstance(key, rsa.RSAPrivateKey):
        return "RS256" if alg == "RS256" else "PS256"
    kind = "EC" if isinstance(key, ec.EllipticCurvePrivateKey) else "RSA"
    raise OAuth2Error(f"signing algorithm {alg} does not fit an {kind} key")
