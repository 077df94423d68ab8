"""The one settings tree: TOML file, overlaid by NOTIFIER_* environment variables, validated once.

Both are pydantic-settings sources of `Settings` (`TomlFileSource`, `EnvironmentSource`).
Precedence: environment > file > defaults. Nested keys use ``__``: ``NOTIFIER_HTTP__LISTEN``;
list entries are addressed by index or, for accounts and routes, by name:
``NOTIFIER_ACCOUNTS__OPS__PASSWORD``. Values are read as JSON when they are a JSON list or table,
else as plain strings (validation makes numbers and booleans of them where a key wants one, so
a password of digits stays a string). Any ``*_file`` key names a file whose content (one
trailing newline stripped) becomes the value of the key without ``_file``: secrets stay out of
the config file.

Invalid config raises `ConfigError` holding one line per problem, each naming the key.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import json
import os
import socket
import tomllib
import zoneinfo
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from notifier.records import Kind, SeverityScheme

ENV_PREFIX = "NOTIFIER_"
RECEIVERS = (
    "http",
    "json",
    "syslog-udp",
    "syslog-tcp",
    "syslog-tls",
    "tcp",
    "alertmanager",
    "grafana",
)
# The alarm listeners of [syslog] (alarm_udp, alarm_tcp): a device's alarm forward server.
ALARM_RECEIVERS = ("syslog-alarm-udp", "syslog-alarm-tcp")


class ConfigError(Exception):
    """Invalid configuration; `problems` has one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def host_port(host: str, port: int) -> str:
    """The one way an address is written: ``host:port``, ``[v6]:port``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Listen(BaseModel):
    """A parsed "host:port" address (a listen address, or a server's)."""

    model_config = ConfigDict(frozen=True)
    host: str
    port: int

    def __str__(self) -> str:
        return host_port(self.host, self.port)


def parse_listen(value: str, example: str = "127.0.0.1:5514") -> Listen | None:
    """``"127.0.0.1:8080"``, ``"[::1]:5514"``, ``":8080"`` (all addresses); ``""`` disables."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r}: expected [ipv6]:port")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"{value!r}: expected host:port, e.g. {example}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r} in {value!r}: use 1..65535")
    host = host or "0.0.0.0"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    return Listen(host=host, port=int(port_text))


def _check_listen(value: str) -> str:
    parse_listen(value)
    return value


class Section(BaseModel):
    """Base of every section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class IngestSettings(Section):
    # How a numeric alarm severity is read: events_api (Minor 0 / Indeterminate 1 / Major 2) or
    # sdk (Indeterminate 0 / Major 1 / Critical 2).
    severity_scheme: SeverityScheme = SeverityScheme.EVENTS_API


class HttpSettings(Section):
    listen: str = "127.0.0.1:8080"
    paths: list[str] = Field(default_factory=lambda: ["/log", "/alarm"])
    catch_all: bool = True
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    auth: Literal["none", "basic", "digest"] = "none"
    users: dict[str, SecretStr] = Field(default_factory=dict)
    users_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # At max_connections the connection idle longest is closed to make room for a new one.
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_peer: int = Field(default=64, ge=1)  # more from one address: 503
    keep_alive_s: float = Field(default=30, gt=0)

    _listen = field_validator("listen")(_check_listen)

    @field_validator("paths")
    @classmethod
    def _paths_absolute(cls, paths: list[str]) -> list[str]:
        for p in paths:
            if not p.startswith("/"):
                raise ValueError(f"path {p!r} must start with '/'")
        return paths

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.auth != "none" and not self.users:
            raise ValueError(f"auth = {self.auth!r} needs users (or users_file)")
        return self


class SyslogSettings(Section):
    udp: str = "127.0.0.1:5514"
    tcp: str = "127.0.0.1:5514"
    tls: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    udp_rcvbuf_bytes: int = Field(default=8 << 20, ge=65536)
    max_frame_bytes: int = Field(default=65536, ge=480)
    # TCP and TLS each; at max_connections the longest-silent connection is closed for a new one.
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_peer: int = Field(default=64, ge=1)  # more from one address: closed
    idle_timeout_s: float = Field(default=300, gt=0)
    # A device's alarm forward server, apart from its log server: read before the log
    # listeners, so a log flood on `udp` cannot crowd out an alarm ("" = off).
    alarm_udp: str = ""
    alarm_tcp: str = ""

    _listen = field_validator("udp", "tcp", "tls", "alarm_udp", "alarm_tcp")(_check_listen)

    @model_validator(mode="after")
    def _tls_needs_cert(self) -> SyslogSettings:
        if self.tls and not (self.tls_cert_file and self.tls_key_file):
            raise ValueError("tls is set: tls_cert_file and tls_key_file are required")
        return self


class TcpSettings(Section):
    listen: str = "127.0.0.1:5515"
    max_line_bytes: int = Field(default=65536, ge=480)
    # At max_connections the longest-silent connection is closed to make room for a new one.
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_peer: int = Field(default=64, ge=1)  # more from one address: closed
    idle_timeout_s: float = Field(default=300, gt=0)

    _listen = field_validator("listen")(_check_listen)


class SmtpRelaySettings(Section):
    """The SMTP relay: devices that only know SMTP passwords hand their mails to notifier,
    which sends them on through `account` (OAuth2 included)."""

    listen: str = ""  # "" = off, e.g. "127.0.0.1:2525"
    tls_cert_file: str = ""  # with tls_key_file: STARTTLS is offered, and then AUTH
    tls_key_file: str = ""
    users: dict[str, SecretStr] = Field(default_factory=dict)
    users_file: str = ""
    max_message_bytes: int = Field(default=10 << 20, ge=1024)
    allowed_senders: list[str] = Field(default_factory=list)  # globs on MAIL FROM; [] = any
    allowed_recipients: list[str] = Field(default_factory=list)  # globs on RCPT TO; [] = any
    account: str = ""  # default: the first account
    rewrite_from: bool = True

    _listen = field_validator("listen")(_check_listen)

    @model_validator(mode="after")
    def _tls_and_users(self) -> SmtpRelaySettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.users and not self.tls_cert_file:
            raise ValueError(
                "users are set but AUTH is offered only after STARTTLS, so no one could log "
                "in: set tls_cert_file and tls_key_file"
            )
        return self


class ReceiverSpoolSettings(Section):
    """Per-receiver spool policy; an unset key keeps the [spool] default."""

    durable_kinds: list[Kind] | None = None
    overflow: Literal["reject", "drop_oldest"] | None = None


class SpoolSettings(Section):
    # sqlite: one box, the file under data_dir. postgresql: several instances on one database.
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    # libpq URI (postgresql://user@host:5432/notifier?sslmode=verify-full); a secret.
    dsn: SecretStr = SecretStr("")
    dsn_file: str = ""
    # innovaphone device defaults: 100 memory and 50 persistent entries; a server holds a fleet's.
    memory_queue_entries: int = Field(default=10_000, ge=1)
    persistent_queue_entries: int = Field(default=100_000, ge=1)
    max_disk_bytes: int = Field(default=1 << 30, ge=1 << 20)
    durable_kinds: list[Kind] = Field(default_factory=lambda: [Kind.ALARM, Kind.CLEAR, Kind.EVENT])
    overflow: Literal["reject", "drop_oldest"] = "reject"
    history_entries: int = Field(default=1000, ge=0)
    retry_base_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=900.0, gt=0)
    # postgresql: identical records put through several instances within this many seconds
    # are stored once (see the README, "Running several instances"); 0 = off.
    dedupe_window_s: float = Field(default=60.0, ge=0)
    # Per receiver (one of RECEIVERS): durable_kinds, overflow.
    receivers: dict[str, ReceiverSpoolSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _dsn_for_postgresql(self) -> SpoolSettings:
        if self.backend == "postgresql" and not self.dsn.get_secret_value():
            raise ValueError(
                'backend = "postgresql" needs dsn (or dsn_file): '
                "a libpq URI such as postgresql://notifier@db.example.com:5432/notifier"
            )
        return self

    @field_validator("receivers")
    @classmethod
    def _known_receivers(
        cls, value: dict[str, ReceiverSpoolSettings]
    ) -> dict[str, ReceiverSpoolSettings]:
        for name in value:
            if name not in RECEIVERS + ALARM_RECEIVERS:
                known = ", ".join(RECEIVERS + ALARM_RECEIVERS)
                raise ValueError(f"unknown receiver {name!r}: use one of {known}")
        return value


# "" = no OAuth2 (password or no authentication).
OAuth2Mode = Literal[
    "",
    "exchange",
    "microsoft365",
    "microsoft365_app",
    "gmail",
    "google_service_account",
    "client_secret_post",
    "private_key_jwt",
]


class OAuth2Settings(Section):
    mode: OAuth2Mode = ""
    mechanism: Literal["xoauth2", "oauthbearer"] = "xoauth2"
    tenant: str = ""
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    client_secret_file: str = ""
    resource_owner: str = ""
    resource_owner_password: SecretStr = SecretStr("")
    resource_owner_password_file: str = ""
    scope: str = ""
    token_endpoint: str = ""
    authorization_url: str = ""
    grant: Literal["", "authorization_code", "password", "client_credentials"] = ""
    redirect_uri: str = ""
    private_key_file: str = ""
    private_key_id: str = ""
    certificate_file: str = ""
    client_email: str = ""
    service_account_file: str = ""
    client_json_file: str = ""
    device_authorization_url: str = ""  # preset per mode when empty (device grant)
    revocation_url: str = ""  # preset per mode when empty (Google); used by `oauth2 revoke`
    client_auth: Literal["", "post", "basic"] = ""  # how client_secret is sent: form or Basic
    signing_alg: Literal["", "RS256", "PS256", "ES256"] = ""  # "": from the key type
    refresh_margin_s: float = Field(default=600.0, ge=0)  # refresh this long before expiry


def _check_host_port(value: str, example: str) -> str:
    """A server's "host:port" (a name, an IPv4 address or [IPv6]); "" passes (not set)."""
    value = value.strip()
    # A listen address may leave the host out (all addresses); a server address may not.
    if value.startswith(":"):
        raise ValueError(f"{value!r}: expected host:port, e.g. {example}")
    parse_listen(value, example)
    return value


MailTransportKind = Literal["smtp", "graph", "gmail_api"]
GRAPH_URL = "https://graph.microsoft.com"
GMAIL_URL = "https://gmail.googleapis.com"


class AccountSettings(Section):
    name: str = "ops"
    # smtp (server, or the file outbox) | graph (Microsoft Graph sendMail) | gmail_api
    transport: MailTransportKind = "smtp"
    graph_url: str = GRAPH_URL  # transport = "graph"; overridable for national clouds, tests
    gmail_url: str = GMAIL_URL  # transport = "gmail_api"
    server: str = ""  # "host:port"; "" = file outbox under data_dir/outbox (smtp only)
    tls: Literal["auto", "starttls", "tls", "none"] = "auto"
    ca_file: str = ""
    ehlo_name: str = ""
    sender_address: str = "notifier@example.com"
    sender_name: str = "notifier"
    username: str = ""
    password: SecretStr = SecretStr("")
    password_file: str = ""
    allow_plaintext_auth: bool = False
    timeout_s: float = Field(default=30.0, gt=0)
    oauth2: OAuth2Settings | None = None

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        return _check_host_port(value, "smtp.office365.com:587")

    @property
    def server_address(self) -> Listen | None:
        """The SMTP server; None for the file outbox."""
        return parse_listen(self.server)

    @field_validator("graph_url", "gmail_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r}: expected an http(s):// URL, e.g. {GRAPH_URL}")
        return value

    @property
    def uses_outbox(self) -> bool:
        return self.transport == "smtp" and not self.server

    @property
    def mailbox(self) -> str:
        """The mailbox that sends: the login name, else the sender address."""
        return self.username or self.sender_address


def check_timezone(value: str) -> str:
    """`value` if it names a time zone; raises ValueError saying what to use."""
    if value.upper() == "UTC":
        return value
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None
    return value


class MailSettings(Section):
    timezone: str = "UTC"  # times in mails, e.g. "Europe/Berlin"

    _timezone = field_validator("timezone")(check_timezone)


class MatchSettings(Section):
    kinds: list[Kind] = Field(default_factory=lambda: [Kind.ALARM, Kind.CLEAR, Kind.EVENT])
    severities: list[str] = Field(default_factory=list)
    codes: list[str] = Field(
        default_factory=list
    )  # "0x00010002", prefix "0x0001*", range "0x10-0x1f"
    devices: list[str] = Field(default_factory=list)  # exact or glob
    sources: list[str] = Field(default_factory=list)  # exact or glob
    receivers: list[str] = Field(default_factory=list)
    text: str = ""  # regular expression, searched
    # label name -> glob of its value, all must match; a label the record lacks is "".
    labels: dict[str, str] = Field(default_factory=dict)
    min_severity: str = ""  # this severity and above, e.g. "major" (also critical)


class SilenceMatchSettings(MatchSettings):
    """What a silence or maintenance window mutes: a route's match keys, and route names."""

    routes: list[str] = Field(default_factory=list)  # route names; empty: every route


class MaintenanceSettings(Section):
    """A recurring silence. The schedule, duration and zone are checked by `config_problems`
    (`notifier/dispatch/control.py`), the one path of `run` and `check-config`."""

    name: str = ""  # default window<index>
    match: SilenceMatchSettings = Field(default_factory=SilenceMatchSettings)
    schedule: str = ""  # cron, in `timezone`: when each window starts, e.g. "0 2 * * SUN"
    duration: str | float = "1h"  # how long each window lasts: 90s, 30m, 2h, 1d or seconds
    timezone: str = "UTC"  # IANA name, e.g. "Europe/Berlin"


class RouteSettings(Section):
    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)
    name: str = ""
    account: str = ""  # default: the first account
    to: list[str] = Field(default_factory=lambda: ["ops@example.com"])
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    match: MatchSettings = Field(default_factory=MatchSettings)
    # First match wins; `continue = true` lets records this route takes go on to later routes.
    continue_matching: bool = Field(default=False, alias="continue")
    # The route's own Jinja2 templates (sandboxed; "" = the built-in one); README: variables.
    subject_template: str = ""
    body_template: str = ""
    body_html_template: str = ""
    group_wait_s: float = Field(default=10.0, ge=0)
    group_interval_s: float = Field(default=300.0, ge=0)
    repeat_interval_s: float = Field(default=14_400.0, ge=0)
    max_mails_per_minute: int = Field(default=10, ge=1)
    max_records_per_mail: int = Field(default=50, ge=1)
    # Alarm states remembered per route (memory and alarms.sqlite): oldest cleared go first.
    max_alarm_states: int = Field(default=10_000, ge=1)


