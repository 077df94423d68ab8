"""The command line: `notifier run | check-config | send-alarm | spool ... | test-mail |
render | silence ... | alarm ... | oauth2 ...`, each taking `--config FILE` before or after the
command and its action.

Exit status: 0 on success, 2 for usage or config errors, 1 otherwise; errors are one line on
stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from notifier import __version__
from notifier.config import ConfigError, Settings, load_settings, masked
from notifier.datadir import private_files

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A failure to report as one line, with the exit status to use."""

    def __init__(self, message: str, status: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.status = status


def _settings(args: argparse.Namespace, *, compile_all: bool = False) -> Settings:
    """The validated settings, or one `notifier: config:` line per problem and exit status 2.

    `compile_all`: also compile what `run` compiles (rules, TLS files, templates), as `run` and
    `check-config` do; other commands only need the accounts."""
    from notifier.prepare import account_problems, config_problems

    try:
        settings = load_settings(args.config)
        problems = config_problems(settings) if compile_all else account_problems(settings)
        if problems:
            raise ConfigError(problems)
    except ConfigError as e:
        for line in e.problems:
            print(f"notifier: config: {line}", file=sys.stderr)
        raise CliError("", EXIT_USAGE) from None
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from notifier.app import run_service

    settings = _settings(args, compile_all=True)
    return run_service(settings)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args, compile_all=True)
    database = None
    if settings.spool.backend == "postgresql":
        from notifier.spool.pg.probe import probe_now

        # Config problems (exit 2) come first; an unreachable or too new database is exit 1.
        database = probe_now(settings.spool.dsn.get_secret_value())
        if database.problem:
            print(f"notifier: database: {database.problem}", file=sys.stderr)
    status = EXIT_FAIL if database and database.problem else EXIT_OK
    if args.quiet:
        return status
    print(f"# notifier {__version__}: configuration is valid; effective values, secrets masked")
    if database and not database.problem:
        print(f"# database: {database.line()}")
    effective = masked(settings)
    effective["routes"] = [
        r.model_dump(mode="json", by_alias=True) for r in settings.effective_routes()
    ]
    print(to_toml(effective), end="")
    return status


def cmd_send_alarm(args: argparse.Namespace) -> int:
    import httpx

    if not (args.text or args.code):
        raise CliError("send-alarm: give --text or --code (or both)", EXIT_USAGE)
    # Only what the user gave: a value made up here would reach the mail as the device's word.
    given = vars(args)
    record: dict[str, Any] = {"type": args.type}
    for name in ("severity", "code", "host", "serial", "source", "text"):
        if given[name]:
            record[name] = given[name]
    url = args.url
    if not url:
        from notifier.admincli import AdminError, service_url

        try:
            url = f"{service_url(_settings(args))}/api/v1/records"
        except AdminError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    auth = None
    if args.user:
        user, _, password = args.user.partition(":")
        auth = httpx.DigestAuth(user, password) if args.digest else httpx.BasicAuth(user, password)
    try:
        response = httpx.post(url, json=record, auth=auth, timeout=10, verify=not args.insecure)
    except httpx.HTTPError as e:
        raise CliError(f"cannot reach notifier at {url}: {e}") from None
    if response.status_code != 200:
        raise CliError(f"{url} answered {response.status_code}: {response.text.strip()[:300]}")
    print(f"sent {json.dumps(record, ensure_ascii=False)} to {url}: {response.text.strip()}")
    return EXIT_OK


def cmd_spool(args: argparse.Namespace) -> int:
    from notifier.spool import admin

    settings = _settings(args)
    if args.spool_cmd == "migrate":
        return _spool_migrate(settings)
    if settings.spool.backend != "sqlite":
        # They would open (and create) an empty SQLite file and report nothing waiting.
        raise CliError(
            f"spool {args.spool_cmd}: works on the SQLite spool only for now; with "
            'backend = "postgresql" the queue is in the spool_records and spool_deliveries '
            "tables of the database",
            EXIT_USAGE,
        )
    result: Callable[[], Any]
    data_dir = settings.data_dir
    if args.spool_cmd == "stats":
        result = lambda: admin.stats(data_dir)  # noqa: E731
    elif args.spool_cmd == "list":
        result = lambda: admin.list_records(data_dir, state=args.state, limit=args.limit)  # noqa: E731
    elif args.spool_cmd == "show":
        result = lambda: admin.show(data_dir, args.id)  # noqa: E731
    elif args.spool_cmd == "retry":
        if not args.id and not args.dead:
            raise CliError("spool retry: give a record ID or --dead", EXIT_USAGE)
        result = lambda: admin.retry(data_dir, record_id=args.id, dead=args.dead)  # noqa: E731
    elif args.consumer:  # purge --consumer
        result = lambda: admin.purge_consumer(data_dir, args.consumer)  # noqa: E731
    else:  # purge
        if not args.dead:
            raise CliError("spool purge: give --dead or --consumer NAME", EXIT_USAGE)
        result = lambda: admin.purge_dead(data_dir)  # noqa: E731
    try:
        out = result()
    except admin.AdminError as e:
        raise CliError(str(e)) from None
    print(admin.render(out, as_json=args.json))
    return EXIT_OK


