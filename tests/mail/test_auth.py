"""AUTH mechanisms as bytes, and the choice of mechanism."""

from __future__ import annotations

import base64

import pytest

from notifier.mail.auth import (
    AuthUnavailable,
    Mechanism,
    choose_mechanism,
    describe_error_challenge,
    login_responses,
    oauthbearer_response,
    plain_response,
    xoauth2_response,
)


def test_xoauth2_initial_response_is_the_documented_format() -> None:
    blob = base64.b64decode(xoauth2_response("ops@example.com", "ya29.token"))
    assert blob == b"user=ops@example.com\x01auth=Bearer ya29.token\x01\x01"


def test_oauthbearer_initial_response_follows_rfc_7628() -> None:
    blob = base64.b64decode(oauthbearer_response("ops@example.com", "tok", "smtp.example.com", 587))
    assert blob == (
        b"n,a=ops@example.com,\x01host=smtp.example.com\x01port=587\x01auth=Bearer tok\x01\x01"
    )
    escaped = base64.b64decode(oauthbearer_response("a,b=c", "t", "h", 1))
    assert escaped.startswith(b"n,a=a=2Cb=3Dc,\x01")


def test_plain_and_login() -> None:
    assert base64.b64decode(plain_response("user", "pässword")) == b"\0user\0p\xc3\xa4ssword"
    assert login_responses("u", "p") == (b"dQ==", b"cA==")


def test_error_challenge_is_decoded_for_the_log() -> None:
    challenge = base64.b64encode(b'{"status":"400","schemes":"Bearer"}').decode()
    assert describe_error_challenge(challenge) == "status=400, schemes=Bearer"
    assert describe_error_challenge("not base64!") == "not base64!"


def choose(
    offered: list[str],
    *,
    has_password: bool = False,
    has_token: bool = False,
    encrypted: bool = True,
    allow_plaintext: bool = False,
) -> Mechanism | None:
    return choose_mechanism(
        offered,
        has_password=has_password,
        has_token=has_token,
        encrypted=encrypted,
        allow_plaintext=allow_plaintext,
    )


def test_no_credentials_means_no_auth() -> None:
    assert choose(["PLAIN"]) is None


def test_plain_first_then_login() -> None:
    assert choose(["login", "plain"], has_password=True) is Mechanism.PLAIN
    assert choose(["LOGIN", "CRAM-MD5"], has_password=True) is Mechanism.LOGIN


def test_token_prefers_the_configured_mechanism_then_the_other() -> None:
    assert choose(["XOAUTH2", "OAUTHBEARER"], has_token=True) is Mechanism.XOAUTH2
    assert choose(["OAUTHBEARER"], has_token=True) is Mechanism.OAUTHBEARER
    assert (
        choose_mechanism(
            ["XOAUTH2", "OAUTHBEARER"],
            has_password=False,
            has_token=True,
            preferred_token_mechanism=Mechanism.OAUTHBEARER,
            encrypted=True,
            allow_plaintext=False,
        )
        is Mechanism.OAUTHBEARER
    )


def test_unencrypted_credentials_are_refused_unless_allowed() -> None:
    with pytest.raises(AuthUnavailable, match="unencrypted"):
        choose(["PLAIN"], has_password=True, encrypted=False)
    assert choose(["PLAIN"], has_password=True, encrypted=False, allow_plaintext=True) is (
        Mechanism.PLAIN
    )


def test_no_usable_mechanism_says_what_is_offered() -> None:
    with pytest.raises(AuthUnavailable, match="offers AUTH CRAM-MD5 but not PLAIN or LOGIN"):
        choose(["CRAM-MD5"], has_password=True)
    with pytest.raises(AuthUnavailable, match="offers no AUTH"):
        choose([], has_token=True)
