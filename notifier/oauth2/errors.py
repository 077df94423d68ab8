"""OAuth2 failures: which are worth retrying, and what a person should do about the others.

Token endpoints answer with an RFC 6749 §5.2 error code plus a free-text description; Microsoft
puts an AADSTS code at the front of the description, Google a short sentence. `explain` turns
the common ones into plain words; `is_permanent` decides between "retry later" and "a person
must act" (the account then needs authorization and its mails wait in the spool).
"""

from __future__ import annotations

import re

# Errors that retrying cannot fix: re-authorization or a configuration change is needed.
# Everything else the endpoint says in 5xx / 429 / temporarily_unavailable is worth a retry.
_TEMPORARY_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})

_AADSTS = re.compile(r"\bAADSTS(\d+)\b")

# AADSTS code -> what it means for the person running the service.
AADSTS_ADVICE: dict[str, str] = {
    "50126": "the user name or password is wrong (check resource_owner and its password)",
    "50034": "the mailbox user does not exist in this tenant (check resource_owner and tenant)",
    "50053": "the account is locked after too many sign-in attempts; wait or unlock it",
    "50055": "the user's password has expired; set a new one and update the config",
    "50057": "the user account is disabled in Entra ID",
    "50076": "multi-factor authentication is required for this user, so the password grant "
    "(mode microsoft365) cannot work: use mode exchange (interactive) or microsoft365_app",
    "50079": "the user must register for multi-factor authentication, so the password grant "
    "(mode microsoft365) cannot work: use mode exchange (interactive) or microsoft365_app",
    "50158": "an external security challenge (conditional access) blocks the sign-in",
    "50173": "the grant was revoked, typically after a password change: authorize again",
    "53003": "a conditional access policy blocks this sign-in; ask the tenant administrator",
    "54005": "this authorization code was already used: start the authorization again",
    "65001": "the user or an administrator has not consented to the app's permissions "
    "(SMTP.Send): grant consent in Entra ID or authorize again with an admin account",
    "70000": "the grant is invalid or expired: authorize again",
    "70008": "the refresh token or authorization code expired (unused too long): authorize again",
    "70011": "the requested scope is not valid for this app (check scope)",
    "700016": "no application with this client_id exists in the tenant (check client_id and "
    "tenant)",
    "700024": "the client assertion is outside its valid time range: check the system clock",
    "700027": "the client assertion signature is not valid: upload the certificate that "
    "matches private_key_file to the app registration",
    "700082": "the refresh token expired (unused for 90 days): authorize again",
    "7000215": "the client secret is wrong (use the secret's Value, not its Secret ID)",
    "7000218": "the app needs a client secret or certificate, or 'Allow public client flows' "
    "enabled in its registration",
    "7000222": "the client secret has expired: create a new one in the app registration and "
    "set client_secret",
    "90002": "the tenant does not exist (check tenant)",
    "500011": "the SMTP resource is not in the tenant: Exchange Online may not be licensed",
}

# Google says what went wrong in the description; match on its wording ("$": the whole text).
_GOOGLE_ADVICE: tuple[tuple[str, str], ...] = (
    (
        "token has been expired or revoked",
        "Google expired or revoked the refresh token (unused for 6 months, a password change, "
        "access removed by the user, or 7 days while the app is in 'Testing'): authorize again",
    ),
    (
        "invalid jwt signature",
        "Google rejected the service-account key's signature: the key was deleted or "
        "private_key does not match private_key_id",
    ),
    (
        "short-lived token",
        "Google rejected the assertion's time range: check the system clock",
    ),
    (
        "client is unauthorized to retrieve access tokens",
        "the service account may not act for this mailbox: enable domain-wide delegation "
        "for scope https://mail.google.com/ in the Google Workspace admin console",
    ),
    ("the oauth client was not found", "the client_id is unknown to Google (check client_id)"),
    ("unauthorized$", "the client secret is wrong (check client_secret)"),
)