def _spool_migrate(settings: Settings) -> int:
    from notifier.oauth2.errors import OAuth2StoreError
    from notifier.oauth2.runtime import copy_file_store_to_database
    from notifier.spool.base import SpoolError
    from notifier.spool.migrate import migrate_to_postgresql

    async def move_tokens() -> str:
        accounts = await copy_file_store_to_database(settings)
        return f"OAuth2 tokens: {len(accounts)} account(s) moved" + (
            f" ({', '.join(accounts)})" if accounts else ""
        )

    try:
        moved = migrate_to_postgresql(settings, move_tokens)
    except (SpoolError, OAuth2StoreError) as e:
        raise CliError(f"spool migrate: {e}") from None
    for line in moved.lines():
        print(line)
    print("done: start notifier with this config")
    return EXIT_OK


def cmd_test_mail(args: argparse.Namespace) -> int:
    from notifier.app import send_test_mail

    settings = _settings(args)
    return send_test_mail(settings, account=args.account, to=args.to)


def cmd_render(args: argparse.Namespace) -> int:
    import time

    from notifier.mail.preview import Sample, render_sample
    from notifier.mail.style import TemplateConfigError

    settings = _settings(args)
    routes = [r.name for r in settings.effective_routes()]
    route = args.route or routes[0]
    if route not in routes:
        raise CliError(f"render: no route named {route!r} (have {', '.join(routes)})", EXIT_USAGE)
    try:
        message = render_sample(
            settings, route, Sample(args.sample), time.time(), settings.instance()
        )
    except TemplateConfigError as e:
        raise CliError(f"config: {e}", EXIT_USAGE) from None
    part = message.get_body(("html",) if args.html else ("plain",))
    assert part is not None  # compose always writes both
    if not args.html:
        print(f"Subject: {message['Subject']}\n")
    print(str(part.get_content()).rstrip("\n"))
    return EXIT_OK


def cmd_oauth2(args: argparse.Namespace) -> int:
    from notifier.oauth2 import cli as oauth2_cli

    settings = _settings(args)
    if args.oauth2_cmd == "authorize":
        return oauth2_cli.authorize(settings, args.account, device=args.device)
    if args.oauth2_cmd == "revoke":
        return oauth2_cli.revoke(settings, args.account)
    return oauth2_cli.status(settings)


def cmd_operator(args: argparse.Namespace) -> int:
    """`silence ...` and `alarm ...`: through the running service's admin API."""
    from notifier import admincli

    settings = _settings(args)
    try:
        client = admincli.client_for(settings, args)
        act = admincli.silence if args.command == "silence" else admincli.alarm
        print(act(client, args))
    except admincli.AdminError as e:
        raise CliError(str(e)) from None
    return EXIT_OK


