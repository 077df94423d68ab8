"""Wiring: settings in, a running service out. Start, serve, drain, stop.

Order matters: the spool opens (recovering what was not acked) before any receiver listens,
consumers start before receivers so recovered records flow at once, and on shutdown receivers
close first so nothing new is acknowledged while the spool is closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import platform
import signal
import sqlite3
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notifier import __version__
from notifier.config import Settings, host_port, parse_listen
from notifier.datadir import make_data_dir
from notifier.dispatch.rules import anyone_wants, compile_routes
from notifier.log import configure, get_logger
from notifier.metrics import Metrics, Reading
from notifier.oauth2.errors import OAuth2Error
from notifier.records import SMTP_RELAY, Kind, Record
from notifier.speedups import native
from notifier.spool.base import Spool, SpoolError
from notifier.spool.cluster import Cluster, publish_cluster
from notifier.spool.state import StateStore

if TYPE_CHECKING:
    from notifier.dispatch.mutes import Mutes
    from notifier.dispatch.service import Dispatcher
    from notifier.forward.consumer import Forwards
    from notifier.mail.testmail import TestMail
    from notifier.mail.transport import SendReport
    from notifier.oauth2.runtime import OAuth2Runtime

log = get_logger("notifier.app")


@dataclass
class Service:
    """The running process: what `run` starts and `stop` stops, exposed for tests and pages."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    spool: Spool | None = None
    state: StateStore | None = None
    mutes: Mutes | None = None  # silences, maintenance windows, acks in force here
    dispatcher: Dispatcher | None = None
    forwards: Forwards | None = None
    oauth2: OAuth2Runtime | None = None
    cluster: Cluster | None = None
    started_at: float = field(default_factory=time.time)
    listening: dict[str, str] = field(default_factory=dict)  # receiver -> "host:port"
    started: bool = False
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def health(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "listening": dict(self.listening),
        }

    def readings(self) -> list[Reading]:
        """The transports' and forwards' state gauges, read at each /metrics scrape."""
        from notifier.mail.transport import transport_readings

        health = {}
        if self.dispatcher is not None:
            health = {name: t.health for name, t in self.dispatcher.transports.items()}
        forwards = self.forwards.readings() if self.forwards is not None else []
        return transport_readings(health) + forwards

    async def start(self) -> None:
        s = self.settings
        data_dir = Path(s.data_dir)
        if warning := make_data_dir(data_dir):
            log.warning("data_dir is not private", warning=warning)
        routes = s.effective_routes()
        consumers = [f"route:{r.name}" for r in routes]
        # An empty kinds list matches every kind.
        interest = {f"route:{r.name}": r.match.kinds or list(Kind) for r in routes}
        # What each consumer's worker takes; a record none takes is kept as history only.
        wants: list[Callable[[Record], bool]] = [m.matches for m in compile_routes(routes)]
        if s.smtp_relay.listen:
            from notifier.dispatch.relay import RELAY_CONSUMER

            # Relayed mail is always durable: the relay consumer needs no memory tier.
            consumers.append(RELAY_CONSUMER)
            interest[RELAY_CONSUMER] = []
            wants.append(_relayed)
        from notifier.forward.consumer import forward_interest, forward_wants, start_forwards

        interest |= forward_interest(s)
        consumers += forward_interest(s)
        wants += forward_wants(s)
        self.spool = build_spool(s, consumers, self.metrics, interest, anyone_wants(wants))
        await self.spool.start()
        self._closers.append(self.spool.close)
        from notifier.spool.factory import open_cluster, open_state

        self.state = open_state(s, self.spool)
        await self.state.start()
        self._closers.insert(0, self.state.close)  # before the spool: it may share its pool
        self.cluster = open_cluster(s, self.spool, consumers, self.metrics, __version__)
        await self.cluster.start()
        publish_cluster(self.metrics, self.cluster.view())
        # After the workers stop (a graceful stop hands their consumers over), before the spool.
        self._closers.insert(0, self.cluster.close)
        from notifier.dispatch.service import build_dispatcher
        from notifier.oauth2.runtime import OAuth2Runtime

        self.oauth2 = await OAuth2Runtime.open(s)
        if self.oauth2 is not None:
            self._closers.insert(0, self.oauth2.close)
        providers = self.oauth2.providers if self.oauth2 else {}
        from notifier.dispatch.control import compile_windows
        from notifier.dispatch.mutes import Mutes

        # One view of the silences, windows and acks for every route and forward here.
        self.mutes = Mutes(self.state, compile_windows(s))
        self.dispatcher = build_dispatcher(
            s, self.spool, self.state, self.metrics, providers, self.cluster, self.mutes
        )
        self.dispatcher.start()
        # Dispatchers stop before the spool closes.
        self._closers[:0] = [self.dispatcher.stop_workers, self.dispatcher.close_transports]
        self.forwards = start_forwards(s, self.spool, self.metrics, self.cluster, self.mutes)
        self._closers.insert(0, self.forwards.stop)
        self.metrics.watch(self.readings)
        await self._start_receivers()
        self.started = True
        from notifier.mail.accounts import transport_label

        log.info(
            "notifier started",
            version=__version__,
            data_dir=str(data_dir.resolve()),
            listening=self.listening,
            accounts=[f"{a.name} ({transport_label(a)})" for a in s.accounts],
            # the per-line loops: compiled (notifier/_speedups.c), or their Python twins where
            # the install had no C compiler or PURE_PYTHON is set (several times the CPU a line)
            hot_loops="compiled" if native is not None else "python",
        )

    async def _start_receivers(self) -> None:
        from notifier.ingest.parse.line import parse_line
        from notifier.ingest.parse.syslog import parse_syslog
        from notifier.ingest.stream import start_stream
        from notifier.ingest.tls import server_context
        from notifier.ingest.udp import UdpReceiver, start_udp

        s = self.settings
        assert self.spool is not None
        spool, metrics, scheme = self.spool, self.metrics, s.ingest.severity_scheme
        # Receivers close before dispatchers and the spool: insert at the front, in reverse.
        front: list[Callable[[], Awaitable[None]]] = []

        # The alarm listener first: the log listener reads it before each of its own bursts.
        alarm_udp: list[UdpReceiver] = []
        if (listen := parse_listen(s.syslog.alarm_udp)) is not None:
            alarm_udp.append(
                await start_udp(
                    listen.host,
                    listen.port,
                    spool=spool,
                    metrics=metrics,
                    receiver="syslog-alarm-udp",
                    rcvbuf_bytes=s.syslog.udp_rcvbuf_bytes,
                    scheme=scheme,
                )
            )
            self.listening["syslog-alarm-udp"] = host_port(*alarm_udp[0].addresses[0])
            front.append(alarm_udp[0].close)
        if (listen := parse_listen(s.syslog.udp)) is not None:
            udp = await start_udp(
                listen.host,
                listen.port,
                spool=spool,
                metrics=metrics,
                rcvbuf_bytes=s.syslog.udp_rcvbuf_bytes,
                scheme=scheme,
                first=alarm_udp,
            )
            self.listening["syslog-udp"] = host_port(*udp.addresses[0])
            front.append(udp.close)

        streams: list[
            tuple[str, str, Callable[..., Any], ssl.SSLContext | None, int, int, int, float]
        ] = []
        for name, address in (
            ("syslog-tcp", s.syslog.tcp),
            ("syslog-alarm-tcp", s.syslog.alarm_tcp),
        ):
            if address:
                streams.append(
                    (
                        name,
                        address,
                        parse_syslog,
                        None,
                        s.syslog.max_frame_bytes,
                        s.syslog.max_connections,
                        s.syslog.max_connections_per_peer,
                        s.syslog.idle_timeout_s,
                    )
                )
        if s.syslog.tls:
            tls_context = server_context(
                s.syslog.tls_cert_file, s.syslog.tls_key_file, s.syslog.tls_client_ca_file
            )
            streams.append(
                (
                    "syslog-tls",
                    s.syslog.tls,
                    parse_syslog,
                    tls_context,
                    s.syslog.max_frame_bytes,
                    s.syslog.max_connections,
                    s.syslog.max_connections_per_peer,
                    s.syslog.idle_timeout_s,
                )
            )
        if s.tcp.listen:
            streams.append(
                (
                    "tcp",
                    s.tcp.listen,
                    parse_line,
                    None,
                    s.tcp.max_line_bytes,
                    s.tcp.max_connections,
                    s.tcp.max_connections_per_peer,
                    s.tcp.idle_timeout_s,
                )
            )
        for receiver, address, parse, ctx, max_frame, max_conn, per_peer, idle in streams:
            listen = parse_listen(address)
            assert listen is not None
            server_ = await start_stream(
                listen.host,
                listen.port,
                spool=spool,
                metrics=metrics,
                receiver=receiver,
                parse=parse,
                ssl=ctx,
                max_frame_bytes=max_frame,
                max_connections=max_conn,
                max_connections_per_peer=per_peer,
                idle_timeout_s=idle,
                # innovaphone's TCP log type has no documented framing: take octet counting
                # too, as on the syslog ports (a raw line starting "12 " is the rare loser).
                octet_counting=True,
                scheme=scheme,
            )
            self.listening[receiver] = host_port(*server_.addresses[0])
            front.append(server_.close)
        if (listen := parse_listen(s.smtp_relay.listen)) is not None:
            from notifier.ingest.smtprelay import SmtpRelay

            r = s.smtp_relay
            relay_tls = (
                server_context(r.tls_cert_file, r.tls_key_file, section="smtp_relay")
                if r.tls_cert_file
                else None
            )
            relay = SmtpRelay(r, spool, metrics, relay_tls)
            await relay.start(listen.host, listen.port)
            self.listening["smtp-relay"] = host_port(*relay.addresses[0])
            front.append(relay.close)
        # HTTP last: /healthz answering means every receiver listens.
        if (listen := parse_listen(s.http.listen)) is not None:
            from notifier.ingest.http import build_ingest_app
            from notifier.ingest.httpauth import HttpAuth
            from notifier.ingest.httpserver import HttpServer
            from notifier.ingest.webhooks import WebhookAuth
            from notifier.web.forms import FormToken
            from notifier.web.guard import AdminGuard
            from notifier.web.oauth2 import oauth2_routes
            from notifier.web.operator import operator_routes
            from notifier.web.pages import status_routes

            auth = None
            if s.http.auth != "none":
                users = {k: v.get_secret_value() for k, v in s.http.users.items()}
                auth = HttpAuth(s.http.auth, users)
            # One guard for every admin page and the history.
            guard = AdminGuard(s.web.admin_password.get_secret_value())
            forms = FormToken()  # one anti-forgery token for every admin form
            app = build_ingest_app(
                spool=spool,
                metrics=metrics,
                paths=s.http.paths,
                catch_all=s.http.catch_all,
                max_body_bytes=s.http.max_body_bytes,
                auth=auth,
                scheme=scheme,
                health=self.health,
                extra_routes=[
                    *status_routes(self, guard, forms),
                    *oauth2_routes(self, guard, forms),
                    *operator_routes(self, guard, forms),
                ],
                # The history shows what devices sent: without sender auth, only the admin
                # (password, or loopback) may read it, as on the status page.
                history_guard=None if auth else guard.check,
                webhook_auth=WebhookAuth(
                    s.webhooks.bearer_token.get_secret_value(),
                    {k: v.get_secret_value() for k, v in s.webhooks.users.items()},
                ),
            )
            server = HttpServer(
                app,
                listen.host,
                listen.port,
                ssl_certfile=s.http.tls_cert_file,
                ssl_keyfile=s.http.tls_key_file,
                metrics=metrics,
                max_connections=s.http.max_connections,
                max_connections_per_peer=s.http.max_connections_per_peer,
                timeout_keep_alive=int(s.http.keep_alive_s),
            )
            await server.start()
            self.listening["http"] = host_port(listen.host, server.port)
            front.append(server.stop)

        self._closers[:0] = list(reversed(front))

    async def stop(self) -> None:
        """Close receivers, then consumers, then the spool; each step bounded."""
        for close in self._closers:
            try:
                async with asyncio.timeout(15):
                    await close()
            except Exception as e:  # keep stopping the rest
                log.warning(
                    "stop step failed", step=getattr(close, "__qualname__", "?"), error=str(e)
                )
        self._closers.clear()
        if self.started:  # a start that failed has said so in one line already
            log.info("notifier stopped")


