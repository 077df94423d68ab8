"""A real OAuth2 authorization server for tests, built from Authlib's server components.

Grants: authorization code with PKCE, refresh token with rotation, resource owner password,
client credentials, JWT bearer (RFC 7523 §2.1) and device code (RFC 8628). Client
authentication: client_secret_post, client_secret_basic, private_key_jwt (RFC 7523 §2.2, RS256 /
PS256 / ES256, Microsoft-like x5t / x5t#S256 thumbprint check) and none. Access tokens are RS256
JWTs with a configurable short lifetime; `verify` checks one the way a resource server (an SMTP
server doing XOAUTH2) would.

It runs on loopback in a background thread (stdlib `ThreadingHTTPServer`; Authlib's core
`AuthorizationServer` needs only a request adapter, so no web framework is involved). Tests can
count token requests per grant (and those refused), see how long the newest access token still
had when each refresh came (`refresh_headroom_s`: a second refresh while a good token exists
shows there), revoke a user's refresh tokens, make the token endpoint answer
503 or refuse connections for a while, and drive the login + consent page either with a browser
(plain HTML form: username, password, "Allow") or programmatically (`authorize`).

    with AuthServer() as server:
        server.add_user("alice@example.com", "pw")
        server.add_client("app", secret="s3cret", redirect_uris=["http://127.0.0.1/cb"])
"""

from __future__ import annotations

