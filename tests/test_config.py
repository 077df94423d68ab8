"""Config: file, environment, secret files, and one clear line per problem."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from notifier.config import ConfigError, Settings, load_settings, masked


def notifier(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_defaults_need_no_file_and_listen_on_loopback() -> None:
    s = load_settings(environ={})
    assert s.http.listen == "127.0.0.1:8080"
    assert s.syslog.udp == s.syslog.tcp == "127.0.0.1:5514"
    assert s.syslog.tls == "" and s.tcp.listen == "127.0.0.1:5515"
    assert s.accounts[0].uses_outbox
    assert [r.account for r in s.effective_routes()] == ["ops"]


def test_environment_overrides_file_and_addresses_accounts_by_name(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        '[http]\nlisten = "127.0.0.1:9000"\n[[accounts]]\nname = "ops"\n'
        'server = "smtp.example.com:587"\n'
    )
    s = load_settings(
        cfg,
        environ={
            "NOTIFIER_HTTP__LISTEN": "127.0.0.1:9100",
            "NOTIFIER_ACCOUNTS__OPS__USERNAME": "alarms@example.com",
            "NOTIFIER_SPOOL__DURABLE_KINDS": '["alarm"]',
        },
    )
    assert s.http.listen == "127.0.0.1:9100"
    assert s.accounts[0].username == "alarms@example.com"
    assert s.accounts[0].server == "smtp.example.com:587"
    assert [k.value for k in s.spool.durable_kinds] == ["alarm"]


def test_secret_files_are_read_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-value\n")
    s = load_settings(environ={"NOTIFIER_ACCOUNTS__0__PASSWORD_FILE": str(secret)})
    assert s.accounts[0].password.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(s) and "s3cret-value" not in str(masked(s))
    assert masked(s)["accounts"][0]["password"] == "***"


def test_every_problem_is_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"NOTIFIER_HTTP__LISTN": "x", "NOTIFIER_SPOOL__OVERFLOW": "never"})
    assert e.value.problems == [
        "http.listn: unknown key (did you mean 'listen'?)",
        "spool.overflow: Input should be 'reject' or 'drop_oldest' (got 'never')",
    ]


def test_check_config_rejects_a_wrong_key_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text("[syslog]\nudp_port = 514\n")
    out = notifier("check-config", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "notifier: config: syslog.udp_port: unknown key (did you mean 'udp'?)"
    )


def test_check_config_rejects_a_bad_port_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text('[http]\nlisten = "0.0.0.0:80800"\n')
    out = notifier("check-config", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "notifier: config: http.listen: bad port '80800' in '0.0.0.0:80800': use 1..65535"
    )


def test_check_config_prints_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    out = notifier(
        "check-config",
        env={
            "NOTIFIER_ACCOUNTS__0__PASSWORD": "hunter2-secret",
            "NOTIFIER_HTTP__AUTH": "basic",
            "NOTIFIER_HTTP__USERS": '{"gw01": "pw-gw01"}',
        },
    )
    assert out.returncode == 0, out.stderr
    assert 'password = "***"' in out.stdout
    assert "hunter2-secret" not in out.stdout and "pw-gw01" not in out.stdout
    assert 'users = {gw01 = "***"}' in out.stdout
    assert "[[routes]]" in out.stdout


def test_missing_config_file_is_one_line() -> None:
    out = notifier("check-config", "--config", "/nonexistent/notifier.toml")
    assert out.returncode == 2
    assert (
        out.stderr.strip() == "notifier: config: config file '/nonexistent/notifier.toml' not found"
    )


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        keys.append(prefix + key)
        for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
            inner = getattr(arg, "__args__", (arg,))
            for candidate in (arg, *inner):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    keys += _keys(candidate, f"{prefix}{key}.")
    return keys


def test_example_config_documents_every_key_and_is_valid() -> None:
    example = Path(__file__).parent.parent / "examples" / "notifier.toml"
    text = example.read_text()
    load_settings(example, environ={})
    # Keys may be commented out ("# mode = ..."), as the optional oauth2 table is.
    written = set(re.findall(r"^[#\s]*([a-z_0-9]+)\s*=", text, flags=re.M))
    tables = re.findall(r"^[#\s]*\[\[?([a-z_0-9.]+)\]\]?", text, flags=re.M)
    written |= {t.rsplit(".", 1)[-1] for t in tables}
    missing = sorted({k for k in _keys(Settings) if k.rsplit(".", 1)[-1] not in written})
    assert missing == []


def test_unusable_mail_addresses_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        '[[accounts]]\nname = "ops"\nsender_address = "notifier"\n'
        '[[routes]]\nto = ["ops@example.com, boss@example.com"]\n'
    )
    out = notifier("check-config", "--config", str(cfg))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("notifier: config: accounts.ops.sender_address: not one valid")
    assert lines[1].startswith("notifier: config: routes.0.to: not one valid mail address")


def test_two_routes_of_one_name_are_refused() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(
            environ={
                "NOTIFIER_ROUTES": '[{"name": "route1", "to": ["a@example.com"]},'
                ' {"to": ["b@example.com"]}]'
            }
        )
    assert e.value.problems == [
        "routes.1.name: 'route1' is also the name of routes.0: give each route its own name"
    ]


def test_secrets_from_the_environment_stay_strings_and_are_never_echoed() -> None:
    s = load_settings(
        environ={
            "NOTIFIER_ACCOUNTS__OPS__PASSWORD": "918273",
            "NOTIFIER_WEB__ADMIN_PASSWORD": "true",
            "NOTIFIER_HTTP__MAX_BODY_BYTES": "4096",
            "NOTIFIER_HTTP__CATCH_ALL": "false",
        }
    )
    assert s.accounts[0].password.get_secret_value() == "918273"
    assert s.web.admin_password.get_secret_value() == "true"
    assert s.http.max_body_bytes == 4096 and s.http.catch_all is False
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"NOTIFIER_HTTP__USERS": '{"gw01": ["s3cret-list"]}'})
    assert "s3cret-list" not in str(e.value)


def test_config_file_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    # "café" saved as Latin-1, as an editor on a Windows box may do.
    cfg.write_bytes(b'[log]\nlevel = "info"\n[[accounts]]\nsender_name = "caf\xe9"\n')
    out = notifier("check-config", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"notifier: config: config file {str(cfg)!r}: not UTF-8 (byte 0xe9 on line 4): "
        "save it as UTF-8"
    )


def test_environment_overrides_one_key_of_a_route_named_in_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        '[[routes]]\nname = "pbx"\nto = ["pbx@example.com"]\n[routes.match]\ncodes = ["0x0001*"]\n'
        '[[routes]]\nname = "gw"\nto = ["gw@example.com"]\n'
        "[spool]\nretry_base_s = 2.0\n"
    )
    s = load_settings(
        cfg,
        environ={
            "NOTIFIER_ROUTES__PBX__MATCH__KINDS": '["alarm"]',
            "NOTIFIER_ROUTES__GW__GROUP_WAIT_S": "0",
            "NOTIFIER_SPOOL__RETRY_MAX_S": "60",
        },
    )
    pbx, gw = s.routes
    assert (pbx.to, pbx.match.codes, [k.value for k in pbx.match.kinds]) == (
        ["pbx@example.com"],
        ["0x0001*"],
        ["alarm"],
    )
    assert (gw.to, gw.group_wait_s) == (["gw@example.com"], 0)
    assert (s.spool.retry_base_s, s.spool.retry_max_s) == (2.0, 60)


def test_a_key_in_the_wrong_case_is_unknown_and_the_right_one_suggested(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text('[HTTP]\nlisten = "127.0.0.1:9000"\n')
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={})
    assert e.value.problems == ["HTTP: unknown key (did you mean 'http'?)"]


def _check(tmp_path: Path, account: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "n.toml"
    cfg.write_text(f'[[accounts]]\nname = "ops"\n{account}\n[[routes]]\nto = ["ops@example.com"]\n')
    return notifier("check-config", "--config", str(cfg))


def test_check_config_names_smtp_keys_that_an_api_transport_ignores(tmp_path: Path) -> None:
    out = _check(
        tmp_path,
        'transport = "graph"\nserver = "smtp.office365.com:587"\ntls = "starttls"\n'
        'gmail_url = "http://127.0.0.1:1"\n'
        '[accounts.oauth2]\nmode = "microsoft365_app"\ntenant = "t"\nclient_id = "c"\n'
        'client_secret = "s"\n',
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    for key in ("server", "tls", "gmail_url"):
        assert (
            f"notifier: config: accounts.ops.{key}: applies to another transport, not "
            'transport = "graph" (nor does the file outbox): remove it'
        ) in lines, out.stderr
    assert len(lines) == 3


def test_check_config_says_an_api_transport_needs_oauth2(tmp_path: Path) -> None:
    out = _check(tmp_path, 'transport = "gmail_api"\n')
    assert out.returncode == 2
    assert 'accounts.ops.transport: transport = "gmail_api" sends with an OAuth2 token' in (
        out.stderr
    )


def test_check_config_accepts_an_api_transport_with_its_oauth2_mode(tmp_path: Path) -> None:
    out = _check(
        tmp_path,
        'transport = "graph"\n[accounts.oauth2]\nmode = "microsoft365_app"\ntenant = "t"\n'
        'client_id = "c"\nclient_secret = "s"\n',
    )
    assert out.returncode == 0, out.stderr
    assert 'transport = "graph"' in out.stdout
    assert 'graph_url = "https://graph.microsoft.com"' in out.stdout
