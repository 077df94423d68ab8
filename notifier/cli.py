"""The command line: `notifier run | check-config | send-alarm | spool ... | test-mail |
oauth2 ...`.

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

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A failure to report as one line, with the exit status to use."""

    def __init__(self, message: str, status: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.status = status


def _settings(args: argparse.Namespace) -> Settings:
    from notifier.dispatch.service import address_problems
    from notifier.oauth2.runtime import validate_accounts

    try:
        settings = load_settings(args.config)
        problems = address_problems(settings) + validate_accounts(settings)
        if problems:
            raise ConfigError(problems)
    except ConfigError as e:
        for line in e.problems:
            print(f"notifier: config: {line}", file=sys.stderr)
        raise CliError("", EXIT_USAGE) from None
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from notifier.app import run_service

    settings = _settings(args)
    return run_service(settings)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(f"# notifier {__version__}: configuration is valid; effective values, secrets masked")
    effective = masked(settings)
    effective["routes"] = [
        r.model_dump(mode="json", by_alias=True) for r in settings.effective_routes()
    ]
    print(to_toml(effective), end="")
    return EXIT_OK


def cmd_send_alarm(args: argparse.Namespace) -> int:
    import httpx

    record: dict[str, Any] = {
        "type": args.type,
        "severity": args.severity,
        "code": args.code,
        "host": args.host,
        "source": args.source,
        "text": args.text,
    }
    if args.serial:
        record["serial"] = args.serial
    url = args.url
    if not url:
        settings = _settings(args)
        from notifier.config import Listen, parse_listen

        listen = parse_listen(settings.http.listen)
        if listen is None:
            raise CliError("http.listen is disabled in the config: pass --url", EXIT_USAGE)
        host = "127.0.0.1" if listen.host in ("0.0.0.0", "") else listen.host
        host = "::1" if host == "::" else host
        scheme = "https" if settings.http.tls_cert_file else "http"
        url = f"{scheme}://{Listen(host=host, port=listen.port)}/api/v1/records"
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
    print(f"sent {args.type} {args.code} from {args.host} to {url}: {response.text.strip()}")
    return EXIT_OK


def cmd_spool(args: argparse.Namespace) -> int:
    from notifier.spool import admin

    settings = _settings(args)
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


def cmd_test_mail(args: argparse.Namespace) -> int:
    from notifier.app import send_test_mail

    settings = _settings(args)
    return send_test_mail(settings, account=args.account, to=args.to)


def cmd_oauth2(args: argparse.Namespace) -> int:
    from notifier.oauth2 import cli as oauth2_cli

    settings = _settings(args)
    if args.oauth2_cmd == "authorize":
        return oauth2_cli.authorize(settings, args.account, device=args.device)
    if args.oauth2_cmd == "revoke":
        return oauth2_cli.revoke(settings, args.account)
    return oauth2_cli.status(settings)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Takes alarms, events and log lines from innovaphone devices and any syslog or "
        "HTTP sender, and mails the ones people must hear about.",
    )
    parser.add_argument("--version", action="version", version=f"notifier {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="TOML config file (default: $NOTIFIER_CONFIG, else embedded defaults)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run the service in the foreground")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check-config", parents=[common], help="validate the config and print the effective values"
    )
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "send-alarm", parents=[common], help="send a sample alarm to a running notifier"
    )
    p.add_argument("--url", help="JSON endpoint (default: from the config's http.listen)")
    p.add_argument("--type", choices=["alarm", "clear", "error"], default="alarm")
    p.add_argument("--severity", default="major")
    p.add_argument("--code", default="0x00010002")
    p.add_argument("--host", default="gw01")
    p.add_argument("--serial", default="")
    p.add_argument("--source", default="RELAY/RECH")
    p.add_argument("--text", default="Registration down")
    p.add_argument("--user", metavar="NAME:PASSWORD", help="HTTP sender credentials")
    p.add_argument("--digest", action="store_true", help="use Digest instead of Basic auth")
    p.add_argument("--insecure", action="store_true", help="do not verify the HTTPS certificate")
    p.set_defaults(func=cmd_send_alarm)

    p = sub.add_parser("spool", parents=[common], help="inspect and repair the spool")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    spool_sub = p.add_subparsers(dest="spool_cmd", metavar="ACTION", required=True)
    spool_sub.add_parser("stats", help="queue depths, limits, drops")
    sp = spool_sub.add_parser("list", help="records in the spool, newest first")
    sp.add_argument("--state", choices=["ready", "leased", "retry", "dead", "done"], default=None)
    sp.add_argument("--limit", type=int, default=50)
    sp = spool_sub.add_parser("show", help="one record with its deliveries and last errors")
    sp.add_argument("id")
    sp = spool_sub.add_parser("retry", help="make a dead record (or all with --dead) ready again")
    sp.add_argument("id", nargs="?")
    sp.add_argument("--dead", action="store_true")
    sp = spool_sub.add_parser(
        "purge", help="delete dead-lettered records, or what waits for a removed route"
    )
    sp.add_argument("--dead", action="store_true", help="delete dead-lettered deliveries")
    sp.add_argument(
        "--consumer", metavar="NAME", help="delete the deliveries of a route no longer configured"
    )
    p.set_defaults(func=cmd_spool)

    p = sub.add_parser(
        "test-mail", parents=[common], help="send one test mail and say what happened"
    )
    p.add_argument("--account", "-a", default="", help="account name (default: the first)")
    p.add_argument("--to", default="", help="recipient (default: the first route's)")
    p.set_defaults(func=cmd_test_mail)

    p = sub.add_parser("oauth2", parents=[common], help="sign OAuth2 mail accounts in and out")
    oauth2_sub = p.add_subparsers(dest="oauth2_cmd", metavar="ACTION", required=True)
    # --config after the action too (`notifier oauth2 status --config FILE`).
    late_config = argparse.ArgumentParser(add_help=False)
    late_config.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS)
    sp = oauth2_sub.add_parser(
        "authorize",
        parents=[late_config],
        help="sign an account in: prints the URL to open and catches the redirect on loopback",
    )
    sp.add_argument("account")
    sp.add_argument(
        "--device", action="store_true", help="use the device grant (enter a code elsewhere)"
    )
    oauth2_sub.add_parser(
        "status", parents=[late_config], help="each OAuth2 account's state, expiry and reason"
    )
    sp = oauth2_sub.add_parser(
        "revoke", parents=[late_config], help="delete an account's stored tokens (and revoke)"
    )
    sp.add_argument("account")
    p.set_defaults(func=cmd_oauth2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
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
