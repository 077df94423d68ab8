"""HTTP sender authentication: Basic (RFC 7617) and Digest (RFC 7616, qop=auth, MD5 / SHA-256).

innovaphone devices offer an "Authenticate" option for incoming alarms; the sender is then set up
with a user name and password. Digest nonces are stateless: a random part and the issue time,
signed with a per-process HMAC key, valid for `nonce_ttl_s`. An expired nonce, or one from before
a restart, answers ``stale=true`` when the digest itself is right, so a client retries with the
new nonce without asking anyone for the password again. Replays of one (nonce, nc, cnonce) are
refused while the nonce is valid.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.request import parse_http_list, parse_keqv_list

_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
_MAX_HEADER = 4096
_MAX_REPLAY_ENTRIES = 100_000
NO_CREDENTIALS = "no credentials"


def is_loopback(host: str | None) -> bool:
    """Whether a peer address (``127.0.0.1``, ``::1``, ``fe80::1%eth0``) is on loopback."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class AuthMode(enum.StrEnum):
    BASIC = "basic"
    DIGEST = "digest"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of one check. `reason` says why it failed (for the log; never a secret).

    `routine` failures are the normal first leg of a handshake (no credentials yet, or a stale
    nonce): the client retries with credentials, nobody needs to look at them.
    """

    ok: bool
    user: str = ""
    reason: str = ""
    stale: bool = False

    @property
    def routine(self) -> bool:
        return self.stale or self.reason == NO_CREDENTIALS


def digest_response(
    algorithm: str,
    *,
    user: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """The Digest `response` value (RFC 7616 §3.4.1, qop=auth, non-session algorithms)."""
    h = _HASHES[algorithm]

    def hexdigest(*parts: str) -> str:
        return h(":".join(parts).encode("utf-8")).hexdigest()

    ha1 = hexdigest(user, realm, password)
    ha2 = hexdigest(method, uri)
    return hexdigest(ha1, nonce, nc, cnonce, qop, ha2)


class Passwords:
    """User name → password, checked in constant time (shared by HTTP auth and the SMTP relay).

    An unknown name is compared against a random password, so timing does not tell which
    names exist.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)
        self._dummy = os.urandom(16).hex()

    def __contains__(self, user: str) -> bool:
        return user in self._users

    def __bool__(self) -> bool:
        return bool(self._users)

    def expected(self, user: str) -> str:
        """The user's password, or the random one for an unknown user."""
        return self._users.get(user, self._dummy)

    def matches(self, user: str, password: str) -> bool:
        same = hmac.compare_digest(self.expected(user).encode("utf-8"), password.encode("utf-8"))
        return same and user in self._users


