"""What the pages need from the running service, as Protocols owned by web/.

`notifier.app.Service` satisfies `ServiceView` structurally, so the pages never import the app
(which imports the pages to assemble its routes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from notifier.config import Settings
from notifier.dispatch.mutes import Mutes
from notifier.mail.transport import MailTransport, SendReport
from notifier.oauth2.runtime import OAuth2Runtime
from notifier.spool.base import Spool
from notifier.spool.cluster import Cluster
from notifier.spool.state import StateStore


class RouteControl(Protocol):
    """The route workers as the pages see them."""

    @property
    def transports(self) -> Mapping[str, MailTransport]:
        """Each account's transport (its `health` for the status page)."""
        ...

    def status(self) -> list[dict[str, Any]]:
        """One row per route for the status page."""
        ...

    def nudge(self, account: str) -> None:
        """Mails waiting for `account` go out now (it was just signed in)."""
        ...

    async def send_test(self, account: str = "", to: str = "") -> SendReport:
        """The test mail through the account's transport; raises `TestMailError`."""
        ...


class ForwardControl(Protocol):
    """The forwards as the pages see them."""

    def status(self) -> list[dict[str, Any]]:
        """One row per forward: kind, endpoint, state, sent, failures, times, last error."""
        ...


class ServiceView(Protocol):
    """The running service, read-only."""

    @property
    def settings(self) -> Settings: ...

    @property
    def spool(self) -> Spool | None: ...

    @property
    def dispatcher(self) -> RouteControl | None: ...

    @property
    def forwards(self) -> ForwardControl | None: ...

    @property
    def oauth2(self) -> OAuth2Runtime | None: ...

    @property
    def cluster(self) -> Cluster | None: ...

    @property
    def mutes(self) -> Mutes | None:
        """The silences and acks this instance's routes and forwards apply."""
        ...

    @property
    def state(self) -> StateStore | None:
        """The shared state: alarm states, silences, acknowledgements."""
        ...

    @property
    def started_at(self) -> float: ...

    @property
    def listening(self) -> Mapping[str, str]: ...