def build_spool(
    settings: Settings,
    consumers: list[str],
    metrics: Metrics,
    interest: dict[str, list[Kind]] | None = None,
    wanted: Callable[[Record], bool] | None = None,
) -> Spool:
    """The configured spool: durable kinds in SQLite under data_dir, the rest in memory."""
    from notifier.spool.factory import open_spool

    return open_spool(settings, consumers, metrics, interest, wanted)


def _relayed(record: Record) -> bool:
    """What the SMTP relay's consumer takes (routes leave relayed mail alone)."""
    return record.receiver == SMTP_RELAY


def _install_uvloop() -> None:
    # uvloop is a dependency where pyproject.toml's marker says: CPython, not on Windows
    # (`run_service` skips Windows).
    if platform.python_implementation() == "CPython":
        import uvloop

        uvloop.install()


async def serve(settings: Settings, ready: Callable[[Service], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop in order."""
    service = Service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except Exception as e:
        await service.stop()
        raise StartFailed(str(e)) from e
    except BaseException:
        await service.stop()
        raise
    # Everything built at start lives until exit: keep it out of the collector's full passes,
    # which otherwise stall the loop for tens of milliseconds under load (measured: UDP loss).
    gc.collect()
    gc.freeze()
    if ready:
        ready(service)
    await stop.wait()
    log.info("stopping: signal received")
    await service.stop()


class StartFailed(Exception):
    """`Service.start` failed; the cause says why. Raised by `serve`."""


def run_service(settings: Settings) -> int:
    """Blocking entry point of `notifier run`; returns the exit status.

    A start that fails is one log line with the error and a hint, exit status 1."""
    configure(settings.log.level, settings.log.format)
    if sys.platform != "win32":
        _install_uvloop()
    try:
        asyncio.run(serve(settings))
    except StartFailed as e:
        cause = e.__cause__ or e
        error, hint = _start_failure(cause, settings.data_dir)
        log.error("cannot start", error=error, **({"hint": hint} if hint else {}))
        log.debug("cannot start: traceback", exc_info=cause)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _start_failure(e: BaseException, data_dir: str) -> tuple[str, str]:
    """(what went wrong, what to do) for an exception from `Service.start`."""

    if isinstance(e, OSError):
        return str(e), _start_hint(e, data_dir)
    cause = e.__cause__ if isinstance(e, SpoolError) else e
    # Not an OperationalError (locked, I/O): the file itself is not a readable database.
    if isinstance(cause, sqlite3.DatabaseError) and not isinstance(cause, sqlite3.OperationalError):
        error = str(e) if cause is not e else f"a database under {data_dir}: {e}"
        hint = (
            "the file is damaged or not notifier's: move it away (what it holds is lost) or "
            "restore it from a backup"
        )
        return error, hint
    if isinstance(e, OAuth2Error | SpoolError | ValueError):
        # Their messages name the thing and the way out (a locked spool, a token store under
        # another key, a certificate that does not load).
        return str(e), ""
    return f"{type(e).__name__}: {e}", (
        'an unexpected error: please report it; log.level = "debug" logs the traceback'
    )


def _start_hint(e: OSError, data_dir: str = "") -> str:
    if e.errno in (errno.EADDRINUSE, 48):  # 48: EADDRINUSE on BSD
        return "another process uses that port: stop it or change the listen address"
    if e.errno in (errno.EACCES, errno.EPERM) and e.filename is not None:
        return f"the user running notifier cannot use that file: check the owner of {data_dir}"
    if e.errno == errno.EACCES:
        return "permission denied: use a port above 1023 or grant CAP_NET_BIND_SERVICE"
    if e.errno == errno.ENOSPC:
        return f"the disk under {data_dir} is full: free some space"
    return ""


def send_test_mail(settings: Settings, account: str = "", to: str = "") -> int:
    """`notifier test-mail`: one message through the account, and what happened, in words;
    0 when it was accepted, 1 when not, 2 for an unknown account or no recipient."""
    configure(settings.log.level, "console" if sys.stderr.isatty() else settings.log.format)
    from notifier.mail.testmail import TestMailError, compose_test_mail, describe_report

    try:
        mail = compose_test_mail(settings, account, to)
    except TestMailError as e:
        print(f"notifier: {e}", file=sys.stderr)
        return 2
    report = asyncio.run(_send_test_mail(settings, mail))
    for line in describe_report(report):
        print(line)
    return 0 if report.ok else 1


async def _send_test_mail(settings: Settings, mail: TestMail) -> SendReport:
    """Through the account's transport as the service builds it (OAuth2 tokens included)."""
    from notifier.mail.accounts import build_transport
    from notifier.oauth2.runtime import OAuth2Runtime

    runtime = await OAuth2Runtime.open(settings)
    provider = runtime.providers.get(mail.account) if runtime else None
    transport = build_transport(settings.data_dir, settings.account(mail.account), provider)
    try:
        return await transport.test(mail.message)
    finally:
        await transport.close()
        if runtime is not None:
            await runtime.close()


__all__ = ["Service", "StartFailed", "run_service", "send_test_mail", "serve"]
