"""What operators do: the alarm list (`/alarms`, `GET /api/v1/alarms`), acknowledgements
(`POST /api/v1/alarms/{key}/ack`) and silences (`/api/v1/silences`, the status page's form).

Everything reads and writes through the shared `StateStore`, so every instance on one database
shows the same list and mutes the same alarms. Muting is powerful, so nothing here happens by
accident: all of it is behind the admin guard; the JSON API takes only `application/json` (a
browser must ask first with a CORS preflight, which nobody answers); the forms carry the admin
pages' form token and pass the Origin check.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from notifier import __version__
from notifier.dispatch.control import MATCHER_KEYS, ControlError, ack_of, silence_scope
from notifier.duration import parse_duration
from notifier.log import get_logger
from notifier.records import Kind, Record, Severity, UnknownSeverity, parse_severity
from notifier.spool.state import Ack, AlarmState, Key, Silence, StateStore, silence_matchers
from notifier.web.forms import FormToken, checked_form
from notifier.web.guard import AdminGuard
from notifier.web.render import page
from notifier.web.view import ServiceView

log = get_logger("notifier.web")

MAX_JSON_BYTES = 65536


class BadRequest(ValueError):
    """A request a person must correct; the message says how."""


# -- alarm keys ---------------------------------------------------------------------------


def alarm_id(key: Key) -> str:
    """The opaque id of an alarm in URLs (sources contain `/`)."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).rstrip(b"=").decode()


def key_of(alarm: str) -> Key | None:
    """The alarm key of an id from `alarm_id`, or None when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(alarm + "=" * (-len(alarm) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value):
        return (value[0], value[1], value[2])
    return None


# -- the alarm list -----------------------------------------------------------------------


@dataclass
class AlarmRow:
    """One active alarm across every route that holds it."""

    key: Key
    severity: Severity | None
    since: float
    last_seen: float
    repeats: int
    routes: list[str] = field(default_factory=list)
    silenced: str = ""
    ack: Ack | None = None

    def as_json(self) -> dict[str, Any]:
        device, code, source = self.key
        return {
            "key": alarm_id(self.key),
            "device": device,
            "code": code,
            "source": source,
            "severity": self.severity.value if self.severity else None,
            "since": _iso(self.since),
            "last_seen": _iso(self.last_seen),
            "repeats": self.repeats,
            "routes": self.routes,
            "silenced": self.silenced or None,
            "acknowledged": None
            if self.ack is None
            else {"by": self.ack.by, "comment": self.ack.comment, "at": _iso(self.ack.at)},
        }


def merge_active(
    by_route: Mapping[str, Mapping[Key, AlarmState]], acks: Mapping[Key, Ack]
) -> list[AlarmRow]:
    """The active alarms of all routes, one row per alarm, most severe and newest first; pure."""
    rows: dict[Key, AlarmRow] = {}
    for route, states in by_route.items():
        for key, s in states.items():
            if not s.active:
                continue
            row = rows.get(key)
            if row is None:
                row = rows[key] = AlarmRow(key, s.severity, s.first_set, s.last_seen, s.count)
            else:
                row.since = min(row.since, s.first_set)
                row.last_seen = max(row.last_seen, s.last_seen)
                row.repeats = max(row.repeats, s.count)
                if s.severity and (row.severity is None or s.severity.rank > row.severity.rank):
                    row.severity = s.severity
            row.routes.append(route)
            row.silenced = row.silenced or s.silenced
            row.ack = row.ack or ack_of(acks, s)
    return sorted(rows.values(), key=lambda r: (-(r.severity.rank if r.severity else -1), -r.since))


@dataclass(frozen=True)
class AlarmFilter:
    """The list's filters: globs on device, code and source, a route, a severity floor."""

    device: str = ""
    code: str = ""
    source: str = ""
    route: str = ""
    min_severity: Severity | None = None

    @classmethod
    def of(cls, query: Mapping[str, str]) -> AlarmFilter:
        floor = query.get("min_severity", "").strip()
        try:
            severity = parse_severity(floor) if floor else None
        except UnknownSeverity as e:
            raise BadRequest(f"min_severity: {e}") from None
        device, code, source, route = (
            query.get(k, "").strip() for k in ("device", "code", "source", "route")
        )
        return cls(device, code, source, route, severity)

    def keeps(self, row: AlarmRow) -> bool:
        device, code, source = row.key
        globs = ((self.device, device), (self.code, code), (self.source, source))
        if any(want and not fnmatchcase(have.lower(), want.lower()) for want, have in globs):
            return False
        if self.route and self.route not in row.routes:
            return False
        floor = self.min_severity
        return floor is None or (row.severity is not None and row.severity.rank >= floor.rank)

    def query(self) -> dict[str, str]:
        out = {"device": self.device, "code": self.code, "source": self.source}
        out |= {"route": self.route}
        out["min_severity"] = self.min_severity.value if self.min_severity else ""
        return out


async def active_alarms(state: StateStore, routes: Sequence[str]) -> list[AlarmRow]:
    by_route = {route: await state.load_alarms(f"route:{route}") for route in routes}
    return merge_active(by_route, await state.acks())


