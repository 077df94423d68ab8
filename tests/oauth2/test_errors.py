"""Which token-endpoint errors are final, and the plain words a person reads."""

from __future__ import annotations

import pytest

from notifier.oauth2.errors import NeedsAuthorization, TokenEndpointError, explain, is_permanent


@pytest.mark.parametrize(
    ("error", "description", "words"),
    [
        (
            "invalid_grant",
            "AADSTS50126: Error validating credentials due to invalid username or password.",
            "user name or password is wrong",
        ),
        ("invalid_grant", "AADSTS65001: The user or administrator has not consented", "consented"),
        (
            "invalid_grant",
            "AADSTS70008: The provided authorization code or refresh token has "
            "expired due to inactivity.",
            "expired (unused too long): authorize again",
        ),
        (
            "invalid_grant",
            "AADSTS700082: The refresh token has expired due to inactivity.",
            "unused for 90 days",
        ),
        (
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
            "Value, not its Secret ID",
        ),
        (
            "invalid_client",
            "AADSTS7000222: The provided client secret keys are expired.",
            "create a new one",
        ),
        (
            "invalid_grant",
            "AADSTS50076: Due to a configuration change made by your administrator"
            ", you must use multi-factor authentication",
            "password grant",
        ),
        (
            "invalid_grant",
            "AADSTS50079: The user is required to use multi-factor authentication.",
            "mode exchange",
        ),
        ("invalid_grant", "Token has been expired or revoked.", "Google expired or revoked"),
        (
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this "
            "method, or client not authorized for any of the scopes requested.",
            "domain-wide delegation",
        ),
        ("invalid_client", "Unauthorized", "client secret is wrong"),
        ("invalid_grant", "", "authorize again"),
        ("http_503", "", "HTTP 503"),
    ],
)
def test_plain_words(error: str, description: str, words: str) -> None:
    assert words in explain(error, description)


def test_unknown_aadsts_keeps_only_the_first_line() -> None:
    text = explain("invalid_request", "AADSTS99999: Something new.\r\nTrace ID: abc\r\nTimestamp")
    assert text == "AADSTS99999: Something new."


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, "invalid_grant"),
        (401, "invalid_client"),
        (400, "unauthorized_client"),
        (400, "consent_required"),
        (400, "interaction_required"),
        (404, "http_404"),
    ],
)
def test_final_errors(status: int, error: str) -> None:
    assert is_permanent(status, error)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (503, "http_503"),
        (500, "server_error"),
        (429, "http_429"),
        (400, "temporarily_unavailable"),
        (None, "unreachable"),
        (502, "invalid_grant"),
    ],
)
def test_errors_worth_retrying(status: int | None, error: str) -> None:
    assert not is_permanent(status, error)


def test_messages_name_account_endpoint_and_the_way_out() -> None:
    error = TokenEndpointError(
        "ops", "https://login/token", "invalid_grant", "AADSTS70008: expired", 400
    )
    assert str(error).startswith(
        "account ops: token endpoint https://login/token answered invalid_grant (AADSTS70008:"
    )
    needs = NeedsAuthorization("ops", error.advice)
    assert str(needs).endswith("then run `notifier oauth2 authorize ops`")
