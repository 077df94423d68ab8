"""Each mode resolves to the provider's endpoints and scopes; every preset can be overridden;
missing settings are reported one line per key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from notifier.config import OAuth2Settings
from notifier.oauth2.client_auth import (
    ClientSecretBasic,
    ClientSecretPost,
    NoClientAuth,
    PrivateKeyJwt,
)
from notifier.oauth2.errors import ModeError
from notifier.oauth2.grants import Grant
from notifier.oauth2.modes import resolve_mode, scope_covers, validate_mode
from tests.oauth2.conftest import KeyPair

MS = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0"
BOX = "alarms@contoso.com"


def settings(**values: Any) -> OAuth2Settings:
    for key in ("client_secret", "resource_owner_password"):
        if key in values:
            values[key] = SecretStr(values[key])
    return OAuth2Settings(**values)


def test_exchange_uses_microsoft_endpoints_from_the_tenant() -> None:
    spec = resolve_mode(
        settings(
            mode="exchange", tenant="contoso.onmicrosoft.com", client_id="c", client_secret="s"
        ),
        BOX,
        "ops",
        "http://127.0.0.1:8080/oauth2/callback",
    )
    assert spec.grant is Grant.AUTHORIZATION_CODE and spec.interactive
    assert spec.token_endpoint == f"{MS}/token"
    assert spec.authorization_url == f"{MS}/authorize"
    assert spec.device_authorization_url == f"{MS}/devicecode"
    assert spec.scope == "https://outlook.office.com/SMTP.Send offline_access"
    assert spec.client_auth == ClientSecretPost("c", "s")
    assert spec.login_hint == BOX and spec.redirect_uri.endswith("/oauth2/callback")


def test_exchange_with_a_certificate_signs_a_client_assertion_with_thumbprints(
    rsa_keys: KeyPair,
) -> None:
    spec = resolve_mode(
        settings(
            mode="exchange",
            tenant="t",
            client_id="c",
            private_key_file=str(rsa_keys.private_file),
            certificate_file=str(rsa_keys.certificate_file),
        ),
        BOX,
        "ops",
    )
    assert isinstance(spec.client_auth, PrivateKeyJwt)
    assert spec.client_auth.certificate is not None and spec.client_auth.alg == "RS256"


def test_microsoft365_is_the_password_grant_and_a_public_client_without_secret() -> None:
    spec = resolve_mode(
        settings(
            mode="microsoft365",
            tenant="t",
            client_id="c",
            resource_owner=BOX,
            resource_owner_password="pw",
        ),
        BOX,
        "ops",
    )
    assert spec.grant is Grant.PASSWORD and not spec.interactive
    assert spec.client_auth == NoClientAuth("c")
    assert spec.resource_owner == BOX and spec.resource_owner_password == "pw"
    assert "pw" not in repr(spec)


def test_microsoft365_app_is_client_credentials_with_the_default_scope() -> None:
    spec = resolve_mode(
        settings(mode="microsoft365_app", tenant="t", client_id="c", client_secret="s"), BOX, "ops"
    )
    assert spec.grant is Grant.CLIENT_CREDENTIALS
    assert spec.scope == "https://outlook.office365.com/.default"


def test_every_preset_can_be_overridden() -> None:
    spec = resolve_mode(
        settings(
            mode="exchange",
            tenant="t",
            client_id="c",
            client_secret="s",
            token_endpoint="https://idp.example/token",
            authorization_url="https://idp.example/auth",
            scope="custom",
            redirect_uri="https://notifier.example/cb",
        ),
        BOX,
        "ops",
        "http://127.0.0.1:8080/oauth2/callback",
    )
    assert (spec.token_endpoint, spec.authorization_url, spec.scope, spec.redirect_uri) == (
        "https://idp.example/token",
        "https://idp.example/auth",
        "custom",
        "https://notifier.example/cb",
    )


@pytest.mark.parametrize("kind", ["web", "installed"])
def test_gmail_reads_the_downloaded_client_json(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "client.json"
    client = {
        "client_id": "123.apps.googleusercontent.com",
        "client_secret": "GOCSPX-x",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
        "redirect_uris": ["http://localhost:8080/oauth2/callback"],
    }
    path.write_text(json.dumps({kind: client}))
    spec = resolve_mode(settings(mode="gmail", client_json_file=str(path)), BOX, "ops")
    assert spec.client_id == "123.apps.googleusercontent.com"
    assert spec.token_endpoint == "https://oauth2.googleapis.com/token"
    assert spec.authorization_url == "https://accounts.google.com/o/oauth2/auth"
    assert spec.scope == "https://mail.google.com/"
    assert spec.authorize_params == {"access_type": "offline"}
    assert spec.redirect_uri == "http://localhost:8080/oauth2/callback"


def test_google_service_account_reads_the_json_key(tmp_path: Path, rsa_keys: KeyPair) -> None:
    path = tmp_path / "sa.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "n@p.iam.gserviceaccount.com",
                "private_key_id": "abc",
                "private_key": rsa_keys.private_pem.decode(),
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    spec = resolve_mode(
        settings(mode="google_service_account", service_account_file=str(path)), BOX, "ops"
    )
    assert spec.grant is Grant.JWT_BEARER and spec.jwt_issuer is not None
    assert spec.jwt_issuer.issuer == "n@p.iam.gserviceaccount.com"
    assert spec.jwt_issuer.kid == "abc" and spec.jwt_issuer.subject == BOX
    assert spec.scope == "https://mail.google.com/"


def test_generic_modes(rsa_keys: KeyPair) -> None:
    common = {
        "client_id": "c",
        "token_endpoint": "https://idp/token",
        "authorization_url": "https://idp/auth",
        "scope": "smtp",
    }
    post = resolve_mode(settings(mode="client_secret_post", client_secret="s", **common), BOX)
    assert post.client_auth == ClientSecretPost("c", "s") and post.scope == "smtp"
    key = resolve_mode(
        settings(
            mode="private_key_jwt",
            private_key_file=str(rsa_keys.private_file),
            private_key_id="k1",
            grant="client_credentials",
            **common,
        ),
        BOX,
    )
    assert isinstance(key.client_auth, PrivateKeyJwt) and key.client_auth.kid == "k1"
    assert key.grant is Grant.CLIENT_CREDENTIALS and key.client_auth.certificate is None


def test_client_auth_basic_sends_the_secret_by_http_basic_in_every_mode_with_a_secret() -> None:
    generic = {"client_id": "c", "token_endpoint": "https://idp/token", "grant": "password"}
    owner = {"resource_owner": BOX, "resource_owner_password": "pw"}
    for extra in (
        {"mode": "client_secret_post", **generic, **owner},
        {"mode": "exchange", "tenant": "t", "client_id": "c"},
        {"mode": "gmail", "client_id": "c"},
    ):
        spec = resolve_mode(settings(client_secret="s", client_auth="basic", **extra), BOX)
        assert spec.client_auth == ClientSecretBasic("c", "s"), extra["mode"]
        spec = resolve_mode(settings(client_secret="s", client_auth="post", **extra), BOX)
        assert spec.client_auth == ClientSecretPost("c", "s"), extra["mode"]


def test_client_auth_without_a_client_secret_is_a_config_error(rsa_keys: KeyPair) -> None:
    problems = validate_mode(
        settings(
            mode="private_key_jwt",
            client_id="c",
            token_endpoint="https://idp/token",
            grant="client_credentials",
            private_key_file=str(rsa_keys.private_file),
            client_auth="basic",
        ),
        "ops",
        BOX,
    )
    assert problems == [
        "accounts.ops.oauth2.client_auth: applies only to a client_secret; this account's "
        "client authenticates with private_key_jwt: remove the key"
    ]


def test_missing_settings_are_named_one_line_each() -> None:
    problems = validate_mode(settings(mode="exchange"), "ops", BOX)
    assert problems == [
        "accounts.ops.oauth2.tenant: required for mode exchange",
        "accounts.ops.oauth2.client_id: required for mode exchange",
        "accounts.ops.oauth2.client_secret: required for mode exchange (or private_key_file "
        "with certificate_file)",
    ]


def test_microsoft365_without_password_is_reported() -> None:
    problems = validate_mode(settings(mode="microsoft365", tenant="t", client_id="c"), "ops")
    assert "accounts.ops.oauth2.resource_owner: required for mode microsoft365" in problems
    assert "accounts.ops.oauth2.resource_owner_password: required for mode microsoft365" in problems


def test_unreadable_files_are_reported_with_their_key(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    problems = validate_mode(
        settings(
            mode="private_key_jwt",
            client_id="c",
            token_endpoint="https://t",
            authorization_url="https://a",
            private_key_file=missing,
        ),
        "ops",
    )
    assert problems == [
        f"accounts.ops.oauth2.private_key_file: cannot read {missing!r}: No such file or directory"
    ]


def test_a_mode_is_required() -> None:
    with pytest.raises(ModeError) as caught:
        resolve_mode(settings(), BOX, "ops")
    assert caught.value.problems[0].startswith("accounts.ops.oauth2.mode: choose one of exchange")


MICROSOFT = {"tenant": "t", "client_id": "c", "client_secret": "s"}


@pytest.mark.parametrize(
    ("mode", "transport", "scope"),
    [
        ("exchange", "smtp", "https://outlook.office.com/SMTP.Send offline_access"),
        ("exchange", "graph", "https://graph.microsoft.com/Mail.Send offline_access"),
        ("microsoft365_app", "smtp", "https://outlook.office365.com/.default"),
        ("microsoft365_app", "graph", "https://graph.microsoft.com/.default"),
    ],
)
def test_microsoft_scope_presets_follow_the_transport(
    mode: str, transport: str, scope: str
) -> None:
    spec = resolve_mode(settings(mode=mode, **MICROSOFT), BOX, "ops", "", transport)
    assert spec.scope == scope


@pytest.mark.parametrize(
    ("transport", "scope"),
    [
        ("smtp", "https://mail.google.com/"),
        ("gmail_api", "https://www.googleapis.com/auth/gmail.send"),
    ],
)
def test_gmail_scope_presets_follow_the_transport(transport: str, scope: str) -> None:
    spec = resolve_mode(
        settings(mode="gmail", client_id="c", client_secret="s"), BOX, "ops", "", transport
    )
    assert spec.scope == scope


def test_a_configured_scope_wins_over_the_transport_preset() -> None:
    spec = resolve_mode(
        settings(mode="microsoft365_app", scope="api://custom/.default", **MICROSOFT),
        BOX,
        "ops",
        "",
        "graph",
    )
    assert spec.scope == "api://custom/.default"


def test_a_mode_of_the_other_provider_cannot_serve_an_api_transport() -> None:
    problems = validate_mode(
        settings(mode="gmail", client_id="c", client_secret="s"), "ops", BOX, "", "graph"
    )
    assert problems == [
        "accounts.ops.transport: graph cannot use mode gmail: choose one of exchange, "
        "microsoft365, microsoft365_app, client_secret_post, private_key_jwt"
    ]
    assert validate_mode(
        settings(mode="microsoft365_app", **MICROSOFT), "ops", BOX, "", "gmail_api"
    )


def test_a_sign_in_covers_a_scope_only_for_the_same_service() -> None:
    graph = "https://graph.microsoft.com/Mail.Send offline_access"
    # Microsoft answers Graph scopes by their short names.
    assert scope_covers("Mail.Send openid profile", graph)
    assert scope_covers("https://graph.microsoft.com/Mail.Send", graph)
    assert not scope_covers("https://outlook.office.com/SMTP.Send", graph)
    gmail = "https://www.googleapis.com/auth/gmail.send"
    assert not scope_covers("https://mail.google.com/", gmail)
    assert scope_covers("https://www.googleapis.com/auth/gmail.send", gmail)