_GENERIC_ADVICE: dict[str, str] = {
    "invalid_grant": "the grant (refresh token, code or password) is invalid, expired or "
    "revoked: authorize again",
    "invalid_client": "the client authentication failed (check client_id, the secret or the "
    "private key)",
    "unauthorized_client": "the client is not allowed to use this grant (check the app's "
    "registration)",
    "consent_required": "consent to the app's permissions is missing: authorize again",
    "interaction_required": "the provider requires an interactive sign-in: authorize again",
    "login_required": "the provider requires an interactive sign-in: authorize again",
    "access_denied": "the authorization was denied",
    "invalid_scope": "the requested scope is not valid (check scope)",
    "invalid_request": "the provider refused the request as malformed (check the endpoint, "
    "client_id and scope)",
    "unsupported_grant_type": "the provider does not support this grant (check mode / grant)",
    "expired_token": "the device code expired before the user approved it: start again",
    "temporarily_unavailable": "the provider is temporarily unavailable",
    "server_error": "the provider had an internal error",
}


def first_sentence(description: str, limit: int = 200) -> str:
    """Microsoft appends trace and correlation ids on further lines: keep the first line."""
    text = description.strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def explain(error: str, description: str = "") -> str:
    """Plain words for a token-endpoint error, e.g. ("invalid_grant", "AADSTS70008: ...")."""
    match = _AADSTS.search(description)
    if match and match.group(1) in AADSTS_ADVICE:
        return f"AADSTS{match.group(1)}: {AADSTS_ADVICE[match.group(1)]}"
    lowered = description.strip().lower()
    for needle, advice in _GOOGLE_ADVICE:
        if lowered == needle.removesuffix("$") if needle.endswith("$") else needle in lowered:
            return advice
    if match:
        return first_sentence(description)
    if error in _GENERIC_ADVICE:
        return _GENERIC_ADVICE[error]
    if error.startswith("http_"):
        return f"the token endpoint answered HTTP {error.removeprefix('http_')}"
    if error == "unreachable":
        return f"the token endpoint could not be reached ({first_sentence(description)})"
    shown = first_sentence(description)
    return f"{error}: {shown}" if shown else error


def is_permanent(status: int | None, error: str) -> bool:
    """True when retrying cannot help: a person must re-authorize or fix the configuration."""
    if error in _TEMPORARY_ERRORS or error == "unreachable":
        return False
    return not (status is not None and (status >= 500 or status in (408, 429)))


class OAuth2Error(Exception):
    """Base of every error this package raises. Messages never contain a secret."""


class TokenEndpointError(OAuth2Error):
    """The token (or device authorization) endpoint refused a request or could not be reached."""

    def __init__(
        self, account: str, endpoint: str, error: str, description: str, status: int | None
    ) -> None:
        self.account = account
        self.endpoint = endpoint
        self.error = error
        self.description = first_sentence(description)
        self.status = status
        self.permanent = is_permanent(status, error)
        self.advice = explain(error, description)
        super().__init__(
            f"account {account}: token endpoint {endpoint} answered {error} ({self.advice})"
            if error != "unreachable"
            else f"account {account}: token endpoint {endpoint}: {self.advice}"
        )


class NeedsAuthorization(OAuth2Error):
    """Permanent: no token can be had until a person acts. Mails wait in the spool."""

    def __init__(self, account: str, reason: str) -> None:
        self.account = account
        self.reason = reason
        super().__init__(
            f"account {account} needs authorization: {reason}; "
            f"then run `notifier oauth2 authorize {account}`"
        )


class TokenUnavailable(OAuth2Error):
    """Temporary: the provider could not be reached or was failing; try again later."""

    def __init__(self, account: str, reason: str) -> None:
        self.account = account
        self.reason = reason
        super().__init__(f"account {account}: no access token for now: {reason}")


class OAuth2StoreError(OAuth2Error):
    """The encrypted token store cannot be read or written."""


class TokenStoreUnavailable(OAuth2StoreError):
    """Temporary: the store (the database) cannot be reached now; try again later."""


class ModeError(OAuth2Error):
    """The account's oauth2 settings are incomplete; one line per problem, each naming a key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class AuthorizationFlowError(OAuth2Error):
    """An interactive or device authorization could not be completed."""