class HttpAuth:
    """Checks the Authorization header of a request against `users` (name → password)."""

    def __init__(
        self,
        mode: str,
        users: Mapping[str, str],
        *,
        realm: str = "notifier",
        nonce_ttl_s: float = 300,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            self.mode = AuthMode(mode)
        except ValueError:
            raise ValueError(f"unknown HTTP auth mode {mode!r}: use basic or digest") from None
        if not users:
            raise ValueError(f"HTTP auth {mode!r} needs at least one user (http.users)")
        unknown = [a for a in algorithms if a.upper() not in _HASHES]
        if unknown or not algorithms:
            raise ValueError(f"unknown Digest algorithm(s) {unknown}: use SHA-256 and/or MD5")
        if '"' in realm or "\\" in realm:
            raise ValueError("the HTTP auth realm must not contain quotes or backslashes")
        self.realm = realm
        self.algorithms = tuple(a.upper() for a in algorithms)
        self._passwords = Passwords(users)
        self._ttl = nonce_ttl_s
        self._clock = clock
        self._key = os.urandom(32)
        self._seen: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def challenges(self, *, stale: bool = False) -> list[str]:
        """The WWW-Authenticate values for a 401, preferred first (one per Digest algorithm)."""
        if self.mode is AuthMode.BASIC:
            return [f'Basic realm="{self.realm}", charset="UTF-8"']
        nonce = self._new_nonce()
        stale_part = ", stale=true" if stale else ""
        return [
            f'Digest realm="{self.realm}", qop="auth", algorithm={algorithm}, '
            f'nonce="{nonce}", opaque="{self._opaque()}"{stale_part}'
            for algorithm in self.algorithms
        ]

    def check(self, method: str, uri: str, authorization: str | None) -> AuthResult:
        """Whether `authorization` (the header value, or None) admits this request.

        `uri` is the request target as sent (path and query), which Digest signs.
        """
        if not authorization:
            return AuthResult(False, reason=NO_CREDENTIALS)
        if len(authorization) > _MAX_HEADER:
            return AuthResult(False, reason="Authorization header too long")
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() != self.mode.value:
            return AuthResult(False, reason=f"expected {self.mode.value} auth, got {scheme[:20]}")
        if self.mode is AuthMode.BASIC:
            return self._check_basic(rest.strip())
        return self._check_digest(method, uri, rest)

    def _check_basic(self, token: str) -> AuthResult:
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return AuthResult(False, reason="malformed Basic credentials")
        user, colon, password = decoded.partition(":")
        if not colon:
            return AuthResult(False, reason="malformed Basic credentials")
        if not self._passwords.matches(user, password):
            return AuthResult(False, user=user, reason="wrong user name or password")
        return AuthResult(True, user=user)

    def _check_digest(self, method: str, uri: str, params_text: str) -> AuthResult:
        try:
            params = parse_keqv_list(parse_http_list(params_text))
        except ValueError:
            return AuthResult(False, reason="malformed Digest credentials")
        params = {k.lower(): v for k, v in params.items()}
        missing = [
            k
            for k in ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
            if not params.get(k)
        ]
        if missing:
            return AuthResult(False, reason=f"Digest credentials lack {', '.join(missing)}")
        user = params["username"]
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in self.algorithms:
            return AuthResult(False, user=user, reason=f"Digest algorithm {algorithm[:20]!r}")
        if params.get("userhash", "false").lower() == "true":
            return AuthResult(False, user=user, reason="Digest userhash is not supported")
        if params["qop"] != "auth":
            return AuthResult(False, user=user, reason="Digest qop must be auth")
        nc, cnonce = params["nc"], params["cnonce"]
        if len(nc) != 8 or not all(c in "0123456789abcdefABCDEF" for c in nc):
            return AuthResult(False, user=user, reason="Digest nc must be 8 hex digits")
        if params["realm"] != self.realm:
            return AuthResult(False, user=user, reason="Digest realm does not match")
        if params["uri"] != uri:
            return AuthResult(False, user=user, reason="Digest uri is not the request target")
        expected = digest_response(
            algorithm,
            user=user,
            realm=self.realm,
            password=self._passwords.expected(user),
            method=method,
            uri=uri,
            nonce=params["nonce"],
            nc=nc,
            cnonce=cnonce,
        )
        if (
            # As bytes: compare_digest refuses str with non-ASCII characters (TypeError).
            not hmac.compare_digest(expected.encode(), params["response"].lower().encode())
            or user not in self._passwords
        ):
            return AuthResult(False, user=user, reason="wrong user name or password")
        issued = self._nonce_issued(params["nonce"])
        now = self._clock()
        if issued is None or now - issued > self._ttl or issued > now + 5:
            return AuthResult(False, user=user, reason="nonce expired", stale=True)
        if not self._first_use(params["nonce"], nc.lower(), cnonce, now):
            return AuthResult(False, user=user, reason="Digest nonce count replayed")
        return AuthResult(True, user=user)

    # Nonce: 12 hex digits of issue time, 16 random hex digits, then an HMAC over both.
    def _new_nonce(self) -> str:
        body = f"{int(self._clock()):012x}{os.urandom(8).hex()}"
        return body + self._sign(body)

    def _sign(self, body: str) -> str:
        message = f"{body}:{self.realm}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def _nonce_issued(self, nonce: str) -> float | None:
        body, mac = nonce[:28], nonce[28:]
        if len(nonce) != 60 or not hmac.compare_digest(mac.encode(), self._sign(body).encode()):
            return None
        return float(int(body[:12], 16))

    def _opaque(self) -> str:
        return self._sign("opaque")

    def _first_use(self, nonce: str, nc: str, cnonce: str, now: float) -> bool:
        """Record (nonce, nc, cnonce); False when it was seen before (a replayed request)."""
        key = (nonce, nc, cnonce)
        if key in self._seen:
            return False
        self._seen[key] = now
        # Entries older than the nonce lifetime cannot be replayed anyway (the nonce is stale).
        while self._seen and (
            len(self._seen) > _MAX_REPLAY_ENTRIES
            or now - next(iter(self._seen.values())) > self._ttl
        ):
            self._seen.popitem(last=False)
        return True
