"""The modes a mail account can name, resolved to one `ModeSpec`: endpoints, scope, grant and
client authentication, with Microsoft and Google presets that every setting can override.

`resolve_mode` reads the key, certificate and JSON files a mode names and raises `ModeError`
with one line per problem, each naming the key ("accounts.ops.oauth2.tenant: required for mode
exchange"); `validate_mode` returns those lines for `check-config`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

from cryptography import x509

from notifier.config import OAuth2Mode, OAuth2Settings
from notifier.oauth2.client_auth import (
    ClientAuth,
    ClientSecretBasic,
    ClientSecretPost,
    NoClientAuth,
    PrivateKey,
    PrivateKeyJwt,
    SigningAlg,
    check_alg,
    default_alg,
    load_certificate,
    load_private_key,
)
from notifier.oauth2.errors import ModeError, OAuth2Error
from notifier.oauth2.grants import Grant

MICROSOFT_LOGIN = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
MICROSOFT_SMTP_SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_AUTHORIZE = "https://accounts.google.com/o/oauth2/auth"
GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"
GOOGLE_DEVICE = "https://oauth2.googleapis.com/device/code"
GOOGLE_REVOKE = "https://oauth2.googleapis.com/revoke"
GOOGLE_SCOPE = "https://mail.google.com/"
# The HTTP mail APIs (accounts.transport = "graph" / "gmail_api") need their own scopes.
GRAPH_DELEGATED_SCOPE = "https://graph.microsoft.com/Mail.Send offline_access"
GRAPH_APP_SCOPE = "https://graph.microsoft.com/.default"
GMAIL_SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"

MICROSOFT_MODES = ("exchange", "microsoft365", "microsoft365_app")
GOOGLE_MODES = ("gmail", "google_service_account")
GENERIC_MODES = ("client_secret_post", "private_key_jwt")
# The preset scope per mode and transport; a pair not listed cannot work together.
_SCOPES: dict[tuple[str, str], str] = {
    ("exchange", "smtp"): MICROSOFT_SMTP_SCOPE,
    ("microsoft365", "smtp"): MICROSOFT_SMTP_SCOPE,
    ("microsoft365_app", "smtp"): MICROSOFT_APP_SCOPE,
    ("exchange", "graph"): GRAPH_DELEGATED_SCOPE,
    ("microsoft365", "graph"): GRAPH_DELEGATED_SCOPE,
    ("microsoft365_app", "graph"): GRAPH_APP_SCOPE,
    ("gmail", "smtp"): GOOGLE_SCOPE,
    ("google_service_account", "smtp"): GOOGLE_SCOPE,
    ("gmail", "gmail_api"): GMAIL_SEND_SCOPE,
    ("google_service_account", "gmail_api"): GMAIL_SEND_SCOPE,
}

MODES: tuple[str, ...] = tuple(mode for mode in get_args(OAuth2Mode) if mode)


@dataclass(frozen=True)
class JwtBearerIssuer:
    """What signs the RFC 7523 §2.1 assertion (a Google service account)."""

    key: PrivateKey = field(repr=False)
    alg: SigningAlg
    kid: str
    issuer: str
    subject: str


@dataclass(frozen=True)
class ModeSpec:
    """Everything the grants need for one account; secrets are hidden from repr."""

    mode: str
    grant: Grant
    token_endpoint: str
    client_auth: ClientAuth = field(repr=False)
    scope: str = ""
    authorization_url: str = ""
    device_authorization_url: str = ""
    # RFC 7009 token revocation, where the provider has one (Google; Microsoft has none).
    revocation_url: str = ""
    redirect_uri: str = ""
    login_hint: str = ""
    authorize_params: dict[str, str] = field(default_factory=dict)
    resource_owner: str = ""
    resource_owner_password: str = field(default="", repr=False)
    jwt_issuer: JwtBearerIssuer | None = field(default=None, repr=False)

    @property
    def client_id(self) -> str:
        return self.client_auth.client_id

    @property
    def interactive(self) -> bool:
        """A person must sign in once (authorization code or device grant)."""
        return self.grant is Grant.AUTHORIZATION_CODE


def default_scope(mode: str, transport: str, grant: Grant) -> str | None:
    """The scope an account asks for when `scope` is empty; None when the mode cannot get a
    token for the transport (a Google mode for Graph, a Microsoft mode for the Gmail API)."""
    if mode in GENERIC_MODES:
        if transport == "graph":
            return GRAPH_APP_SCOPE if grant is Grant.CLIENT_CREDENTIALS else GRAPH_DELEGATED_SCOPE
        return GMAIL_SEND_SCOPE if transport == "gmail_api" else ""
    return _SCOPES.get((mode, transport))


# Scopes that ask for sign-in extras, not for access to a service.
_SIGN_IN_SCOPES = frozenset({"offline_access", "openid", "profile", "email"})


def _resources(scope: str) -> set[str]:
    """The services a scope string opens, by host. A bare name (Microsoft answers "Mail.Send"
    for https://graph.microsoft.com/Mail.Send) counts as Microsoft Graph."""
    hosts = set()
    for item in set(scope.split()) - _SIGN_IN_SCOPES:
        host = urlsplit(item).hostname if "://" in item else "graph.microsoft.com"
        hosts.add(host or item)
    return hosts


def scope_covers(granted: str, wanted: str) -> bool:
    """Whether a sign-in for scope `granted` can serve scope `wanted`: it opened every service
    `wanted` names (SMTP and Graph, or IMAP-SMTP and the Gmail API, are different services).
    Lenient by design: a wrong "no" would stop the mail until someone signs in again."""
    return _resources(wanted) <= _resources(granted)


def validate_mode(
    settings: OAuth2Settings,
    account_name: str,
    account_address: str = "",
    default_redirect_uri: str = "",
    transport: str = "smtp",
) -> list[str]:
    """One line per problem in the account's oauth2 settings; empty when the mode can run."""
    try:
        resolve_mode(settings, account_address, account_name, default_redirect_uri, transport)
    except ModeError as e:
        return e.problems
    return []


def resolve_mode(
    settings: OAuth2Settings,
    account_address: str,
    account_name: str = "",
    default_redirect_uri: str = "",
    transport: str = "smtp",
) -> ModeSpec:
    """The `ModeSpec` for an account; raises `ModeError` naming each missing or bad key.

    `account_address` is the mailbox (login hint, JWT subject); `default_redirect_uri` is used
    when `redirect_uri` is empty (the web page's /oauth2/callback). `transport` (the account's
    smtp / graph / gmail_api) picks the preset scope.
    """
    r = _Resolver(settings, account_name or "?", account_address, default_redirect_uri)
    build = _BUILDERS.get(settings.mode)
    if build is None:
        raise ModeError([f"{r.prefix}mode: choose one of {', '.join(MODES)}"])
    spec = build(r)
    if spec is not None:
        # The builders leave an empty scope empty; the preset depends on the transport too.
        scope = default_scope(settings.mode, transport, spec.grant)
        if scope is None:
            fits = MICROSOFT_MODES if transport == "graph" else GOOGLE_MODES
            r.problems.append(
                f"accounts.{account_name or '?'}.transport: {transport} cannot use mode "
                f"{settings.mode}: choose one of {', '.join(fits + GENERIC_MODES)}"
            )
        elif not settings.scope:
            spec = replace(spec, scope=scope)
    if (
        spec is not None
        and settings.client_auth
        and not isinstance(spec.client_auth, ClientSecretPost | ClientSecretBasic)
    ):
        r.problems.append(
            f"{r.prefix}client_auth: applies only to a client_secret; this account's client "
            f"authenticates with {spec.client_auth.method}: remove the key"
        )
    if r.problems or spec is None:
        raise ModeError(r.problems)
    return spec


class _Resolver:
    """Collects problems while reading settings and files, so all are reported at once."""

    def __init__(self, s: OAuth2Settings, account: str, address: str, redirect: str) -> None:
        self.s = s
        self.prefix = f"accounts.{account}.oauth2."
        self.address = address
        self.redirect_uri = s.redirect_uri or redirect
        self.problems: list[str] = []

    def require(self, key: str, value: str, why: str = "") -> str:
        if not value:
            self.problems.append(f"{self.prefix}{key}: required {why or self.for_mode}")
        return value

    @property
    def for_mode(self) -> str:
        return f"for mode {self.s.mode}"

    @property
    def secret(self) -> str:
        value = self.s.client_secret.get_secret_value()
        if not value and self.s.client_secret_file:
            value = self.read_text("client_secret_file", self.s.client_secret_file).strip()
        return value

    @property
    def owner_password(self) -> str:
        value = self.s.resource_owner_password.get_secret_value()
        if not value and self.s.resource_owner_password_file:
            path = self.s.resource_owner_password_file
            value = self.read_text("resource_owner_password_file", path).removesuffix("\n")
        return value

    def secret_auth(self, client_id: str, secret: str) -> ClientAuth:
        """The client secret sent as `client_auth` says: in the form (the default) or by HTTP
        Basic (RFC 6749 §2.3.1, what some providers require)."""
        if self.s.client_auth == "basic":
            return ClientSecretBasic(client_id, secret)
        return ClientSecretPost(client_id, secret)

    def owner(self, why: str) -> tuple[str, str]:
        """The resource owner and password for the password grant, both required."""
        owner = self.require("resource_owner", self.s.resource_owner, why)
        return owner, self.require("resource_owner_password", self.owner_password, why)

    def read_text(self, key: str, path: str) -> str:
        try:
            return Path(path).read_text(encoding="utf-8")
        except OSError as e:
            self.problems.append(f"{self.prefix}{key}: cannot read {path!r}: {e.strerror or e}")
            return ""

    def read_json(self, key: str, path: str) -> dict[str, Any]:
        text = self.read_text(key, path)
        if not text:
            return {}
        try:
            data = json.loads(text)
        except ValueError as e:
            self.problems.append(f"{self.prefix}{key}: {path!r} is not JSON ({e})")
            return {}
        if not isinstance(data, dict):
            self.problems.append(f"{self.prefix}{key}: {path!r} is not a JSON object")
            return {}
        return data

    def private_key(self, pem: str, key: str, source: str) -> PrivateKey | None:
        try:
            return load_private_key(pem.encode("utf-8"), source)
        except OAuth2Error as e:
            self.problems.append(f"{self.prefix}{key}: {e}")
            return None

    def key_file(self) -> PrivateKey | None:
        path = self.s.private_key_file
        pem = self.read_text("private_key_file", path) if path else ""
        return self.private_key(pem, "private_key_file", repr(path)) if pem else None

    def certificate(self) -> x509.Certificate | None:
        path = self.s.certificate_file
        if not path:
            return None
        pem = self.read_text("certificate_file", path)
        if not pem:
            return None
        try:
            return load_certificate(pem.encode("utf-8"), repr(path))
        except OAuth2Error as e:
            self.problems.append(f"{self.prefix}certificate_file: {e}")
            return None

    def alg(self, key: PrivateKey) -> SigningAlg:
        wanted = self.s.signing_alg
        try:
            return check_alg(key, wanted) if wanted else default_alg(key)
        except OAuth2Error as e:
            self.problems.append(f"{self.prefix}signing_alg: {e}")
            return "RS256"

    def key_jwt(self, client_id: str, cert_required: bool) -> PrivateKeyJwt | None:
        """private_key_jwt client authentication from private_key_file (+ certificate_file)."""
        self.require("private_key_file", self.s.private_key_file)
        if cert_required:
            self.require(
                "certificate_file",
                self.s.certificate_file,
                f"with private_key_file for mode {self.s.mode} (Microsoft finds the key by the "
                "certificate's thumbprint)",
            )
        key = self.key_file()
        cert = self.certificate()
        if key is None:
            return None
        return PrivateKeyJwt(
            client_id=client_id,
            key=key,
            alg=self.alg(key),
            kid=self.s.private_key_id,
            certificate=cert,
        )

    def preset(self, configured: str, value: str) -> str:
        """The configured value if set, else the mode's preset."""
        return configured or value

    def grant(self, default: Grant) -> Grant:
        return Grant(self.s.grant) if self.s.grant else default


def _microsoft(r: _Resolver, grant: Grant) -> ModeSpec | None:
    s = r.s
    tenant = r.require("tenant", s.tenant)
    client_id = r.require("client_id", s.client_id)
    base = MICROSOFT_LOGIN.format(tenant=tenant or "TENANT")
    secret = r.secret
    auth: ClientAuth | None
    if s.private_key_file or s.certificate_file:
        auth = r.key_jwt(client_id, cert_required=True)
    elif secret:
        auth = r.secret_auth(client_id, secret)
    elif grant is Grant.PASSWORD:
        # A public client: the app registration must allow public client flows.
        auth = NoClientAuth(client_id)
    else:
        r.problems.append(
            f"{r.prefix}client_secret: required {r.for_mode} (or private_key_file with "
            "certificate_file)"
        )
        auth = None
    owner, owner_password = r.owner(r.for_mode) if grant is Grant.PASSWORD else ("", "")
    if auth is None:
        return None
    return ModeSpec(
        mode=s.mode,
        grant=grant,
        token_endpoint=r.preset(s.token_endpoint, f"{base}/token"),
        authorization_url=r.preset(s.authorization_url, f"{base}/authorize"),
        device_authorization_url=r.preset(s.device_authorization_url, f"{base}/devicecode"),
        scope=s.scope,
        client_auth=auth,
        redirect_uri=r.redirect_uri,
        login_hint=s.resource_owner or r.address,
        resource_owner=owner,
        resource_owner_password=owner_password,
    )


def _exchange(r: _Resolver) -> ModeSpec | None:
    return _microsoft(r, Grant.AUTHORIZATION_CODE)


def _microsoft365(r: _Resolver) -> ModeSpec | None:
    return _microsoft(r, Grant.PASSWORD)


def _microsoft365_app(r: _Resolver) -> ModeSpec | None:
    return _microsoft(r, Grant.CLIENT_CREDENTIALS)


def _gmail(r: _Resolver) -> ModeSpec | None:
    s = r.s
    client: dict[str, Any] = {}
    if s.client_json_file:
        data = r.read_json("client_json_file", s.client_json_file)
        inner = data.get("web") or data.get("installed")
        if data and not isinstance(inner, dict):
            r.problems.append(
                f"{r.prefix}client_json_file: {s.client_json_file!r} has neither a 'web' nor "
                "an 'installed' client (download the OAuth client JSON from the Google Cloud "
                "console)"
            )
        client = inner if isinstance(inner, dict) else {}
    client_id = r.require(
        "client_id",
        s.client_id or str(client.get("client_id", "")),
        "for mode gmail (or client_json_file)",
    )
    secret = r.require(
        "client_secret",
        r.secret or str(client.get("client_secret", "")),
        "for mode gmail (or client_json_file)",
    )
    redirects = client.get("redirect_uris")
    json_redirect = redirects[0] if isinstance(redirects, list) and redirects else ""
    if not client_id or not secret:
        return None
    token_endpoint = r.preset(s.token_endpoint, str(client.get("token_uri") or GOOGLE_TOKEN))
    return ModeSpec(
        mode=s.mode,
        grant=Grant.AUTHORIZATION_CODE,
        token_endpoint=token_endpoint,
        # Google's revocation endpoint only revokes Google's tokens.
        revocation_url=r.preset(
            s.revocation_url, GOOGLE_REVOKE if token_endpoint == GOOGLE_TOKEN else ""
        ),
        authorization_url=r.preset(
            s.authorization_url, str(client.get("auth_uri") or GOOGLE_AUTHORIZE)
        ),
        device_authorization_url=r.preset(s.device_authorization_url, GOOGLE_DEVICE),
        scope=s.scope,
        client_auth=r.secret_auth(client_id, secret),
        redirect_uri=r.redirect_uri or str(json_redirect),
        login_hint=s.resource_owner or r.address,
        # Without offline access Google returns no refresh token.
        authorize_params={"access_type": "offline"},
    )


def _google_service_account(r: _Resolver) -> ModeSpec | None:
    s = r.s
    data: dict[str, Any] = {}
    if s.service_account_file:
        data = r.read_json("service_account_file", s.service_account_file)
    why = "for mode google_service_account (or service_account_file)"
    email = r.require("client_email", s.client_email or str(data.get("client_email", "")), why)
    kid = r.require("private_key_id", s.private_key_id or str(data.get("private_key_id", "")), why)
    key: PrivateKey | None = None
    if s.private_key_file:
        key = r.key_file()
    elif isinstance(data.get("private_key"), str):
        key = r.private_key(data["private_key"], "service_account_file", "private_key")
    else:
        r.require("private_key_file", "", why)
    subject = r.require("resource_owner", s.resource_owner or r.address, "(the mailbox to send as)")
    if key is None or not email or not kid:
        return None
    token_endpoint = r.preset(s.token_endpoint, str(data.get("token_uri") or GOOGLE_TOKEN))
    return ModeSpec(
        mode=s.mode,
        grant=Grant.JWT_BEARER,
        token_endpoint=token_endpoint,
        scope=s.scope,
        client_auth=NoClientAuth(),
        jwt_issuer=JwtBearerIssuer(key=key, alg=r.alg(key), kid=kid, issuer=email, subject=subject),
    )


def _generic(r: _Resolver, auth: Callable[[str], ClientAuth | None]) -> ModeSpec | None:
    s = r.s
    grant = r.grant(Grant.AUTHORIZATION_CODE)
    token_endpoint = r.require("token_endpoint", s.token_endpoint)
    client_id = r.require("client_id", s.client_id)
    if grant is Grant.AUTHORIZATION_CODE:
        r.require("authorization_url", s.authorization_url, "for grant authorization_code")
    owner, owner_password = r.owner("for grant password") if grant is Grant.PASSWORD else ("", "")
    client_auth = auth(client_id)
    if client_auth is None:
        return None
    return ModeSpec(
        mode=s.mode,
        grant=grant,
        token_endpoint=token_endpoint,
        authorization_url=s.authorization_url,
        device_authorization_url=s.device_authorization_url,
        revocation_url=s.revocation_url,
        scope=s.scope,
        client_auth=client_auth,
        redirect_uri=r.redirect_uri,
        login_hint=s.resource_owner or r.address,
        resource_owner=owner,
        resource_owner_password=owner_password,
    )


def _client_secret_post(r: _Resolver) -> ModeSpec | None:
    def auth(client_id: str) -> ClientAuth | None:
        secret = r.require("client_secret", r.secret)
        return r.secret_auth(client_id, secret) if secret else None

    return _generic(r, auth)


def _private_key_jwt(r: _Resolver) -> ModeSpec | None:
    return _generic(r, lambda client_id: r.key_jwt(client_id, cert_required=False))


_BUILDERS: dict[str, Callable[[_Resolver], ModeSpec | None]] = {
    "exchange": _exchange,
    "microsoft365": _microsoft365,
    "microsoft365_app": _microsoft365_app,
    "gmail": _gmail,
    "google_service_account": _google_service_account,
    "client_secret_post": _client_secret_post,
    "private_key_jwt": _private_key_jwt,
}
