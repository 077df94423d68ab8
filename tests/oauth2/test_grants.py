"""Each grant against the live Authlib server, and the pure request builders."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from notifier.oauth2 import grants
from notifier.oauth2.client_auth import ClientSecretPost, NoClientAuth, load_private_key
from notifier.oauth2.endpoint import request_device_authorization, request_token
from notifier.oauth2.errors import AuthorizationFlowError, TokenEndpointError
from notifier.oauth2.filestore import FileTokenStore
from notifier.oauth2.flows import AuthorizationFlows
from notifier.oauth2.grants import Grant
from notifier.oauth2.modes import ModeSpec
from notifier.oauth2.pkce import new_pkce, s256
from tests.authserver import AuthServer
from tests.oauth2.conftest import PASSWORD, REDIRECT, USER, KeyPair


def _code_spec(server: AuthServer, client_id: str = "app", secret: str = "s3cret") -> ModeSpec:
    return ModeSpec(
        mode="client_secret_post",
        grant=Grant.AUTHORIZATION_CODE,
        token_endpoint=server.token_url,
        authorization_url=server.authorize_url,
        device_authorization_url=server.device_authorization_url,
        scope="smtp offline_access",
        client_auth=ClientSecretPost(client_id, secret) if secret else NoClientAuth(client_id),
        redirect_uri=REDIRECT,
        login_hint=USER,
    )


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_pkce_challenge_is_the_rfc7636_example() -> None:
    # RFC 7636 appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    pkce = new_pkce()
    assert 43 <= len(pkce.verifier) <= 128 and pkce.challenge == s256(pkce.verifier)


def test_authorization_url_appends_the_innovaphone_parameters_and_keeps_the_base_query() -> None:
    pkce = new_pkce()
    url = grants.authorization_url(
        "https://login.example/authorize?tenant=x",
        client_id="app",
        redirect_uri=REDIRECT,
        scope="a b",
        state="st",
        pkce=pkce,
        login_hint=USER,
        extra={"access_type": "offline"},
    )
    query = _query(url)
    assert query == {
        "tenant": "x",
        "response_type": "code",
        "prompt": "consent",
        "login_hint": USER,
        "redirect_uri": REDIRECT,
        "client_id": "app",
        "scope": "a b",
        "state": "st",
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "access_type": "offline",
    }
    assert pkce.verifier not in url


def test_token_response_without_expires_in_is_read_as_one_hour() -> None:
    tokens = grants.parse_token_response("ops", "t", 200, b'{"access_token":"A"}', now=100.0)
    assert tokens.expires_at == 3700.0 and tokens.refresh_token is None


def test_error_answer_carries_the_code_and_plain_words() -> None:
    body = (
        b'{"error":"invalid_grant","error_description":'
        b'"AADSTS700082: The refresh token has expired.\\r\\nTrace ID: 1"}'
    )
    with pytest.raises(TokenEndpointError) as caught:
        grants.parse_token_response("ops", "https://login/token", 400, body, now=0)
    assert caught.value.permanent
    assert "authorize again" in str(caught.value) and "Trace ID" not in str(caught.value)


async def test_authorization_code_with_pkce_and_state_stores_a_refresh_token(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    authserver.add_client("app", secret="s3cret", redirect_uris=[REDIRECT])
    flows = AuthorizationFlows(store, http)
    url, state = flows.start_authorization("ops", _code_spec(authserver))
    location = authserver.authorize(url, USER, PASSWORD)
    back = _query(location)
    assert back["state"] == state
    assert await flows.complete_authorization(state, back["code"]) == "ops"
    stored = await store.get("ops")
    assert stored is not None and stored.refresh_token
    assert stored.refresh_token in authserver.live_refresh_tokens("app")
    assert authserver.verify(stored.access_token or "")["sub"] == USER


async def test_state_is_single_use(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    authserver.add_client("app", secret="s3cret", redirect_uris=[REDIRECT])
    flows = AuthorizationFlows(store, http)
    url, state = flows.start_authorization("ops", _code_spec(authserver))
    code = _query(authserver.authorize(url, USER, PASSWORD))["code"]
    await flows.complete_authorization(state, code)
    with pytest.raises(AuthorizationFlowError, match="unknown, already used or expired"):
        await flows.complete_authorization(state, code)


async def test_expired_state_is_refused(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    authserver.add_client("app", secret="s3cret", redirect_uris=[REDIRECT])
    now = [1000.0]
    flows = AuthorizationFlows(store, http, clock=lambda: now[0], ttl_s=60)
    url, state = flows.start_authorization("ops", _code_spec(authserver))
    code = _query(authserver.authorize(url, USER, PASSWORD))["code"]
    now[0] += 61
    with pytest.raises(AuthorizationFlowError):
        await flows.complete_authorization(state, code)


async def test_code_with_a_wrong_verifier_is_refused_by_the_server(
    authserver: AuthServer, http: httpx.AsyncClient
) -> None:
    authserver.add_client("app", secret="s3cret", redirect_uris=[REDIRECT])
    spec = _code_spec(authserver)
    pkce = new_pkce()
    url = grants.authorization_url(
        spec.authorization_url,
        client_id="app",
        redirect_uri=REDIRECT,
        scope=spec.scope,
        state="s",
        pkce=pkce,
    )
    code = _query(authserver.authorize(url, USER, PASSWORD))["code"]
    with pytest.raises(TokenEndpointError) as caught:
        await request_token(
            http,
            account="ops",
            endpoint=spec.token_endpoint,
            form=grants.authorization_code(code, REDIRECT, new_pkce().verifier),
            auth=spec.client_auth,
            now=time.time(),
        )
    assert caught.value.error == "invalid_grant" and caught.value.permanent


async def test_denied_consent_comes_back_as_access_denied(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    authserver.add_client("app", secret="s3cret", redirect_uris=[REDIRECT])
    url, state = AuthorizationFlows(store, http).start_authorization("ops", _code_spec(authserver))
    back = _query(authserver.authorize(url, USER, PASSWORD, allow=False))
    assert back["error"] == "access_denied" and back["state"] == state and "code" not in back


async def test_refresh_returns_a_rotated_refresh_token(
    authserver: AuthServer, http: httpx.AsyncClient
) -> None:
    authserver.add_client("app", secret="s3cret")
    auth = ClientSecretPost("app", "s3cret")
    first = await request_token(
        http,
        account="ops",
        endpoint=authserver.token_url,
        form=grants.password(USER, PASSWORD, "smtp"),
        auth=auth,
        now=time.time(),
    )
    assert first.refresh_token
    second = await request_token(
        http,
        account="ops",
        endpoint=authserver.token_url,
        form=grants.refresh_token(first.refresh_token),
        auth=auth,
        now=time.time(),
    )
    assert second.refresh_token and second.refresh_token != first.refresh_token
    assert authserver.live_refresh_tokens("app") == [second.refresh_token]


async def test_password_grant_for_a_public_client(
    authserver: AuthServer, http: httpx.AsyncClient
) -> None:
    authserver.add_client("public-app")  # no secret: token_endpoint_auth_method none
    tokens = await request_token(
        http,
        account="ops",
        endpoint=authserver.token_url,
        form=grants.password(USER, PASSWORD, "smtp"),
        auth=NoClientAuth("public-app"),
        now=time.time(),
    )
    assert authserver.verify(tokens.access_token)["client_id"] == "public-app"


async def test_wrong_password_is_a_permanent_invalid_grant(
    authserver: AuthServer, http: httpx.AsyncClient
) -> None:
    authserver.add_client("app", secret="s3cret")
    with pytest.raises(TokenEndpointError) as caught:
        await request_token(
            http,
            account="ops",
            endpoint=authserver.token_url,
            form=grants.password(USER, "wrong", "smtp"),
            auth=ClientSecretPost("app", "s3cret"),
            now=time.time(),
        )
    # Authlib answers invalid_request here, Microsoft invalid_grant (AADSTS50126): both final.
    assert caught.value.permanent
    assert "wrong" not in str(caught.value)


async def test_client_credentials(authserver: AuthServer, http: httpx.AsyncClient) -> None:
    authserver.add_client("daemon", secret="s3cret")
    tokens = await request_token(
        http,
        account="ops",
        endpoint=authserver.token_url,
        form=grants.client_credentials("https://outlook.office365.com/.default"),
        auth=ClientSecretPost("daemon", "s3cret"),
        now=time.time(),
    )
    claims = authserver.verify(tokens.access_token)
    assert claims["sub"] == "daemon" and claims["scope"] == "https://outlook.office365.com/.default"
    assert tokens.refresh_token is None


async def test_jwt_bearer_grant_acts_for_the_mailbox(
    authserver: AuthServer, http: httpx.AsyncClient, rsa_keys: KeyPair
) -> None:
    sa = "notifier@project.iam.gserviceaccount.com"
    authserver.add_service_account(sa, rsa_keys.public_pem, "key-1", subjects=[USER])
    assertion = grants.jwt_bearer_assertion(
        key=load_private_key(rsa_keys.private_pem, "test"),
        alg="RS256",
        kid="key-1",
        issuer=sa,
        subject=USER,
        audience=authserver.token_url,
        scope="https://mail.google.com/",
        now=time.time(),
    )
    tokens = await request_token(
        http,
        account="ops",
        endpoint=authserver.token_url,
        form=grants.jwt_bearer(assertion, "https://mail.google.com/"),
        auth=NoClientAuth(),
        now=time.time(),
    )
    assert authserver.verify(tokens.access_token)["sub"] == USER
    assert authserver.token_requests["jwt_bearer"] == 1


async def test_jwt_bearer_for_a_mailbox_without_delegation_is_refused(
    authserver: AuthServer, http: httpx.AsyncClient, rsa_keys: KeyPair
) -> None:
    sa = "notifier@project.iam.gserviceaccount.com"
    authserver.add_user("bob@example.com", "x")
    authserver.add_service_account(sa, rsa_keys.public_pem, "key-1", subjects=[USER])
    assertion = grants.jwt_bearer_assertion(
        key=load_private_key(rsa_keys.private_pem, "test"),
        alg="RS256",
        kid="key-1",
        issuer=sa,
        subject="bob@example.com",
        audience=authserver.token_url,
        scope="",
        now=time.time(),
    )
    with pytest.raises(TokenEndpointError) as caught:
        await request_token(
            http,
            account="ops",
            endpoint=authserver.token_url,
            form=grants.jwt_bearer(assertion),
            auth=NoClientAuth(),
            now=time.time(),
        )
    assert caught.value.permanent


async def _device_start(
    server: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> tuple[AuthorizationFlows, ModeSpec, grants.DeviceAuthorization]:
    server.add_client("app", secret="s3cret")
    flows = AuthorizationFlows(store, http)
    spec = _code_spec(server)
    return flows, spec, await flows.start_device("ops", spec)


async def test_device_grant_waits_for_approval_then_stores_tokens(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    flows, spec, device = await _device_start(authserver, store, http)
    assert device.verification_uri == authserver.verification_url and device.user_code
    polls = 0

    async def sleep(_: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 3:  # two answers of authorization_pending, then the user approves
            authserver.approve_device(device.user_code, USER, PASSWORD)

    await flows.poll_device("ops", spec, device, sleep=sleep)
    stored = await store.get("ops")
    assert stored is not None and stored.refresh_token
    assert authserver.token_requests["device_code"] == 3


async def test_device_grant_slows_down_when_told(
    store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    with AuthServer(device_interval_s=0, device_min_poll_s=0.2) as server:
        server.add_user(USER, PASSWORD)
        flows, spec, device = await _device_start(server, store, http)
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if seconds:
                await _real_sleep(seconds)
            if len(waits) == 3:
                server.approve_device(device.user_code, USER, PASSWORD)

        await flows.poll_device("ops", spec, device, slow_down_step_s=0.25, sleep=sleep)
    # The first two polls come back to back: the second is told slow_down, so waits grow.
    assert waits[:2] == [0.0, 0.0] and waits[2] == 0.25
    assert await store.get("ops") is not None


async def test_device_code_expiry_is_reported(
    store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    with AuthServer(device_interval_s=0, device_expires_in_s=1) as server:
        server.add_user(USER, PASSWORD)
        flows, spec, device = await _device_start(server, store, http)
        with pytest.raises(AuthorizationFlowError, match="expired before it was approved"):
            await flows.poll_device("ops", spec, device, sleep=lambda _: _real_sleep(0.3))
    assert await store.get("ops") is None


async def test_device_denial_is_reported(
    authserver: AuthServer, store: FileTokenStore, http: httpx.AsyncClient
) -> None:
    flows, spec, device = await _device_start(authserver, store, http)
    authserver.approve_device(device.user_code, USER, PASSWORD, allow=False)
    with pytest.raises(AuthorizationFlowError, match="denied"):
        await flows.poll_device("ops", spec, device, sleep=lambda _: _real_sleep(0))


async def test_device_authorization_names_the_client(
    authserver: AuthServer, http: httpx.AsyncClient
) -> None:
    authserver.add_client("public-app")
    device = await request_device_authorization(
        http,
        account="ops",
        endpoint=authserver.device_authorization_url,
        form=grants.device_authorization("smtp"),
        auth=NoClientAuth("public-app"),
        now=time.time(),
        audience=authserver.token_url,
    )
    assert device.verification_uri_complete.endswith(device.user_code)


async def _real_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
