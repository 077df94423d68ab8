"""`notifier silence add|list|expire` and `notifier alarm list|ack`: the operator commands.

They talk to the running service over its admin API (`/api/v1/silences`, `/api/v1/alarms`), so
they act on the state every instance shares and need no access to the database. The URL is
`--url`, else the config's `http.listen`; the admin password comes from the config."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

import httpx

from notifier.config import Settings, host_port, parse_listen

# `silence add` flags -> matcher keys; each flag repeats.
MATCH_FLAGS = {
    "device": "devices",
    "code": "codes",
    "source": "sources",
    "severity": "severities",
    "receiver": "receivers",
    "route": "routes",
    "kind": "kinds",
}


class AdminError(Exception):
    """The service could not be reached, or said no; the message says what happened."""


def service_url(settings: Settings) -> str:
    """The base URL of the running service from `http.listen` (a wildcard means loopback)."""
    listen = parse_listen(settings.http.listen)
    if listen is None:
        raise AdminError("http.listen is disabled in the config: pass --url")
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "") else listen.host
    host = "::1" if host == "::" else host
    scheme = "https" if settings.http.tls_cert_file else "http"
    return f"{scheme}://{host_port(host, listen.port)}"


class AdminClient:
    """The admin API of one running notifier."""

    def __init__(self, base_url: str, password: str = "", verify: bool = True) -> None:
        self._base = base_url.rstrip("/")
        self._auth = httpx.BasicAuth("admin", password) if password else None
        self._verify = verify

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        url = f"{self._base}{path}"
        try:
            response = httpx.request(
                method,
                url,
                json=body,
                params=params,
                auth=self._auth,
                timeout=10,
                verify=self._verify,
            )
        except httpx.HTTPError as e:
            raise AdminError(f"cannot reach notifier at {self._base}: {e}") from None
        if response.status_code >= 400:
            try:
                detail = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                detail = response.text.strip()[:300]
            raise AdminError(f"{method} {path}: {response.status_code}: {detail}")
        return response.json() if response.content else None


def client_for(settings: Settings, args: argparse.Namespace) -> AdminClient:
    return AdminClient(
        args.url or service_url(settings),
        settings.web.admin_password.get_secret_value(),
        verify=not args.insecure,
    )


def silence_body(args: argparse.Namespace) -> dict[str, Any]:
    matchers: dict[str, Any] = {
        key: getattr(args, flag) for flag, key in MATCH_FLAGS.items() if getattr(args, flag)
    }
    if args.text:
        matchers["text"] = args.text
    if args.min_severity:
        matchers["min_severity"] = [args.min_severity]
    body: dict[str, Any] = {"matchers": matchers, "comment": args.comment}
    if args.until:
        body["ends_at"] = args.until
    else:
        body["duration"] = args.for_
    if args.start:
        body["starts_at"] = args.start
    if args.created_by:
        body["created_by"] = args.created_by
    return body


def silence(client: AdminClient, args: argparse.Namespace) -> str:
    """What `notifier silence ACTION` prints."""
    if args.silence_cmd == "add":
        created = client.call("POST", "/api/v1/silences", silence_body(args))
        return f"silence {created['id']} added"
    if args.silence_cmd == "expire":
        client.call("DELETE", f"/api/v1/silences/{args.id}")
        return f"silence {args.id} expired"
    listed = client.call("GET", "/api/v1/silences")["silences"]
    if not args.all:
        listed = [s for s in listed if s["state"] != "expired"]
    if args.json:
        return json.dumps(listed, indent=2, ensure_ascii=False)
    if not listed:
        return "no silence" + ("" if args.all else " active or pending (--all shows expired ones)")
    lines = []
    for s in listed:
        mutes = "; ".join(f"{k}={','.join(v)}" for k, v in s["matchers"].items())
        lines.append(
            f"{s['id']}  {s['state']:<7}  {s['starts_at']} .. {s['ends_at']}  {mutes}  "
            f"by {s['created_by']}: {s['comment']}"
        )
    return "\n".join(lines)


def alarm(client: AdminClient, args: argparse.Namespace) -> str:
    """What `notifier alarm ACTION` prints."""
    if args.alarm_cmd == "ack":
        body = {"comment": args.comment, **({"by": args.by} if args.by else {})}
        done = client.call("POST", f"/api/v1/alarms/{args.key}/ack", body)
        return f"alarm {done['key']} acknowledged by {done['by']} at {done['at']}"
    fields = ("device", "code", "source", "route", "min_severity")
    query = {k: getattr(args, k) for k in fields if getattr(args, k)}
    listed = client.call("GET", "/api/v1/alarms", params=query)["alarms"]
    if args.json:
        return json.dumps(listed, indent=2, ensure_ascii=False)
    if not listed:
        return "no active alarm"
    lines = []
    for a in listed:
        notes = []
        if a["silenced"]:
            notes.append(f"silenced by {a['silenced']}")
        if a["acknowledged"]:
            notes.append(f"acknowledged by {a['acknowledged']['by']}")
        lines.append(
            f"{a['key']}  {a['severity'] or 'unknown':<8}  {a['device']}  {a['code']}  "
            f"{a['source']}  since {a['since']}  x{a['repeats']}  {', '.join(notes)}".rstrip()
        )
    return "\n".join(lines)