def _check_target(value: str) -> str:
    return _check_host_port(value, "siem.example.com:6514")


class ForwardSettings(Section):
    """A forward: records passed on to an HTTP or syslog server, as an innovaphone gateway does."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)
    name: str = ""
    kind: Literal["http", "syslog"] = "syslog"
    match: MatchSettings = Field(default_factory=MatchSettings)
    # Silences and maintenance windows mute forwards only when this is true (a SIEM wants all).
    respect_silences: bool = False
    # kind = "http"
    url: str = ""
    method: Literal["post", "get", "standard"] = "post"
    auth: Literal["none", "basic", "digest"] = "none"
    username: str = ""
    password: SecretStr = SecretStr("")
    password_file: str = ""
    # kind = "syslog"
    target: str = ""  # host:port
    protocol: Literal["udp", "tcp", "tls"] = "udp"
    framing: Literal["octet-counted", "lf"] = "octet-counted"
    format: Literal["rfc5424", "rfc3164"] = "rfc5424"
    facility_class: int = Field(default=0, ge=0, le=7, alias="class")  # local0..local7
    # both (https:// URLs, protocol = "tls")
    tls_verify: bool = True
    ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    timeout_s: float = Field(default=10.0, gt=0)

    _target = field_validator("target")(_check_target)

    @property
    def target_address(self) -> Listen | None:
        """The syslog server; None for an HTTP forward."""
        return parse_listen(self.target)

    @model_validator(mode="after")
    def _kind_needs(self) -> ForwardSettings:
        if self.kind == "http" and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"kind = 'http' needs url = 'http(s)://...' (got {self.url!r})")
        if self.kind == "syslog" and not self.target:
            raise ValueError("kind = 'syslog' needs target = 'host:port'")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.auth != "none" and not self.username:
            raise ValueError(f"auth = {self.auth!r} needs username and password (or password_file)")
        return self


class OAuth2StoreSettings(Section):
    # Key of the encrypted token store; empty: a key file data_dir/oauth2.key created 0600.
    store_secret: SecretStr = SecretStr("")
    store_secret_file: str = ""


class WebhooksSettings(Section):
    """Who may post to /api/v1/alertmanager and /api/v1/grafana (Bearer token or Basic users);
    with neither set, only senders on loopback."""

    bearer_token: SecretStr = SecretStr("")
    bearer_token_file: str = ""
    users: dict[str, SecretStr] = Field(default_factory=dict)
    users_file: str = ""


class WebSettings(Section):
    admin_password: SecretStr = SecretStr("")
    admin_password_file: str = ""


def _check_unique_names(section: str, singular: str, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, given in enumerate(names):
        name = (given or f"{singular}{i}").lower()
        if name in seen:
            raise ValueError(
                f"{section}.{i}.name: {name!r} is also the name of {section}.{seen[name]}: "
                f"give each {singular} its own name"
            )
        seen[name] = i


class Settings(BaseSettings):
    """The whole configuration. Build it with `load_settings`, not directly."""

    # case_sensitive: a key is written as documented, in the file as in the environment.
    model_config = SettingsConfigDict(extra="forbid", validate_default=True, case_sensitive=True)

    data_dir: str = "./var"
    # This process among several (hop markers, leases on a shared database, the mail footer);
    # "": host:http-port.
    instance_name: str = ""
    log: LogSettings = Field(default_factory=LogSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    syslog: SyslogSettings = Field(default_factory=SyslogSettings)
    tcp: TcpSettings = Field(default_factory=TcpSettings)
    smtp_relay: SmtpRelaySettings = Field(default_factory=SmtpRelaySettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    accounts: list[AccountSettings] = Field(default_factory=lambda: [AccountSettings()])
    routes: list[RouteSettings] = Field(default_factory=list)
    forwards: list[ForwardSettings] = Field(default_factory=list)
    maintenance: list[MaintenanceSettings] = Field(default_factory=list)
    web: WebSettings = Field(default_factory=WebSettings)
    oauth2: OAuth2StoreSettings = Field(default_factory=OAuth2StoreSettings)
    webhooks: WebhooksSettings = Field(default_factory=WebhooksSettings)
    mail: MailSettings = Field(default_factory=MailSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest first: the environment, then the file (of this `load_settings` call).
        pydantic-settings' own env source cannot address list entries by name and would read
        ``"123"`` as a number; dotenv and secrets_dir are not used (``*_file`` keys are)."""
        path, environ = _LOADING.get()
        toml = TomlFileSource(settings_cls, path)
        return (init_settings, EnvironmentSource(settings_cls, environ, toml.toml_data), toml)

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        """Every ``x_file`` key read into ``x``, after the sources are merged (so a file named
        in the environment counts as much as one named in the config file)."""
        if not isinstance(data, dict):
            return data
        tree = copy.deepcopy(data)
        problems = _read_secret_files(tree)
        if problems:
            # Not a ValueError: pydantic passes it through, one line per problem intact.
            raise ConfigError(problems)
        return tree

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        names = [a.name for a in self.accounts]
        if len(set(names)) != len(names):
            raise ValueError(f"accounts: names must be unique, got {names}")
        if not self.accounts:
            raise ValueError("accounts: at least one account is needed")
        for i, route in enumerate(self.routes):
            if route.account and route.account not in names:
                raise ValueError(
                    f"routes.{i}.account: no account named {route.account!r} (have {names})"
                )
        relay = self.smtp_relay.account
        if relay and relay not in names:
            raise ValueError(f"smtp_relay.account: no account named {relay!r} (have {names})")
        # Route and forward names key the spool (and routes the alarm state): two of one name
        # would take each other's records. Unnamed ones are called route<index>, forward<index>.
        _check_unique_names("routes", "route", [r.name for r in self.routes])
        _check_unique_names("forwards", "forward", [f.name for f in self.forwards])
        _check_unique_names("maintenance", "window", [m.name for m in self.maintenance])
        return self

    def account(self, name: str) -> AccountSettings:
        for a in self.accounts:
            if a.name == name:
                return a
        raise KeyError(name)

    def effective_routes(self) -> list[RouteSettings]:
        """The routes in force: the configured ones, or the default one to the first account."""
        routes = self.routes or [RouteSettings(name="default")]
        return [
            r.model_copy(
                update={
                    "account": r.account or self.accounts[0].name,
                    "name": r.name or f"route{i}",
                }
            )
            for i, r in enumerate(routes)
        ]

    def instance(self) -> str:
        """`instance_name`, else host:http-port: stable across restarts, so a restarted
        instance takes back its own leases and recognises its own hop markers."""
        if self.instance_name:
            return self.instance_name
        listen = parse_listen(self.http.listen)
        return f"{socket.gethostname()}:{listen.port if listen is not None else 0}"

    def effective_forwards(self) -> list[ForwardSettings]:
        """The forwards, each with a name (unnamed ones are called forward<index>)."""
        return [
            f.model_copy(update={"name": f.name or f"forward{i}"})
            for i, f in enumerate(self.forwards)
        ]

    def effective_maintenance(self) -> list[MaintenanceSettings]:
        """The maintenance windows, each with a name (unnamed ones: window<index>)."""
        return [
            m.model_copy(update={"name": m.name or f"window{i}"})
            for i, m in enumerate(self.maintenance)
        ]

    def relay_account(self) -> AccountSettings:
        """The account relayed mails go out through: `smtp_relay.account`, else the first."""
        return self.account(self.smtp_relay.account or self.accounts[0].name)

    # Keys whose values are never shown; each may also be read from a file (``x_file``).
    SECRET_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "password",
            "client_secret",
            "resource_owner_password",
            "admin_password",
            "users",
            "store_secret",
            "dsn",
            "bearer_token",
        }
    )