import html
import json
import math
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
from authlib.oauth2 import AuthorizationServer as _AuthlibServer
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    InvalidClientError,
    OAuth2Error,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion, JWTBearerGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc8628 import (
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    DeviceCredentialDict,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwk
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError

from notifier.oauth2.client_auth import thumbprints

ALL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
_SHORT_GRANT_NAMES = {JWT_BEARER: "jwt_bearer", DEVICE_CODE: "device_code"}
_ALGS = ["RS256", "PS256", "ES256"]


@dataclass(frozen=True)
class User:
    username: str

    def get_user_id(self) -> str:
        return self.username


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    secret: str = ""
    auth_method: str = "client_secret_post"
    grant_types: tuple[str, ...] = (
        "authorization_code",
        "refresh_token",
        "password",
        "client_credentials",
        DEVICE_CODE,
    )
    redirect_uris: tuple[str, ...] = ()
    public_key_pem: bytes = b""
    key_id: str = ""
    certificate: x509.Certificate | None = None
    # JWT bearer issuers (service accounts) may act for these subjects ("domain-wide delegation").
    subjects: tuple[str, ...] = ()

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0] if self.redirect_uris else ""

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.secret) and secrets.compare_digest(client_secret, self.secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def public_key(self) -> jwk.Key | jwk.KeySet:
        public = serialization.load_pem_public_key(self.public_key_pem)
        parameters: dict[str, Any] = {"kid": self.key_id} if self.key_id else {}
        key: jwk.Key
        if isinstance(public, ec.EllipticCurvePublicKey):
            key = jwk.import_key(self.public_key_pem, "EC", parameters)  # type: ignore[call-overload]
        else:
            key = jwk.import_key(self.public_key_pem, "RSA", parameters)  # type: ignore[call-overload]
        # With a kid: a key set, so an assertion whose header names another key is refused.
        return jwk.KeySet([key]) if self.key_id else key


@dataclass
class AuthCode(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: User
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class RefreshRecord(TokenMixin):  # type: ignore[misc]
    refresh_token: str
    client_id: str
    user: User | None
    scope: str
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return 0

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> User | None:
        return self.user

    def get_client(self) -> Any:
        return None


class _Request(OAuth2Request):  # type: ignore[misc]
    """An Authlib request over what the stdlib handler parsed."""

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Any,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
    ) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self._args = {k: v[0] for k, v in query.items()}
        self._form = {k: v[0] for k, v in form.items()}
        merged = {**self._args, **self._form}
        self.payload = BasicOAuth2Payload(merged)
        lists: dict[str, list[str]] = {}
        for source in (query, form):
            for k, v in source.items():
                lists.setdefault(k, []).extend(v)
        self.payload._datalist.update(lists)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


@dataclass
class Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


class AuthServer:
    """See the module docstring. All state lives here; Authlib calls run under one lock."""

    def __init__(
        self,
        *,
        access_token_lifetime_s: int = 3600,
        device_interval_s: int = 1,
        device_min_poll_s: float = 0.0,
        device_expires_in_s: int = 600,
        host: str = "127.0.0.1",
    ) -> None:
        self.access_token_lifetime_s = access_token_lifetime_s
        self.device_min_poll_s = device_min_poll_s
        self.host = host
        self.port = 0
        self.token_requests: Counter[str] = Counter()
        self.token_refusals: Counter[str] = Counter()  # per grant: answers other than 200
        # Per refresh request, the seconds the newest access token issued to that client and
        # user had left (negative: it had expired).
        self.refresh_headroom_s: list[float] = []
        self._newest_exp: dict[tuple[str, str], float] = {}
        self.device_requests = 0
        self.users: dict[str, str] = {}
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshRecord] = {}
        self.device_credentials: dict[str, DeviceCredentialDict] = {}
        self.device_grants: dict[str, tuple[User, bool]] = {}
        self.device_last_poll: dict[str, float] = {}
        self.used_jtis: set[str] = set()
        self._lock = threading.RLock()
        self._unavailable_until = 0.0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = uuid.uuid4().hex[:16]
        self._server = self._build(device_interval_s, device_expires_in_s)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> AuthServer:
        httpd = ThreadingHTTPServer((self.host, self.port), _handler(self))
        httpd.daemon_threads = True
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name="authserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> AuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/authorize"

    @property
    def device_authorization_url(self) -> str:
        return f"{self.base_url}/device_authorization"

    @property
    def verification_url(self) -> str:
        return f"{self.base_url}/device"

    # --- set-up ----------------------------------------------------------------------------------

    def add_user(self, username: str, password: str) -> User:
        self.users[username] = password
        return User(username)

    def add_client(
        self,
        client_id: str,
        *,
        secret: str = "",
        auth_method: str = "",
        redirect_uris: Iterable[str] = (),
        grant_types: Iterable[str] | None = None,
        public_key_pem: bytes = b"",
        key_id: str = "",
        certificate: x509.Certificate | None = None,
        subjects: Iterable[str] = (),
    ) -> Client:
        """Register a client; `auth_method` defaults to client_secret_post with a secret,
        private_key_jwt with a public key, none otherwise. With `certificate`, private_key_jwt
        assertions must carry its x5t or x5t#S256 thumbprint (as Microsoft requires)."""
        if not auth_method:
            auth_method = (
                "client_secret_post" if secret else "private_key_jwt" if public_key_pem else "none"
            )
        client = Client(
            client_id=client_id,
            secret=secret,
            auth_method=auth_method,
            redirect_uris=tuple(redirect_uris),
            public_key_pem=public_key_pem,
            key_id=key_id,
            certificate=certificate,
            subjects=tuple(subjects),
        )
        if grant_types is not None:
            client.grant_types = tuple(grant_types)
        self.clients[client_id] = client
        return client

    def add_service_account(
        self, client_email: str, public_key_pem: bytes, key_id: str, subjects: Iterable[str]
    ) -> Client:
        """A JWT-bearer issuer (Google service account) allowed to act for `subjects`."""
        return self.add_client(
            client_email,
            auth_method="none",
            public_key_pem=public_key_pem,
            key_id=key_id,
            grant_types=[JWT_BEARER],
            subjects=subjects,
        )

    # --- what tests look at ------------------------------------------------------------------

    @property
    def jwks(self) -> dict[str, Any]:
        public = jwk.import_key(
            self._signing_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            parameters={"kid": self.key_id, "use": "sig", "alg": "RS256"},
        )
        return {"keys": [public.as_dict(private=False)]}

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of an access token this server issued; raises `jwt.InvalidTokenError`
        when the signature is wrong or the token has expired."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self._signing_key.public_key(),
            algorithms=["RS256"],
            issuer=self.issuer,
            options={"require": ["exp", "iat", "sub"], "verify_aud": False},
        )
        return claims

    def revoke_refresh_tokens(self, username: str) -> int:
        """Revoke every refresh token of `username` (as a password change does)."""
        with self._lock:
            records = [
                r for r in self.refresh_tokens.values() if r.user and r.user.username == username
            ]
            for record in records:
                record.revoked = True
        return len(records)

    def live_refresh_tokens(self, client_id: str) -> list[str]:
        with self._lock:
            return [
                r.refresh_token
                for r in self.refresh_tokens.values()
                if r.client_id == client_id and not r.revoked
            ]

    def outage(self, seconds: float, kind: str = "503") -> None:
        """For `seconds`: the token endpoint answers 503 (kind "503"), or the whole server
        refuses connections (kind "refuse": the listening socket is closed and reopened)."""
        if kind == "503":
            self._unavailable_until = time.monotonic() + seconds
            return
        if kind != "refuse":
            raise ValueError(f"unknown outage kind {kind!r}")
        self.stop()
        timer = threading.Timer(seconds, self.start)
        timer.daemon = True
        timer.start()

    # --- driving the interactive pages ---------------------------------------------------------

    def authorize(self, url: str, username: str, password: str, allow: bool = True) -> str:
        """Log in and consent on the login page at `url` as a browser would (two HTTP requests);
        returns the redirect Location (the client's redirect URI with code and state)."""
        with httpx.Client() as http:
            page = http.get(url)
            page.raise_for_status()
            form = {"username": username, "password": password}
            form["action"] = "allow" if allow else "deny"
            answer = http.post(url, data=form)
        if answer.status_code != 302:
            raise RuntimeError(f"login page answered {answer.status_code}: {answer.text[:200]}")
        return answer.headers["location"]

    def approve_device(
        self, user_code: str, username: str, password: str, allow: bool = True
    ) -> None:
        """Enter the user code on the verification page and approve (or deny)."""
        with httpx.Client() as http:
            answer = http.post(
                self.verification_url,
                data={
                    "user_code": user_code,
                    "username": username,
                    "password": password,
                    "action": "allow" if allow else "deny",
                },
            )
        if answer.status_code != 200:
            raise RuntimeError(f"device page answered {answer.status_code}: {answer.text[:200]}")

    # --- Authlib wiring --------------------------------------------------------------------------

    def _build(self, device_interval_s: int, device_expires_in_s: int) -> _AuthlibServer:
        outer = self

        class Server(_AuthlibServer):  # type: ignore[misc]
            def query_client(self, client_id: str) -> Client | None:
                return outer.clients.get(client_id)

            def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
                refresh = token.get("refresh_token")
                if refresh:
                    outer.refresh_tokens[refresh] = RefreshRecord(
                        refresh, request.client.client_id, request.user, token.get("scope", "")
                    )

            def create_oauth2_request(self, request: Any) -> OAuth2Request:
                return request

            def create_json_request(self, request: Any) -> Any:
                return request

            def handle_response(self, status: int, body: Any, headers: Any) -> Reply:
                if isinstance(body, dict):
                    body = json.dumps(body)
                data = body.encode("utf-8") if isinstance(body, str) else bytes(body or b"")
                return Reply(status, data, list(headers or []))

            def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
                return None

        server = Server()
        server.register_token_generator("default", self._generate_token)
        server.register_client_auth_method("private_key_jwt", _ClientAssertion(self))

        class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

            def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
                data = request.payload.data
                outer.codes[code] = AuthCode(
                    code=code,
                    client_id=request.client.client_id,
                    redirect_uri=request.payload.redirect_uri or "",
                    scope=request.payload.scope or "",
                    user=request.user,
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                    expires_at=time.time() + 60,
                )

            def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
                record = outer.codes.get(code)
                if record is None or record.client_id != client.client_id:
                    return None
                return record if record.expires_at > time.time() else None

            def delete_authorization_code(self, authorization_code: AuthCode) -> None:
                outer.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: AuthCode) -> User:
                return authorization_code.user

        class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
            INCLUDE_NEW_REFRESH_TOKEN = True  # rotation, as Microsoft does

            def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
                record = outer.refresh_tokens.get(refresh_token)
                return record if record and not record.revoked else None

            def authenticate_user(self, refresh_token: RefreshRecord) -> User | None:
                return refresh_token.user

            def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
                refresh_token.revoked = True

        class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

            def authenticate_user(self, username: str, password: str) -> User | None:
                return outer._check_password(username, password)

        class CredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS[:3]

        class BearerGrant(JWTBearerGrant):  # type: ignore[misc]
            def resolve_issuer_client(self, issuer: str) -> Client | None:
                return outer.clients.get(issuer)

            def resolve_client_public_key(self, client: Client) -> Any:
                return client.public_key()

            def get_audiences(self) -> list[str]:
                return [outer.token_url]

            def authenticate_user(self, subject: str) -> User | None:
                return User(subject) if subject in outer.users else None

            def has_granted_permission(self, client: Client, user: User) -> bool:
                return user.username in client.subjects

        class DeviceGrant(DeviceCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

            def query_device_credential(self, device_code: str) -> DeviceCredentialDict | None:
                return outer.device_credentials.get(device_code)

            def query_user_grant(self, user_code: str) -> tuple[User, bool] | None:
                return outer.device_grants.get(user_code)

            def should_slow_down(self, credential: DeviceCredentialDict) -> bool:
                code = credential["device_code"]
                now = time.monotonic()
                last = outer.device_last_poll.get(code)
                outer.device_last_poll[code] = now
                return last is not None and now - last < outer.device_min_poll_s

        class DeviceEndpoint(DeviceAuthorizationEndpoint):  # type: ignore[misc]
            CLIENT_AUTH_METHODS = ALL_AUTH_METHODS
            INTERVAL = device_interval_s
            EXPIRES_IN = device_expires_in_s

            def get_verification_uri(self) -> str:
                return outer.verification_url

            def save_device_credential(
                self, client_id: str, scope: str, data: dict[str, Any]
            ) -> None:
                outer.device_credentials[data["device_code"]] = DeviceCredentialDict(
                    client_id=client_id,
                    scope=scope,
                    expires_at=time.time() + data["expires_in"],
                    **data,
                )

        server.register_grant(CodeGrant, [CodeChallenge(required=True)])
        server.register_grant(RefreshGrant)
        server.register_grant(PasswordGrant)
        server.register_grant(CredentialsGrant)
        server.register_grant(BearerGrant)
        server.register_grant(DeviceGrant)
        server.register_endpoint(DeviceEndpoint(server))
        return server

    def _check_password(self, username: str, password: str) -> User | None:
        expected = self.users.get(username)
        if expected is not None and secrets.compare_digest(expected, password):
            return User(username)
        return None

    def _generate_token(
        self,
        grant_type: str,
        client: Client,
        user: User | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        lifetime = expires_in or self.access_token_lifetime_s
        now = time.time()
        # Rounded up, not down: a 5 s token must not lose most of a second to the whole-second
        # claim (clients count expires_in from when they asked).
        exp = math.ceil(now + lifetime)
        subject = user.username if user else client.client_id
        self._newest_exp[(client.client_id, subject)] = exp
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": "smtp",
            "client_id": client.client_id,
            "scope": scope or "",
            "iat": int(now),
            "exp": exp,
            "jti": uuid.uuid4().hex,
        }
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": jwt.encode(
                claims, self._signing_key, algorithm="RS256", headers={"kid": self.key_id}
            ),
            "expires_in": lifetime,
            "scope": scope or "",
        }
        if include_refresh_token and user is not None:
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    # --- request handling (called from handler threads) -------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
        headers: Any,
    ) -> Reply:
        uri = f"{self.base_url}{path}"
        if query:
            uri += "?" + urlencode({k: v[0] for k, v in query.items()})
        request = _Request(method, uri, headers, query, form)
        with self._lock:
            if path == "/token" and method == "POST":
                grant = form.get("grant_type", ["?"])[0]
                grant = _SHORT_GRANT_NAMES.get(grant, grant)
                self.token_requests[grant] += 1
                if grant == "refresh_token":
                    self._note_refresh(form.get("refresh_token", [""])[0])
                if time.monotonic() < self._unavailable_until:
                    self.token_refusals[grant] += 1
                    return Reply(503, b"Service Unavailable", [("Content-Type", "text/plain")])
                reply: Reply = self._server.create_token_response(request)
                if reply.status != 200:
                    self.token_refusals[grant] += 1
                return reply
            if path == "/device_authorization" and method == "POST":
                self.device_requests += 1
                reply = self._server.create_endpoint_response("device_authorization", request)
                return reply
            if path == "/authorize":
                return self._authorize_page(method, request, form)
            if path == "/device":
                return self._device_page(method, form)
            if path == "/jwks":
                return Reply(
                    200, json.dumps(self.jwks).encode(), [("Content-Type", "application/json")]
                )
        return Reply(404, b"not found", [("Content-Type", "text/plain")])

    def _note_refresh(self, refresh_token: str) -> None:
        record = self.refresh_tokens.get(refresh_token)
        if record is None or record.user is None:
            return
        exp = self._newest_exp.get((record.client_id, record.user.username))
        if exp is not None:
            self.refresh_headroom_s.append(exp - time.time())

    def _authorize_page(self, method: str, request: _Request, form: dict[str, list[str]]) -> Reply:
        try:
            grant = self._server.get_consent_grant(request)
        except OAuth2Error as e:
            return _page(400, f"<p>Invalid authorization request: {html.escape(e.error)}</p>")
        if method == "GET":
            client_id = html.escape(request.args.get("client_id", ""))
            scope = html.escape(request.args.get("scope", ""))
            hint = html.escape(request.args.get("login_hint", ""))
            return _page(
                200,
                f"<h1>Sign in</h1><p>{client_id} asks for: {scope}</p>"
                '<form method="post">'
                f'<label>Username <input name="username" value="{hint}"></label>'
                '<label>Password <input name="password" type="password"></label>'
                '<button name="action" value="allow">Allow</button>'
                '<button name="action" value="deny">Deny</button></form>',
            )
        username = form.get("username", [""])[0]
        user = self._check_password(username, form.get("password", [""])[0])
        if form.get("action", [""])[0] != "allow":
            user = None
        elif user is None:
            return _page(401, "<p>Wrong user name or password.</p>")
        reply: Reply = self._server.create_authorization_response(
            request, grant_user=user, grant=grant
        )
        return reply

    def _device_page(self, method: str, form: dict[str, list[str]]) -> Reply:
        if method == "GET":
            return _page(
                200,
                '<h1>Enter the code</h1><form method="post">'
                '<input name="user_code"><input name="username">'
                '<input name="password" type="password">'
                '<button name="action" value="allow">Allow</button></form>',
            )
        code = form.get("user_code", [""])[0]
        if not any(c["user_code"] == code for c in self.device_credentials.values()):
            return _page(404, "<p>Unknown code.</p>")
        user = self._check_password(form.get("username", [""])[0], form.get("password", [""])[0])
        if user is None:
            return _page(401, "<p>Wrong user name or password.</p>")
        self.device_grants[code] = (user, form.get("action", [""])[0] == "allow")
        return _page(200, "<p>Done. You can close this window.</p>")


