"""The README's "Alertmanager and Grafana webhooks" snippets, used as written: the Alertmanager
receiver passes `amtool check-config` (tests/e2e/test_alertmanager.py runs it in a real
Alertmanager), and a notifier configured with the `[webhooks]` and route snippets takes Grafana's
recorded webhook with the README's contact point settings and mails each alert where its labels
say."""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.ingest.http import ALERTMANAGER_PATH, GRAFANA_PATH
from tests.alertmanager import README, binary, readme_alertmanager_yaml
from tests.service import NotifierProcess, wait_for
from tests.smtpserver import ReceivedMail, SmtpTestServer

PAYLOADS = Path(__file__).resolve().parents[1] / "ingest" / "payloads"
TOKEN_PATH = "/etc/notifier/webhook-token"


def webhook_section() -> str:
    text = README.read_text()
    heading = "\n### Alertmanager and Grafana webhooks\n"
    start = text.index(heading)
    # Up to the next heading of any level (the SMTP relay's part follows).
    end = re.compile(r"^##", re.M).search(text, start + len(heading))
    return text[start : end.start() if end else len(text)]


def readme_toml() -> list[dict[str, Any]]:
    blocks = re.findall(r"```toml\n(.*?)```", webhook_section(), re.S)
    return [tomllib.loads(block) for block in blocks]


def grafana_setting(name: str) -> str:
    match = re.search(rf"^\| {re.escape(name)} \| (.*?) \|$", webhook_section(), re.M)
    assert match, f"no Grafana setting {name!r} in the README"
    return match.group(1)


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def test_the_readme_alertmanager_receiver_passes_amtool_check_config(tmp_path: Path) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(readme_alertmanager_yaml())
    checked = subprocess.run(
        [binary("amtool"), "check-config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{ALERTMANAGER_PATH}\n" in readme_alertmanager_yaml()


def test_grafana_posts_as_the_readme_says_and_labels_route_the_mails(
    tmp_path: Path, smtp: SmtpTestServer
) -> None:
    webhooks, routes = readme_toml()
    token_file = tmp_path / "webhook-token"
    token_file.write_text("a-token\n")
    assert webhooks["webhooks"]["bearer_token_file"] == TOKEN_PATH
    webhooks["webhooks"]["bearer_token_file"] = str(token_file)
    [(user, password)] = webhooks["webhooks"]["users"].items()
    account = {
        "name": "ops",
        "server": f"127.0.0.1:{smtp.port}",
        "tls": "none",
        "sender_address": "alerts@notifier.test",
    }
    config = {**webhooks, "accounts": [account], "routes": routes["routes"]}
    url = re.sub(r"`(http://[^/]+)", "", grafana_setting("URL")).strip("`")
    assert url == GRAFANA_PATH and grafana_setting("HTTP Method") == "POST"

    with NotifierProcess(tmp_path / "notifier", config) as notifier:

        def post(payload: str, auth: tuple[str, str] | None) -> httpx.Response:
            body = (PAYLOADS / payload).read_bytes()
            return httpx.post(f"{notifier.url}{url}", content=body, auth=auth, timeout=10)

        assert post("grafana-firing.json", (user, "wrong")).status_code == 401
        assert post("grafana-firing.json", (user, password)).json()["accepted"] == 2

        def mail_to(address: str, count: int = 1) -> list[ReceivedMail]:
            mails = [m for m in smtp.received if m.rcpt_tos == (address,)]
            return mails if len(mails) >= count else []

        [oncall] = wait_for(lambda: mail_to("voice-oncall@example.com"), what="the on-call mail")
        assert str(oncall.message["Subject"]).strip() == (
            "[ALARM Critical] pbx01.example.net: All SIP trunks of pbx01 are down (PBX trunk down)"
        )
        [ops] = wait_for(lambda: mail_to("ops@example.com"), what="the ops mail")
        assert "Registration rate low" in str(ops.message["Subject"])

        assert post("grafana-resolved.json", (user, password)).json()["accepted"] == 1
        cleared = wait_for(lambda: mail_to("voice-oncall@example.com", 2), what="the clear")[1]
        assert str(cleared.message["Subject"]).strip().startswith("[CLEARED] pbx01.example.net")
        text = cleared.message.get_body(("plain",)).get_content()
        assert "runbook_url: https://wiki.example.net/runbooks/trunk-down" in text
        assert "team = voice" in text