def to_toml(data: dict[str, Any]) -> str:
    """Render plain config data as TOML (tables after keys, arrays of tables as [[name]])."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{_key(k)} = {value(x)}" for k, x in v.items()) + "}"
        if v is None:
            return '""'
        return json.dumps(str(v))

    def table(prefix: str, node: dict[str, Any], header: str | None) -> None:
        if header:
            lines.append("")
            lines.append(header)
        subtables: list[tuple[str, Any, bool]] = []
        for k, v in node.items():
            if isinstance(v, dict) and v and k not in ("users", "match"):
                subtables.append((k, v, False))
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                subtables.append((k, v, True))
            elif v is None:
                continue
            else:
                lines.append(f"{_key(k)} = {value(v)}")
        for k, v, is_array in subtables:
            name = f"{prefix}{_key(k)}"
            if is_array:
                for item in v:
                    table(f"{name}.", item, f"[[{name}]]")
            else:
                table(f"{name}.", v, f"[{name}]")

    table("", data, None)
    return "\n".join(lines) + "\n"


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


CONFIG_HELP = "TOML config file (default: $NOTIFIER_CONFIG, else the embedded defaults)"

EPILOG = """\
--config FILE (or NOTIFIER_CONFIG) is accepted before or after any command and action.
In a development checkout the command is .venv/bin/notifier (`make run` creates it); installed
as deploy/notifier.service describes, it is /opt/notifier/bin/notifier.
Exit status: 0 on success, 2 for usage or config errors, 1 otherwise."""


def _add_config(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """--config on `parser`. Below the top level the default is SUPPRESS, so an option given at
    one level is not reset by the next: `notifier -c X spool stats` is
    `notifier spool stats -c X`."""
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help=CONFIG_HELP,
    )


def _add_admin_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default="",
        help="the running notifier's base URL (default: from http.listen in the config)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the HTTPS certificate (default: verify)",
    )


class _Sub:
    """Adds subcommands that all take --config and show defaults the same way."""

    def __init__(self, parser: argparse.ArgumentParser, dest: str, metavar: str) -> None:
        self._sub = parser.add_subparsers(dest=dest, metavar=metavar, required=dest != "command")

    def add(self, name: str, help: str) -> argparse.ArgumentParser:
        p = self._sub.add_parser(name, help=help, description=help)
        _add_config(p)
        return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Takes alarms, events and log lines from innovaphone devices and any syslog\n"
        "or HTTP sender, and mails the ones people must hear about.",
        epilog=EPILOG,
        # The epilog's lines as written.
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"notifier {__version__}", help="print the version"
    )
    _add_config(parser, top=True)
    sub = _Sub(parser, "command", "COMMAND")

    p = sub.add("run", "run the service in the foreground")
    p.set_defaults(func=cmd_run)

    p = sub.add(
        "check-config",
        "compile the config as `run` does (rules, addresses, TLS files, OAuth2 settings, mail "
        "templates) and print the effective values, secrets masked; with backend = "
        '"postgresql" also connect to the database and report its schema version. Exit status '
        "2: a config problem; 1: the database cannot be reached or has a schema newer than this "
        "notifier",
    )
    p.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="print problems only, nothing for a valid config (default: print the values)",
    )
    p.set_defaults(func=cmd_check_config)

    p = sub.add(
        "send-alarm",
        "send one alarm record to a running notifier; only the fields given are sent",
    )
    p.add_argument(
        "--url", help="JSON endpoint (default: /api/v1/records on the config's http.listen)"
    )
    p.add_argument(
        "--type",
        choices=["alarm", "clear", "error"],
        default="alarm",
        help="record type; error is a one-shot event (default: alarm)",
    )
    not_sent = "(default: not sent)"
    p.add_argument(
        "--severity",
        help="e.g. critical, major, minor, warning, or a number "
        "(default: not sent; the mail then shows no severity)",
    )
    p.add_argument("--code", help=f"alarm code, e.g. 0x00010002 {not_sent}")
    p.add_argument("--host", help="device name (default: not sent; the sender's address is used)")
    p.add_argument("--serial", help=f"device serial number {not_sent}")
    p.add_argument("--source", help=f"source module, e.g. RELAY/RECH {not_sent}")
    p.add_argument("--text", help=f"alarm text; give --text or --code or both {not_sent}")
    p.add_argument(
        "--user",
        metavar="NAME:PASSWORD",
        help="HTTP sender credentials, for http.auth (default: none)",
    )
    p.add_argument(
        "--digest",
        action="store_true",
        help="use Digest instead of Basic auth with --user (default: Basic)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the HTTPS certificate (default: verify)",
    )
    p.set_defaults(func=cmd_send_alarm)

    p = sub.add("spool", "inspect and repair the spool")
    p.add_argument("--json", action="store_true", help="print JSON instead of text (default: text)")
    p.set_defaults(func=cmd_spool)
    spool = _Sub(p, "spool_cmd", "ACTION")
    spool.add("stats", "queue depths, limits, drops")
    sp = spool.add("list", "records in the spool, newest first")
    sp.add_argument(
        "--state",
        choices=["ready", "leased", "retry", "dead", "done"],
        default=None,
        help="only records in this state (default: every state)",
    )
    sp.add_argument("--limit", type=int, default=50, help="show at most this many (default: 50)")
    sp = spool.add("show", "one record with its deliveries and last errors")
    sp.add_argument("id", help="the record ID, as `spool list` shows it")
    sp = spool.add("retry", "make a dead record (or all with --dead) ready again")
    sp.add_argument("id", nargs="?", help="the record ID (default: none; then give --dead)")
    sp.add_argument(
        "--dead", action="store_true", help="retry every dead-lettered record (default: off)"
    )
    sp = spool.add("purge", "delete dead-lettered records, or what waits for a removed route")
    sp.add_argument(
        "--dead", action="store_true", help="delete dead-lettered deliveries (default: off)"
    )
    sp.add_argument(
        "--consumer",
        metavar="NAME",
        help="delete the deliveries of a route no longer configured, e.g. route:old "
        "(default: none)",
    )

    sp = spool.add(
        "migrate", "move data_dir's spool and alarm state into PostgreSQL (service stopped)"
    )
    sp.add_argument(
        "--to",
        choices=["postgresql"],
        required=True,
        help='the backend to move to: the database of [spool] dsn, with backend = "postgresql" '
        "(required, no default)",
    )

    p = sub.add("test-mail", "send one test mail and say what happened")
    p.add_argument("--account", "-a", default="", help="account name (default: the first account)")
    p.add_argument(
        "--to", default="", help="recipient (default: the first route's of that account)"
    )
    p.set_defaults(func=cmd_test_mail)

    p = sub.add(
        "render",
        "print the mail a route would send for a sample alarm, clear or digest, with the "
        "route's templates and the mail time zone (nothing is sent)",
    )
    p.add_argument("--route", "-r", default="", help="route name (default: the first route)")
    p.add_argument(
        "--sample",
        choices=["alarm", "clear", "digest"],
        default="alarm",
        help="a new alarm, its clear an hour later, or a digest of a storm (default: alarm)",
    )
    p.add_argument(
        "--html",
        action="store_true",
        help="print the HTML body instead of the subject and the text body (default: text)",
    )
    p.set_defaults(func=cmd_render)

    p = sub.add("silence", "mute matching alarms and events for a while (on the running service)")
    p.set_defaults(func=cmd_operator)
    _add_admin_url(p)
    silence = _Sub(p, "silence_cmd", "ACTION")
    sp = silence.add("add", "add a silence; flags repeat, e.g. --device 'gw01*' --device gw02")
    for flag, key in (
        ("device", "devices (exact or glob)"),
        ("code", "codes: exact, prefix 0x0001* or range 0x10-0x1f"),
        ("source", "source modules (exact or glob)"),
        ("severity", "severities (exactly these)"),
        ("receiver", "receivers, e.g. syslog-udp"),
        ("route", "route names"),
        ("kind", "kinds: alarm, clear, event, log"),
    ):
        sp.add_argument(
            f"--{flag}", action="append", default=[], help=f"match {key} (default: any)"
        )
    sp.add_argument(
        "--text", default="", help="regular expression searched in the text (default: any)"
    )
    sp.add_argument(
        "--min-severity", default="", help="this severity and above, e.g. major (default: any)"
    )
    sp.add_argument(
        "--for",
        dest="for_",
        default="2h",
        help="how long: 90s, 30m, 2h, 1d or seconds (default: 2h)",
    )
    sp.add_argument("--until", default="", help="end time, ISO 8601 (default: use --for)")
    sp.add_argument("--start", default="", help="start time, ISO 8601 (default: now)")
    sp.add_argument(
        "--comment", required=True, help="why (shown wherever it mutes something; required)"
    )
    sp.add_argument("--created-by", default="", help="your name (default: admin@ADDRESS)")
    sp = silence.add("list", "the silences, active and pending")
    sp.add_argument("--all", action="store_true", help="include expired ones (default: off)")
    sp.add_argument("--json", action="store_true", help="print JSON (default: text)")
    sp = silence.add("expire", "end a silence now")
    sp.add_argument("id", help="the silence id, as `silence list` shows it")

    p = sub.add("alarm", "list and acknowledge active alarms (on the running service)")
    p.set_defaults(func=cmd_operator)
    _add_admin_url(p)
    alarms = _Sub(p, "alarm_cmd", "ACTION")
    sp = alarms.add("list", "the active alarms across all routes")
    for name in ("device", "code", "source"):
        sp.add_argument(f"--{name}", default="", help=f"only this {name} (glob; default: any)")
    sp.add_argument("--route", default="", help="only alarms on this route (default: any)")
    sp.add_argument("--min-severity", default="", help="this severity and above (default: any)")
    sp.add_argument("--json", action="store_true", help="print JSON (default: text)")
    sp = alarms.add("ack", "acknowledge an alarm: its reminders stop until it clears")
    sp.add_argument("key", help="the alarm's key, as `alarm list` shows it")
    sp.add_argument("--comment", required=True, help="what is being done about it (required)")
    sp.add_argument("--by", default="", help="your name (default: admin@ADDRESS)")

    p = sub.add("oauth2", "sign OAuth2 mail accounts in and out")
    p.set_defaults(func=cmd_oauth2)
    oauth2 = _Sub(p, "oauth2_cmd", "ACTION")
    sp = oauth2.add(
        "authorize",
        "sign an account in: prints the URL to open and catches the redirect on loopback",
    )
    sp.add_argument("account", help="the account's name in the config")
    sp.add_argument(
        "--device",
        action="store_true",
        help="use the device grant: enter a code on any device (default: browser redirect)",
    )
    oauth2.add("status", "each OAuth2 account's state, expiry and reason")
    sp = oauth2.add("revoke", "delete an account's stored tokens (and revoke them at Google)")
    sp.add_argument("account", help="the account's name in the config")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        # What a command creates (spool, alarm state, outbox, tokens) is for its user only.
        with private_files():
            status: int = args.func(args)
    except CliError as e:
        if str(e):
            print(f"notifier: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return EXIT_FAIL
    return status


if __name__ == "__main__":
    sys.exit(main())
