"""The OAuth2 pages: `/oauth2/` lists the accounts, Authorize sends the admin to the provider,
`/oauth2/callback` stores the tokens (the analogue of innovaphone's OAUTH2-CLIENT/auth.htm), and
"Send test mail" proves the account sends.

All behind the admin guard. The state parameter is single-use and expires (see
`AuthorizationFlows`); the actions that change something are POSTs carrying a form token (an
HMAC under a per-process key) that another site cannot read, so it cannot forge them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from notifier import __version__
from notifier.log import get_logger
from notifier.mail.testmail import TestMailError, describe_report
from notifier.oauth2.errors import OAuth2Error, TokenEndpointError, explain
from notifier.web.forms import FormToken, checked_form
from notifier.web.guard import AdminGuard
from notifier.web.render import NO_STORE
from notifier.web.render import page as render_page
from notifier.web.view import ServiceView

log = get_logger("notifier.web")


@dataclass(frozen=True)
class Notice:
    """The box at the top of the page after an action."""

    ok: bool
    title: str
    text: str = ""
    lines: list[str] = field(default_factory=list)
    test_account: str = ""  # offer "Send test mail" for this account


async def account_rows(service: ServiceView) -> list[dict[str, Any]]:
    return await service.oauth2.status_rows() if service.oauth2 else []


def oauth2_routes(service: ServiceView, guard: AdminGuard, token: FormToken) -> list[BaseRoute]:

    async def page(notice: Notice | None = None, status_code: int = 200) -> Response:
        return render_page(
            "oauth2.html.j2",
            status_code,
            version=__version__,
            accounts=await account_rows(service),
            csrf=token.value,
            notice=notice,
        )

    async def checked(request: Request) -> dict[str, str] | Response:
        return await checked_form(request, token, "/oauth2/")

    async def index(request: Request) -> Response:
        return await page()

    async def authorize(request: Request) -> Response:
        form = await checked(request)
        if isinstance(form, Response):
            return form
        runtime = service.oauth2
        name = form.get("account", "")
        provider = runtime.providers.get(name) if runtime else None
        if runtime is None or provider is None:
            return await page(Notice(False, f"No OAuth2 account named {name!r}."), 404)
        if not provider.spec.interactive:
            # Nothing to sign in to: fetch a token now so the page shows whether it works.
            try:
                await provider.token()
            except OAuth2Error as e:
                return await page(Notice(False, f"Account {name}: no token", str(e)))
            _nudge(service, name)
            return await page(
                Notice(True, f"Account {name}: the provider issued a token.", test_account=name)
            )
        try:
            url, _ = runtime.flows.start_authorization(
                name, provider.spec, runtime.redirect_uri_for(name)
            )
        except OAuth2Error as e:
            return await page(Notice(False, f"Account {name}: cannot start the sign-in", str(e)))
        log.info("oauth2 sign-in started", account=name, page="/oauth2/")
        return RedirectResponse(url, status_code=303, headers=NO_STORE)

    async def callback(request: Request) -> Response:
        runtime = service.oauth2
        params = request.query_params
        state = params.get("state", "")
        name = runtime.flows.pending_account(state) if runtime and state else None
        if runtime is None:
            return await page(Notice(False, "No account uses OAuth2."), 404)
        if "error" in params:
            reason = explain(params["error"], params.get("error_description", ""))
            if name:  # the state is spent: a new sign-in starts from the button
                runtime.flows.discard(state)
            return await page(
                Notice(False, f"The provider refused the sign-in{_for(name)}", reason)
            )
        code = params.get("code", "")
        if not code or name is None:
            return await page(
                Notice(
                    False,
                    "This sign-in is unknown, already used or expired.",
                    "Start it again with Authorize. If it was started by `notifier oauth2 "
                    "authorize` in a shell, paste this page's address there instead.",
                ),
                400,
            )
        try:
            await runtime.flows.complete_authorization(state, code)
        except TokenEndpointError as e:
            return await page(
                Notice(False, f"Account {name}: the provider refused the code", e.advice)
            )
        except OAuth2Error as e:
            return await page(Notice(False, f"Account {name}: sign-in not completed", str(e)))
        provider = runtime.providers.get(name)
        if provider is not None:
            try:
                await provider.token()  # the token just stored; clears an earlier failure
            except OAuth2Error as e:
                return await page(Notice(False, f"Account {name}: signed in, but no token", str(e)))
        _nudge(service, name)
        return await page(
            Notice(
                True,
                f"Account {name} is authorized.",
                "The tokens are stored encrypted; mails waiting for this account go out now.",
                test_account=name,
            )
        )

    async def test_mail(request: Request) -> Response:
        form = await checked(request)
        if isinstance(form, Response):
            return form
        name = form.get("account", "")
        if service.dispatcher is None:
            return await page(Notice(False, "The service is not running its routes."), 503)
        try:
            report = await service.dispatcher.send_test(name, form.get("to", "").strip())
        except TestMailError as e:
            return await page(Notice(False, f"Account {name}: no test mail sent", str(e)))
        lines = describe_report(report)
        if report.ok and report.result is not None:
            title = f"Test mail accepted for {', '.join(report.result.accepted)}."
        else:
            title = f"Account {name}: the test mail was not sent."
        log.info("test mail from the oauth2 page", account=name, ok=report.ok)
        return await page(Notice(report.ok, title, lines=lines, test_account=name))

    return [
        Route("/oauth2", guard(index), methods=["GET"]),
        Route("/oauth2/", guard(index), methods=["GET"]),
        Route("/oauth2/authorize", guard(authorize), methods=["POST"]),
        Route("/oauth2/callback", guard(callback), methods=["GET"]),
        Route("/oauth2/test-mail", guard(test_mail), methods=["POST"]),
    ]


def _for(name: str | None) -> str:
    return f" for account {name}" if name else ""


def _nudge(service: ServiceView, account: str) -> None:
    """Mails that waited for this account go out now, not at their next retry time."""
    if service.dispatcher is not None:
        service.dispatcher.nudge(account)