class _ClientAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
    """private_key_jwt (RFC 7523 §2.2) with Microsoft's rule: when the client registered a
    certificate, the assertion header must name it by x5t or x5t#S256."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: AuthServer) -> None:
        super().__init__()
        self._outer = server
        self._headers: dict[str, Any] = {}

    def get_audiences(self) -> list[str]:
        return [self._outer.token_url]

    def validate_jti(self, claims: Any, jti: str) -> bool:
        if jti in self._outer.used_jtis:
            return False
        self._outer.used_jtis.add(jti)
        return True

    def extract_assertion(self, assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
        headers, claims = super().extract_assertion(assertion)
        self._headers = dict(headers)  # calls are serialized by the server's lock
        return headers, claims

    def resolve_client_public_key(self, client: Client) -> Any:
        if client.certificate is not None:
            expected = thumbprints(client.certificate)
            sent = {k: self._headers.get(k) for k in expected}
            if not any(sent[k] == v for k, v in expected.items()):
                raise InvalidClientError(
                    description="AADSTS700027: The certificate with identifier used to sign the "
                    "client assertion is not registered on application."
                )
        return client.public_key()

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        # Authlib's default accepts only "recommended" algorithms; PS256 is one Microsoft uses.
        try:
            token = jose_jwt.decode(assertion, resolve_key, algorithms=_ALGS)
        except (JoseError, ValueError) as e:
            raise InvalidClientError(description=str(e)) from e
        self.verify_claims(token.claims)
        return token.claims


def _page(status: int, body: str) -> Reply:
    doc = f"<!doctype html><html><body>{body}</body></html>".encode()
    return Reply(status, doc, [("Content-Type", "text/html; charset=utf-8")])


def _handler(server: AuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _serve(self) -> None:
            if server._httpd is None:
                # Stopped ("refuse" outage): a kept-alive connection must not go on being
                # served; drop it unanswered, as a server that went away would.
                self.close_connection = True
                self.connection.close()
                return
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            query = parse_qs(parts.query, keep_blank_values=True)
            try:
                reply = server.handle(self.command, parts.path, query, form, self.headers)
            except Exception as e:  # a test server: show the failure to the test
                reply = Reply(500, f"authserver error: {type(e).__name__}: {e}".encode())
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = _serve
        do_POST = _serve

    return Handler
