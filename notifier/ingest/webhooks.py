"""Who may post Alertmanager and Grafana webhooks: the decision, apart from the endpoint.

Alertmanager's `http_config` and Grafana's contact point send either ``Authorization: Bearer
<token>`` or HTTP Basic; `[webhooks]` names the token and/or the users. With neither set the
endpoints answer senders on loopback only (403 otherwise), so a notifier listening on all
addresses is never an open door for made-up alarms.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from notifier.ingest.httpauth import NO_CREDENTIALS, HttpAuth, is_loopback

REALM = "notifier webhooks"
_MAX_HEADER = 4096


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a webhook request may pass; when not, the status, a counter reason and a detail
    (never a secret), and the challenges a 401 carries."""

    ok: bool
    status: int = 200
    reason: str = ""
    detail: str = ""
    challenges: tuple[str, ...] = ()


PASS = Verdict(True)


class WebhookAuth:
    """Checks the Authorization header of a webhook against `[webhooks]`."""

    def __init__(self, bearer_token: str = "", users: Mapping[str, str] | None = None) -> None:
        self._token = bearer_token.encode("utf-8")
        self._basic = HttpAuth("basic", users, realm=REALM) if users else None
        challenges = []
        if self._token:
            challenges.append(f'Bearer realm="{REALM}"')
        if self._basic is not None:
            challenges += self._basic.challenges()
        self._challenges = tuple(challenges)

    @property
    def loopback_only(self) -> bool:
        return not self._token and self._basic is None

    def check(self, authorization: str | None, peer_host: str | None) -> Verdict:
        """The verdict for a request from `peer_host` carrying `authorization` (or None)."""
        if self.loopback_only:
            if is_loopback(peer_host):
                return PASS
            return Verdict(
                False,
                403,
                "not_loopback",
                "webhooks are taken from loopback only: set [webhooks] bearer_token or users "
                "to take them from other hosts",
            )
        if not authorization:
            return self._refuse("auth_challenge", NO_CREDENTIALS)
        if len(authorization) > _MAX_HEADER:
            return self._refuse("auth", "Authorization header too long")
        scheme, _, credentials = authorization.strip().partition(" ")
        match scheme.lower():
            case "bearer" if self._token:
                given = credentials.strip().encode("utf-8")
                if hmac.compare_digest(given, self._token):
                    return PASS
                return self._refuse("auth", "wrong bearer token")
            case "basic" if self._basic is not None:
                result = self._basic.check("POST", "", authorization)
                if result.ok:
                    return PASS
                user = f" (user {result.user[:64]!r})" if result.user else ""
                return self._refuse("auth", result.reason + user)
        accepted = " or ".join(c.split(" ", 1)[0] for c in self._challenges)
        return self._refuse("auth", f"expected {accepted} auth, got {scheme[:20]!r}")

    def _refuse(self, reason: str, detail: str) -> Verdict:
        return Verdict(False, 401, reason, detail, self._challenges)
