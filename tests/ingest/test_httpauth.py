"""Basic (RFC 7617) and Digest (RFC 7616) checks, without a server."""

from __future__ import annotations

import base64
from urllib.request import parse_http_list, parse_keqv_list

import pytest

from notifier.ingest.httpauth import HttpAuth, digest_response

USERS = {"gw01": "s3cret", "müller": "pässword"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def challenge_params(auth: HttpAuth, algorithm: str) -> dict[str, str]:
    [value] = [c for c in auth.challenges() if f"algorithm={algorithm}," in c]
    scheme, _, rest = value.partition(" ")
    assert scheme == "Digest"
    return parse_keqv_list(parse_http_list(rest))


def digest_header(
    auth: HttpAuth,
    algorithm: str = "SHA-256",
    *,
    user: str = "gw01",
    password: str = "s3cret",
    uri: str = "/alarm?x=1",
    nc: str = "00000001",
    nonce: str | None = None,
) -> str:
    params = challenge_params(auth, algorithm)
    nonce = nonce or params["nonce"]
    response = digest_response(
        algorithm, user=user, realm=params["realm"], password=password, method="POST",
        uri=uri, nonce=nonce, nc=nc, cnonce="abcdef0123",
    )  # fmt: skip
    return (
        f'Digest username="{user}", realm="{params["realm"]}", nonce="{nonce}", uri="{uri}", '
        f'algorithm={algorithm}, qop=auth, nc={nc}, cnonce="abcdef0123", '
        f'response="{response}", opaque="{params["opaque"]}"'
    )


def test_digest_response_matches_the_rfc_7616_examples() -> None:
    example = dict(
        user="Mufasa", realm="http-auth@example.org", password="Circle of Life", method="GET",
        uri="/dir/index.html", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        nc="00000001", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )  # fmt: skip
    assert digest_response("MD5", **example) == "8ca523f5e9506fed4657c9700eebdbec"
    assert (
        digest_response("SHA-256", **example)
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_digest_offers_sha256_first_then_md5_with_qop_auth() -> None:
    challenges = HttpAuth("digest", USERS).challenges()
    assert [c.split("algorithm=")[1].split(",")[0] for c in challenges] == ["SHA-256", "MD5"]
    assert all('qop="auth"' in c and 'realm="notifier"' in c for c in challenges)


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_digest_right_password_passes(algorithm: str) -> None:
    auth = HttpAuth("digest", USERS)
    result = auth.check("POST", "/alarm?x=1", digest_header(auth, algorithm))
    assert result.ok
    assert result.user == "gw01"


def test_digest_non_ascii_user_and_password() -> None:
    auth = HttpAuth("digest", USERS)
    header = digest_header(auth, user="müller", password="pässword")
    assert auth.check("POST", "/alarm?x=1", header).ok


def test_digest_wrong_password_fails_and_is_not_stale() -> None:
    auth = HttpAuth("digest", USERS)
    result = auth.check("POST", "/alarm?x=1", digest_header(auth, password="guess"))
    assert not result.ok
    assert not result.stale
    assert result.reason == "wrong user name or password"


def test_digest_unknown_user_fails_like_a_wrong_password() -> None:
    auth = HttpAuth("digest", USERS)
    result = auth.check("POST", "/alarm?x=1", digest_header(auth, user="intruder"))
    assert not result.ok
    assert result.reason == "wrong user name or password"


def test_digest_signed_for_another_uri_fails() -> None:
    auth = HttpAuth("digest", USERS)
    assert not auth.check("POST", "/log", digest_header(auth, uri="/alarm?x=1")).ok


def test_expired_nonce_with_the_right_password_is_stale() -> None:
    clock = Clock()
    auth = HttpAuth("digest", USERS, nonce_ttl_s=300, clock=clock)
    header = digest_header(auth)
    clock.now += 301
    result = auth.check("POST", "/alarm?x=1", header)
    assert not result.ok
    assert result.stale
    assert any("stale=true" in c for c in auth.challenges(stale=True))


def test_nonce_from_another_process_is_stale_not_a_wrong_password() -> None:
    before_restart = HttpAuth("digest", USERS)
    after_restart = HttpAuth("digest", USERS)
    result = after_restart.check("POST", "/alarm?x=1", digest_header(before_restart))
    assert not result.ok
    assert result.stale


def test_replayed_nonce_count_fails_and_a_new_count_passes() -> None:
    auth = HttpAuth("digest", USERS)
    nonce = challenge_params(auth, "SHA-256")["nonce"]
    first = digest_header(auth, nonce=nonce, nc="00000001")
    assert auth.check("POST", "/alarm?x=1", first).ok
    replay = auth.check("POST", "/alarm?x=1", first)
    assert not replay.ok
    assert "replayed" in replay.reason
    assert auth.check("POST", "/alarm?x=1", digest_header(auth, nonce=nonce, nc="00000002")).ok


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Digest",
        'Digest username="gw01"',
        "Digest ===,,,",
        "Basic Z3cwMTpzM2NyZXQ=",
        "Bearer abc",
        "Digest " + "x" * 5000,
    ],
)
def test_malformed_digest_credentials_fail_without_raising(header: str | None) -> None:
    assert not HttpAuth("digest", USERS).check("POST", "/alarm", header).ok


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_right_and_wrong_password() -> None:
    auth = HttpAuth("basic", USERS)
    assert auth.check("GET", "/log", basic("gw01", "s3cret")).ok
    assert auth.check("GET", "/log", basic("müller", "pässword")).ok
    assert not auth.check("GET", "/log", basic("gw01", "s3cret ")).ok
    assert not auth.check("GET", "/log", basic("nobody", "s3cret")).ok
    assert auth.challenges() == ['Basic realm="notifier", charset="UTF-8"']


@pytest.mark.parametrize("header", ["Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()])
def test_malformed_basic_credentials_fail(header: str) -> None:
    assert not HttpAuth("basic", USERS).check("GET", "/log", header).ok


def test_configuration_mistakes_are_named() -> None:
    with pytest.raises(ValueError, match="unknown HTTP auth mode"):
        HttpAuth("ntlm", USERS)
    with pytest.raises(ValueError, match="at least one user"):
        HttpAuth("digest", {})
    with pytest.raises(ValueError, match="SHA-512"):
        HttpAuth("digest", USERS, algorithms=("SHA-512",))