# --- loading ----------------------------------------------------------------------------------


def _parse_env_value(text: str) -> Any:
    """A list or table when the value is JSON for one, else the string itself (validation turns
    "8080" or "true" into numbers and booleans where the key wants them, and a password of
    digits stays a string)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, list | dict) else text


def _set_path(tree: dict[str, Any], path: list[str], value: Any, origin: str) -> None:
    """Set tree[path] = value; list entries by index or by their "name" key."""
    node: Any = tree
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            index = _list_index(node, key, origin)
            if last:
                node[index] = value
                return
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError([f"{origin}: {'.'.join(path[:i])} is not a table"])
        if last:
            node[key] = value
            return
        child = node.get(key)
        if child is None:
            # Lists the user did not write yet start as their default: one entry to extend.
            child = [dict(_LIST_DEFAULTS[key])] if key in _LIST_DEFAULTS else {}
            node[key] = child
        node = child


_LIST_DEFAULTS: dict[str, dict[str, str]] = {"accounts": {"name": "ops"}, "routes": {}}


def _list_index(items: list[Any], key: str, origin: str) -> int:
    if key.isdigit():
        index = int(key)
        while len(items) <= index:
            items.append({})
        return index
    for index, item in enumerate(items):
        if isinstance(item, dict) and str(item.get("name", "")).lower() == key:
            return index
    raise ConfigError([f"{origin}: no entry named {key!r}"])


def _read_secret_files(tree: Any, path: str = "") -> list[str]:
    """Replace every non-empty ``x_file`` key by the file's content under ``x``."""
    problems: list[str] = []
    if isinstance(tree, list):
        for i, item in enumerate(tree):
            problems += _read_secret_files(item, f"{path}{i}.")
        return problems
    if not isinstance(tree, dict):
        return problems
    for key in list(tree):
        value = tree[key]
        if isinstance(value, dict | list):
            problems += _read_secret_files(value, f"{path}{key}.")
            continue
        target = key.removesuffix("_file")
        if key == target or target not in Settings.SECRET_KEYS or not value:
            continue
        try:
            content = Path(str(value)).read_text(encoding="utf-8").removesuffix("\n")
        except OSError as e:
            problems.append(f"{path}{key}: cannot read {value!r}: {e.strerror or e}")
            continue
        if target == "users":
            try:
                tree[target] = _parse_users(content)
            except ValueError as e:
                problems.append(f"{path}{key}: {value!r}: {e}")
        else:
            tree[target] = content
    return problems