def history_rows(records: Sequence[Record]) -> list[dict[str, str]]:
    """The recent sets and clears, newest first, as the list shows them below."""
    return [
        {
            "when": _iso(r.received_at),
            "kind": "set" if r.kind is Kind.ALARM else "clear",
            "severity": r.severity.value,
            "device": r.device,
            "code": r.code,
            "source": r.source,
            "text": r.text[:160],
        }
        for r in records
        if r.kind in (Kind.ALARM, Kind.CLEAR)
    ]


# -- silences -----------------------------------------------------------------------------


def parse_matchers(raw: object, routes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """A silence's matchers from a request, compiled as the dispatcher will compile them;
    raises BadRequest. A silence must name something besides `kinds`: an empty set would mute
    everything."""
    if not isinstance(raw, Mapping):
        raise BadRequest('matchers: an object like {"devices": ["gw01*"]} is required')
    lists: dict[str, list[str]] = {}
    for name, value in raw.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise BadRequest(f"matchers.{name}: a string or a list of strings")
        lists[str(name)] = [v for v in values if v.strip()]
    matchers = silence_matchers(lists)
    try:
        silence_scope(matchers)
    except ControlError as e:
        raise BadRequest(str(e)) from None
    for name in matchers.get("routes", ()):
        if name not in routes:
            raise BadRequest(f"matchers.routes: no route named {name!r}")
    return matchers


def parse_time(value: object, name: str) -> float:
    """Unix seconds of an ISO 8601 time (without a zone: UTC); raises BadRequest."""
    if not isinstance(value, str):
        raise BadRequest(f"{name}: an ISO 8601 time such as 2026-11-30T14:00:00Z")
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: {value[:40]!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def silence_of(body: Mapping[str, Any], routes: Sequence[str], now: float, creator: str) -> Silence:
    """The silence a request asks for; raises BadRequest with what to correct."""
    matchers = parse_matchers(body.get("matchers"), routes)
    starts = parse_time(body["starts_at"], "starts_at") if body.get("starts_at") else now
    given = [k for k in ("ends_at", "duration", "duration_s") if body.get(k) not in (None, "")]
    if len(given) != 1:
        raise BadRequest("give one of ends_at, duration (like 2h) or duration_s")
    if given[0] == "ends_at":
        ends = parse_time(body["ends_at"], "ends_at")
    else:
        try:
            ends = starts + parse_duration(body[given[0]])
        except ValueError as e:
            raise BadRequest(f"{given[0]}: {e}") from None
    if ends <= max(starts, now):
        raise BadRequest("the silence would end before it starts, or in the past")
    comment = str(body.get("comment") or "").strip()
    if not comment:
        raise BadRequest("comment: say why (it is shown wherever the silence mutes something)")
    return Silence(
        id=uuid.uuid4().hex[:12],
        matchers=matchers,
        starts_at=starts,
        ends_at=ends,
        comment=comment[:500],
        created_by=str(body.get("created_by") or creator).strip()[:100] or creator,
        created_at=now,
    )


def silence_json(s: Silence, now: float) -> dict[str, Any]:
    state = "expired" if s.ended(now) else ("active" if now >= s.starts_at else "pending")
    return {
        "id": s.id,
        "matchers": {k: list(v) for k, v in s.matchers.items()},
        "starts_at": _iso(s.starts_at),
        "ends_at": _iso(min(s.ends_at, s.expired_at or s.ends_at)),
        "comment": s.comment,
        "created_by": s.created_by,
        "created_at": _iso(s.created_at),
        "state": state,
    }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the routes ---------------------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request) -> dict[str, Any] | JSONResponse:
    """The JSON object a POST carries, or the answer that says what is wrong with it."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return _error(415, "send Content-Type: application/json")
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        return _error(413, f"the body is over {MAX_JSON_BYTES} bytes")
    try:
        value = json.loads(body or b"{}")
    except ValueError as e:
        return _error(400, f"the body is not JSON: {e}")
    if not isinstance(value, dict):
        return _error(400, "the body must be a JSON object")
    return value


def _who(request: Request) -> str:
    host = request.client.host if request.client else "unknown"
    return f"admin@{host}"


def operator_routes(service: ServiceView, guard: AdminGuard, forms: FormToken) -> list[BaseRoute]:
    """The alarm list, acknowledgements and silences, behind `guard`."""

    def route_names() -> list[str]:
        return [r.name for r in service.settings.effective_routes()]

    def store() -> StateStore:
        if service.state is None:
            raise RuntimeError("the service has no state store")
        return service.state

    def changed() -> None:
        """This instance's routes apply the change at their next step; the other instances on
        the database read it within `mutes.REFRESH_S`."""
        if service.mutes is not None:
            service.mutes.stale()

    async def rows(query: Mapping[str, str]) -> tuple[list[AlarmRow], AlarmFilter]:
        wanted = AlarmFilter.of(query)
        return [r for r in await active_alarms(store(), route_names()) if wanted.keeps(r)], wanted

    async def alarms_api(request: Request) -> Response:
        try:
            found, _ = await rows(request.query_params)
        except BadRequest as e:
            return _error(400, str(e))
        history = service.spool.history(200) if service.spool else []
        return JSONResponse(
            {"alarms": [r.as_json() for r in found], "history": history_rows(history)[:50]}
        )

    async def ack(key: Key, by: str, comment: str) -> Ack | None:
        """Acknowledge an active alarm; None when no route has it active."""
        active = {r.key for r in await active_alarms(store(), route_names())}
        if key not in active:
            return None
        given = Ack(key, by[:100], comment[:500], time.time())
        await store().ack(given)
        changed()
        log.info("alarm acknowledged", device=key[0], code=key[1], source=key[2], by=given.by)
        return given

    async def ack_api(request: Request) -> Response:
        key = key_of(request.path_params["key"])
        if key is None:
            return _error(404, "no such alarm key; take keys from GET /api/v1/alarms")
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        comment = str(body.get("comment") or "").strip()
        if not comment:
            return _error(400, "comment: say what is being done about it")
        given = await ack(key, str(body.get("by") or _who(request)), comment)
        if given is None:
            return _error(404, "this alarm is not active (cleared, or never seen)")
        return JSONResponse({"key": alarm_id(key), "by": given.by, "at": _iso(given.at)})

    async def silences_api(request: Request) -> Response:
        now = time.time()
        return JSONResponse({"silences": [silence_json(s, now) for s in await store().silences()]})

    async def add_silence(body: Mapping[str, Any], creator: str) -> Silence:
        silence = silence_of(body, route_names(), time.time(), creator)
        await store().add_silence(silence)
        changed()
        log.info(
            "silence added",
            silence=silence.id,
            matchers={k: list(v) for k, v in silence.matchers.items()},
            until=_iso(silence.ends_at),
            by=silence.created_by,
            comment=silence.comment,
        )
        return silence

    async def add_silence_api(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        try:
            silence = await add_silence(body, _who(request))
        except BadRequest as e:
            return _error(400, str(e))
        return JSONResponse({"id": silence.id}, status_code=201)

    async def expire(silence_id: str) -> bool:
        done = await store().expire_silence(silence_id, time.time())
        if done:
            changed()
            log.info("silence expired", silence=silence_id)
        return done

    async def expire_api(request: Request) -> Response:
        if not await expire(request.path_params["id"]):
            return _error(404, "no such silence, or it has ended already")
        return Response(status_code=204)

    async def alarms_page(request: Request) -> Response:
        try:
            found, wanted = await rows(request.query_params)
        except BadRequest as e:
            return PlainTextResponse(f"{e}\n", status_code=400)
        history = service.spool.history(200) if service.spool else []
        return page(
            "alarms.html.j2",
            version=__version__,
            alarms=[r.as_json() for r in found],
            history=history_rows(history)[:50],
            filters=wanted.query(),
            routes=route_names(),
            csrf=forms.value,
        )

    async def ack_form(request: Request) -> Response:
        form = await checked_form(request, forms, "/alarms")
        if isinstance(form, Response):
            return form
        key = key_of(form.get("key", ""))
        comment = form.get("comment", "").strip()
        if key is None or not comment:
            return PlainTextResponse("Say what is being done about it (a comment).\n", 400)
        if await ack(key, form.get("by", "").strip() or _who(request), comment) is None:
            return PlainTextResponse("This alarm is not active any more.\n", 404)
        return RedirectResponse("/alarms", status_code=303)

    async def silence_form(request: Request) -> Response:
        form = await checked_form(request, forms, "/")
        if isinstance(form, Response):
            return form
        matchers = {k: form[k].split() for k in MATCHER_KEYS if form.get(k, "").strip()}
        if "text" in matchers:
            matchers["text"] = [form["text"].strip()]
        body = {
            "matchers": matchers,
            "duration": form.get("duration", "").strip(),
            "comment": form.get("comment", ""),
            "created_by": form.get("created_by", ""),
        }
        try:
            await add_silence(body, _who(request))
        except BadRequest as e:
            return PlainTextResponse(f"The silence was not added: {e}\n", status_code=400)
        return RedirectResponse("/#silences", status_code=303)

    async def expire_form(request: Request) -> Response:
        form = await checked_form(request, forms, "/")
        if isinstance(form, Response):
            return form
        await expire(request.path_params["id"])
        return RedirectResponse("/#silences", status_code=303)

    return [
        Route("/alarms", guard(alarms_page), methods=["GET"]),
        Route("/alarms/ack", guard(ack_form), methods=["POST"]),
        Route("/silences", guard(silence_form), methods=["POST"]),
        Route("/silences/{id}/expire", guard(expire_form), methods=["POST"]),
        Route("/api/v1/alarms", guard(alarms_api), methods=["GET"]),
        Route("/api/v1/alarms/{key}/ack", guard(ack_api), methods=["POST"]),
        Route("/api/v1/silences", guard(silences_api), methods=["GET"]),
        Route("/api/v1/silences", guard(add_silence_api), methods=["POST"]),
        Route("/api/v1/silences/{id}", guard(expire_api), methods=["DELETE"]),
    ]
