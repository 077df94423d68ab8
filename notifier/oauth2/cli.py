"""`notifier oauth2 authorize | status | revoke`: the CLI side of signing accounts in.

The CLI runs beside the service, not inside it: both open the same encrypted store (in
`data_dir`, or the shared database with the PostgreSQL spool), and the running service reads
the store afresh whenever it needs a token, so a sign-in done here is what its next mail uses.
Output never contains a token, code or secret.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from notifier.config import Settings
from notifier.oauth2.errors import (
    AuthorizationFlowError,
    OAuth2Error,
    TokenEndpointError,
    explain,
)
from notifier.oauth2.loopback import PortBusy, RedirectCatcher, loopback_target
from notifier.oauth2.provider import AccountTokenProvider
from notifier.oauth2.runtime import OAuth2Runtime, oauth2_accounts, when

Print = Callable[[str], None]
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
SIGN_IN_TIMEOUT_S = 600.0


def _out(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(f"notifier: {line}", file=sys.stderr, flush=True)


async def _open(settings: Settings, account: str) -> tuple[OAuth2Runtime, AccountTokenProvider]:
    runtime = await OAuth2Runtime.open(settings)
    names = [a.name for a in oauth2_accounts(settings)]
    if runtime is not None and account not in runtime.providers:
        await runtime.close()
    if runtime is None or account not in runtime.providers:
        raise AuthorizationFlowError(
            f"account {account!r} has no [accounts.oauth2] mode"
            + (f" (OAuth2 accounts: {', '.join(names)})" if names else "")
        )
    return runtime, runtime.providers[account]


def authorize(
    settings: Settings,
    account: str,
    *,
    device: bool = False,
    timeout_s: float = SIGN_IN_TIMEOUT_S,
    out: Print = _out,
) -> int:
    """Sign `account` in: browser + redirect caught on loopback (or pasted), or the device
    grant. Non-interactive modes just fetch a token to show that the settings work."""
    try:
        return asyncio.run(_authorize(settings, account, device, timeout_s, out))
    except OAuth2Error as e:
        _err(str(e))
        return EXIT_FAIL


async def _authorize(
    settings: Settings, account: str, device: bool, timeout_s: float, out: Print
) -> int:
    runtime, provider = await _open(settings, account)
    try:
        spec = provider.spec
        if not spec.interactive:
            out(f"account {account}: mode {spec.mode} needs no sign-in; asking for a token now")
            await provider.token()
            status = provider.status()
            out(
                f"account {account}: token endpoint answered with a token valid until "
                f"{when(status['expires_at'])}"
            )
            return EXIT_OK
        if device:
            grant = await runtime.flows.start_device(account, spec)
            out(f"On any device, open {grant.verification_uri}")
            if grant.verification_uri_complete:
                out(f"  (or {grant.verification_uri_complete})")
            out(f"and enter the code {grant.user_code} (valid until {when(grant.expires_at)}).")
            out("Waiting for the approval ...")
            await runtime.flows.poll_device(account, spec, grant)
        else:
            await _browser_sign_in(runtime, account, timeout_s, out)
        out(
            f"account {account} is authorized; the tokens are stored encrypted in "
            f"{runtime.store.where} (a running notifier uses them for its next mail)"
        )
        return EXIT_OK
    finally:
        await runtime.close()


async def _browser_sign_in(
    runtime: OAuth2Runtime, account: str, timeout_s: float, out: Print
) -> None:
    provider = runtime.providers[account]
    redirect = runtime.redirect_uri_for(account)
    url, state = runtime.flows.start_authorization(account, provider.spec, redirect)
    target = loopback_target(redirect)
    catcher: RedirectCatcher | None = None
    busy = ""
    if target is not None:
        catcher = RedirectCatcher(*target)
        try:
            await catcher.start()
        except (PortBusy, OSError) as e:
            busy, catcher = str(e), None
    out(f"Open this URL in a browser and sign in as {provider.spec.login_hint or 'the mailbox'}:")
    out("")
    out(f"  {url}")
    out("")
    if catcher is not None:
        out(f"Waiting for the sign-in to come back to {redirect} ...")
        try:
            params = await catcher.wait(timeout_s)
        finally:
            await catcher.close()
    else:
        if busy:
            page = redirect.rsplit("/", 1)[0] + "/"
            out(
                f"The redirect port is in use ({busy}), probably by the running notifier: you "
                f"can sign in on its page {page} instead (Authorize button)."
            )
        if not sys.stdin.isatty():
            raise AuthorizationFlowError(
                f"cannot catch the redirect to {redirect} here: use the web page, or run this "
                "in a terminal to paste the address"
            )
        out(
            f"After signing in, the browser is sent to {redirect}?code=... (the page may fail "
            "to load). Paste that whole address here:"
        )
        line = await asyncio.to_thread(sys.stdin.readline)
        params = dict(parse_qsl(urlsplit(line.strip()).query))
    await _complete(runtime, state, params)


async def _complete(runtime: OAuth2Runtime, state: str, params: dict[str, str]) -> None:
    if "error" in params:
        raise AuthorizationFlowError(
            "the provider refused the sign-in: "
            + explain(params["error"], params.get("error_description", ""))
        )
    if params.get("state") != state:
        raise AuthorizationFlowError(
            "the address does not belong to this sign-in (state differs): start again"
        )
    if not params.get("code"):
        raise AuthorizationFlowError("the address carries no code: start again")
    await runtime.flows.complete_authorization(state, params["code"])


def status_rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per OAuth2 account (`OAuth2Runtime.status_rows`)."""
    return asyncio.run(_status_rows(settings))