def _parse_users(content: str) -> dict[str, str]:
    """A users file: one ``name:password`` (or ``name = password``) a line; # comments."""
    users: dict[str, str] = {}
    for n, line in enumerate(content.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition(":") if ":" in line else line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"line {n}: expected name:password")
        users[name.strip()] = secret.strip()
    return users


def _known_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _format_errors(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join(loc) or "config"
        if e["type"] == "extra_forbidden":
            hint = _suggest(loc)
            problems.append(f"{key}: unknown key{hint}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        if any(part in Settings.SECRET_KEYS for part in loc) or repr(value) in msg:
            shown = ""
        # Checks across keys name their keys in the message themselves.
        problems.append(f"{key}: {msg}{shown}" if loc else msg)
    return problems


def _suggest(loc: list[str]) -> str:
    """'did you mean' from the model that owns the unknown key."""
    model: Any = Settings
    for part in loc[:-1]:
        if part.isdigit():
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return ""
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next(
            (a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if model is None:
            return ""
    close = difflib.get_close_matches(loc[-1].lower(), _known_keys(model), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config file as a tree; raises `ConfigError` with one line when it cannot be read."""
    where = f"config file {str(path)!r}"
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{where} not found"]) from None
    except OSError as e:
        raise ConfigError([f"{where}: {e.strerror or e}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            [f"{where}: not UTF-8 (byte 0x{data[e.start]:02x} on line {line}): save it as UTF-8"]
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{where}: not valid TOML: {e}"]) from None


class TomlFileSource(TomlConfigSettingsSource):
    """The config file, if one is named. Unlike pydantic-settings' TOML source, a file that is
    named but missing, unreadable, not UTF-8 or not TOML is a `ConfigError`, not skipped."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        if path is not None and not Path(path).is_file():
            read_toml(path)  # raises the one line that says why
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return read_toml(file_path)


class EnvironmentSource(PydanticBaseSettingsSource):
    """``NOTIFIER_*`` variables. A list entry is addressed by index or by name in the list the
    file gave (`file_tree`), so what this source returns for a list is the file's list with the
    overrides applied: lists are replaced whole when sources are merged, tables key by key."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        environ: Mapping[str, str],
        file_tree: Mapping[str, Any],
    ) -> None:
        super().__init__(settings_cls)
        self._environ = environ
        self._file_tree = file_tree

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Values are set by path in __call__, not field by field.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        tree = copy.deepcopy(dict(self._file_tree))
        touched: set[str] = set()
        for name in sorted(self._environ):
            if not name.startswith(ENV_PREFIX) or name == "NOTIFIER_CONFIG":
                continue
            keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
            if not all(keys):
                raise ConfigError([f"{name}: empty key segment"])
            _set_path(tree, keys, _parse_env_value(self._environ[name]), name)
            touched.add(keys[0])
        return {key: tree[key] for key in sorted(touched)}


# The file and environment `Settings` reads its sources from (set by `load_settings`).
_LOADING: ContextVar[tuple[str | None, Mapping[str, str]]] = ContextVar(
    "notifier_config_sources", default=(None, {})
)


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file (if any), overlay the environment, read secret files, validate.

    Raises `ConfigError` with one line per problem.
    """
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get("NOTIFIER_CONFIG") or None
    token = _LOADING.set((None if path is None else os.fspath(path), env))
    try:
        return Settings()
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None
    finally:
        _LOADING.reset(token)


def masked(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data with every secret replaced by "***" (or "" if unset)."""
    # By alias: the keys as written in the file (`continue`, `class`).
    data: dict[str, Any] = json.loads(settings.model_dump_json(by_alias=True))

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (
                    {u: "***" for u in v}
                    if k == "users" and isinstance(v, dict)
                    else ("***" if v else "")
                    if k in Settings.SECRET_KEYS
                    else walk(v)
                )
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(data)
    return result
