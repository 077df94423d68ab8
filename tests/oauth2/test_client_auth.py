"""Each client authentication method against the live Authlib server."""

from __future__ import annotations

import base64
import hashlib
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from notifier.oauth2 import grants
from notifier.oauth2.client_auth import (
    ClientAuth,
    ClientSecretBasic,
    ClientSecretPost,
    NoClientAuth,
    PrivateKeyJwt,
    SigningAlg,
    load_private_key,
    thumbprints,
)
from notifier.oauth2.endpoint import request_token
from notifier.oauth2.errors import TokenEndpointError
from tests.authserver import AuthServer
from tests.oauth2.conftest import KeyPair

SCOPE = "https://outlook.office365.com/.default"


async def _client_credentials(server: AuthServer, http: httpx.AsyncClient, auth: ClientAuth) -> str:
    tokens = await request_token(
        http,
        account="ops",
        endpoint=server.token_url,
        form=grants.client_credentials(SCOPE),
        auth=auth,
        now=time.time(),
    )
    return str(server.verify(tokens.access_token)["client_id"])


def test_basic_credentials_are_form_encoded_before_base64() -> None:
    parts = ClientSecretBasic("my app", "a:b/c+d").apply("https://t", 0)
    encoded = parts.headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(encoded) == b"my%20app:a%3Ab%2Fc%2Bd"
    assert parts.form == {}


def test_thumbprints_are_base64url_sha1_and_sha256_of_the_der(rsa_keys: KeyPair) -> None:
    der = rsa_keys.certificate.public_bytes(serialization.Encoding.DER)
    prints = thumbprints(rsa_keys.certificate)
    pad = "=" * (-len(prints["x5t"]) % 4)
    assert base64.urlsafe_b64decode(prints["x5t"] + pad) == hashlib.sha1(der).digest()
    pad = "=" * (-len(prints["x5t#S256"]) % 4)
    assert base64.urlsafe_b64decode(prints["x5t#S256"] + pad) == hashlib.sha256(der).digest()


def test_client_assertion_claims_follow_rfc7523(rsa_keys: KeyPair) -> None:
    key = load_private_key(rsa_keys.private_pem, "test")
    auth = PrivateKeyJwt("app-id", key, "PS256", kid="k1", certificate=rsa_keys.certificate)
    form = auth.apply("https://login/token", now=1000.0).form
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header = jwt.get_unverified_header(form["client_assertion"])
    assert header["alg"] == "PS256" and header["kid"] == "k1"
    assert header["x5t"] == thumbprints(rsa_keys.certificate)["x5t"]
    claims = jwt.decode(form["client_assertion"], options={"verify_signature": False})
    assert claims["iss"] == claims["sub"] == "app-id"
    assert claims["aud"] == "https://login/token" and claims["exp"] > claims["iat"] == 1000
    assert claims["jti"]


async def test_client_secret_post(authserver: AuthServer, http: httpx.AsyncClient) -> None:
    authserver.add_client("app", secret="s3cret", auth_method="client_secret_post")
    assert await _client_credentials(authserver, http, ClientSecretPost("app", "s3cret")) == "app"


async def test_client_secret_basic_with_awkward_characters(
    authserver: AuthServer, http: httpx.AsyncClient
) -> None:
    secret = "p@ss:w/rd+ ~%"
    authserver.add_client("app", secret=secret, auth_method="client_secret_basic")
    assert await _client_credentials(authserver, http, ClientSecretBasic("app", secret)) == "app"


async def test_wrong_secret_is_permanent_and_not_echoed(
    authserver: AuthServer, http: httpx.AsyncClient
) -> None:
    authserver.add_client("app", secret="s3cret")
    with pytest.raises(TokenEndpointError) as caught:
        await _client_credentials(authserver, http, ClientSecretPost("app", "n0t-it"))
    assert caught.value.error == "invalid_client" and caught.value.permanent
    assert "n0t-it" not in str(caught.value) and "account ops" in str(caught.value)
    assert authserver.token_url in str(caught.value)


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
async def test_private_key_jwt_rsa(
    authserver: AuthServer, http: httpx.AsyncClient, rsa_keys: KeyPair, alg: SigningAlg
) -> None:
    authserver.add_client("app", public_key_pem=rsa_keys.public_pem, key_id="k1")
    auth = PrivateKeyJwt("app", load_private_key(rsa_keys.private_pem, "t"), alg, kid="k1")
    assert await _client_credentials(authserver, http, auth) == "app"


async def test_private_key_jwt_es256(
    authserver: AuthServer, http: httpx.AsyncClient, ec_keys: KeyPair
) -> None:
    authserver.add_client("app", public_key_pem=ec_keys.public_pem)
    auth = PrivateKeyJwt("app", load_private_key(ec_keys.private_pem, "t"), "ES256")
    assert await _client_credentials(authserver, http, auth) == "app"


async def test_private_key_jwt_with_certificate_thumbprint_as_microsoft_wants(
    authserver: AuthServer, http: httpx.AsyncClient, rsa_keys: KeyPair
) -> None:
    authserver.add_client(
        "app", public_key_pem=rsa_keys.public_pem, certificate=rsa_keys.certificate
    )
    key = load_private_key(rsa_keys.private_pem, "t")
    with_cert = PrivateKeyJwt("app", key, "RS256", certificate=rsa_keys.certificate)
    assert await _client_credentials(authserver, http, with_cert) == "app"
    without = PrivateKeyJwt("app", key, "RS256")
    with pytest.raises(TokenEndpointError) as caught:
        await _client_credentials(authserver, http, without)
    assert caught.value.error == "invalid_client"
    assert "AADSTS700027" in str(caught.value) and "certificate" in caught.value.advice


async def test_private_key_jwt_signed_by_another_key_is_refused(
    authserver: AuthServer, http: httpx.AsyncClient, rsa_keys: KeyPair, ec_keys: KeyPair
) -> None:
    authserver.add_client("app", public_key_pem=rsa_keys.public_pem)
    auth = PrivateKeyJwt("app", load_private_key(ec_keys.private_pem, "t"), "ES256")
    with pytest.raises(TokenEndpointError) as caught:
        await _client_credentials(authserver, http, auth)
    assert caught.value.error == "invalid_client" and caught.value.permanent


async def test_none_for_a_public_client(authserver: AuthServer, http: httpx.AsyncClient) -> None:
    authserver.add_client("public-app")
    tokens = await request_token(
        http,
        account="ops",
        endpoint=authserver.token_url,
        form=grants.password("alice@example.com", "correct horse", "smtp"),
        auth=NoClientAuth("public-app"),
        now=time.time(),
    )
    assert tokens.refresh_token
