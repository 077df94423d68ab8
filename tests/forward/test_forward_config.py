"""[[forwards]] settings: what a wrong entry says, and secrets kept out of check-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.config import ConfigError, load_settings
from tests.test_config import notifier


def problems(tmp_path: Path, toml: str) -> list[str]:
    cfg = tmp_path / "n.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(cfg, environ={})
    return caught.value.problems


def test_each_kind_says_what_it_needs(tmp_path: Path) -> None:
    assert problems(tmp_path, '[[forwards]]\nkind = "http"\n') == [
        "forwards.0: kind = 'http' needs url = 'http(s)://...' (got '')"
    ]
    assert problems(tmp_path, '[[forwards]]\nkind = "syslog"\n') == [
        "forwards.0: kind = 'syslog' needs target = 'host:port'"
    ]
    assert problems(tmp_path, '[[forwards]]\ntarget = "siem:70000"\nclass = 8\n') == [
        "forwards.0.target: bad port '70000' in 'siem:70000': use 1..65535",
        "forwards.0.class: Input should be less than or equal to 7 (got 8)",
    ]


def test_two_forwards_of_one_name_are_refused(tmp_path: Path) -> None:
    toml = '[[forwards]]\nname = "a"\ntarget = "h:514"\n[[forwards]]\nname = "A"\ntarget = "h:1"\n'
    assert problems(tmp_path, toml) == [
        "forwards.1.name: 'a' is also the name of forwards.0: give each forward its own name"
    ]


def test_forward_password_comes_from_a_file_and_check_config_masks_it(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("fw-secret-1\n")
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        '[[forwards]]\nname = "siem"\nkind = "http"\nurl = "http://127.0.0.1:9/log"\n'
        f'auth = "basic"\nusername = "u"\npassword_file = "{tmp_path / "pw"}"\n'
        'match = { kinds = ["log"] }\n'
    )
    settings = load_settings(cfg, environ={})
    assert settings.forwards[0].password.get_secret_value() == "fw-secret-1"
    out = notifier("check-config", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "[[forwards]]" in out.stdout and 'password = "***"' in out.stdout
    assert "fw-secret-1" not in out.stdout


def test_the_readmes_forward_example_is_a_valid_config(tmp_path: Path) -> None:
    from tests.e2e.test_readme import code_blocks, section

    (block,) = code_blocks(section("Forwarding to other servers"), "toml")
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "ca.pem").write_text("")
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        block.replace("/run/secrets/notifier2", str(tmp_path / "pw")).replace(
            "/etc/ssl/siem-ca.pem", str(tmp_path / "ca.pem")
        )
    )
    forwards = load_settings(cfg, environ={}).effective_forwards()
    assert [(f.name, f.kind, f.facility_class) for f in forwards] == [
        ("siem", "syslog", 0),
        ("second-notifier", "http", 0),
    ]
    assert forwards[1].password.get_secret_value() == "secret"


def test_check_config_refuses_a_bad_forward_rule_or_ca_file(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        '[[forwards]]\nname = "siem"\ntarget = "h:6514"\nprotocol = "tls"\n'
        f'ca_file = "{tmp_path / "missing.pem"}"\nmatch = {{ text = "(" }}\n'
    )
    out = notifier("check-config", "--config", str(cfg))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("notifier: config: forwards.0.match.text: ")
    assert lines[1].startswith(f"notifier: config: forwards.siem.ca_file: cannot load '{tmp_path}")


def test_check_config_prints_forward_keys_as_written(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    cfg.write_text('[[forwards]]\nname = "siem"\ntarget = "h:514"\nclass = 3\n')
    out = notifier("check-config", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "class = 3" in out.stdout and "facility_class" not in out.stdout