async def _status_rows(settings: Settings) -> list[dict[str, Any]]:
    runtime = await OAuth2Runtime.open(settings)
    if runtime is None:
        return []
    try:
        return await runtime.status_rows()
    finally:
        await runtime.close()


def status(settings: Settings, out: Print = _out) -> int:
    """A table of the OAuth2 accounts; exit 1 when any needs a person."""
    try:
        rows = status_rows(settings)
    except OAuth2Error as e:
        _err(str(e))
        return EXIT_FAIL
    if not rows:
        out("no account uses OAuth2")
        return EXIT_OK
    table = [("account", "mode", "state", "token expires", "last refresh", "reason")]
    for r in rows:
        table.append(
            (
                str(r["account"]),
                str(r["mode"]),
                str(r["state"]),
                str(r["expires"]),
                str(r["refreshed"]),
                str(r["last_error"] or "-"),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[5])
    return EXIT_OK if all(r["state"] == "ok" for r in rows) else EXIT_FAIL


def revoke(settings: Settings, account: str, out: Print = _out) -> int:
    """Delete the account's stored tokens; first revoke the refresh token at the provider
    when the mode has a revocation endpoint (Google). Microsoft has none: remove the app's
    consent in Entra ID (or revoke the user's sessions) to invalidate it there too."""
    try:
        return asyncio.run(_revoke(settings, account, out))
    except OAuth2Error as e:
        _err(str(e))
        return EXIT_FAIL


async def _revoke(settings: Settings, account: str, out: Print) -> int:
    runtime, provider = await _open(settings, account)
    try:
        stored = await runtime.store.get(account)
        spec = provider.spec
        if stored is not None and stored.refresh_token and spec.revocation_url:
            await _revoke_at_provider(runtime.http, spec.revocation_url, stored.refresh_token)
            out(f"account {account}: the refresh token was revoked at {spec.revocation_url}")
        elif stored is not None and stored.refresh_token:
            out(
                f"account {account}: mode {spec.mode} has no revocation endpoint; the grant "
                "stays valid at the provider until it expires or consent is removed there"
            )
        found = await runtime.store.delete(account)
        out(
            f"account {account}: stored tokens deleted"
            if found
            else f"account {account}: no tokens were stored"
        )
        return EXIT_OK
    finally:
        await runtime.close()


async def _revoke_at_provider(http: httpx.AsyncClient, url: str, refresh_token: str) -> None:
    """RFC 7009 §2.1. The token goes in the body only; errors never echo it."""
    try:
        response = await http.post(
            url, data={"token": refresh_token, "token_type_hint": "refresh_token"}
        )
    except httpx.HTTPError as e:
        raise TokenEndpointError("-", url, "unreachable", type(e).__name__, None) from None
    # 200: revoked; 400 invalid_token: already gone — both leave nothing to revoke.
    if response.status_code not in (200, 400):
        raise TokenEndpointError("-", url, f"http_{response.status_code}", "", response.status_code)
