"""deploy/compose.yaml: PostgreSQL and two notifier instances, read as compose reads it and
checked against the image and the settings: what its header tells a user to run must give
two instances that start on one database."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from notifier.config import load_settings
from tests.test_deploy import containerfile

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"


def compose() -> tuple[dict[str, Any], str]:
    text = COMPOSE.read_text()
    header = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    return yaml.safe_load(text), header


def notifiers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in doc["services"].items() if name.startswith("notifier")}


def test_two_notifiers_share_the_postgresql_service_of_the_file() -> None:
    doc, header = compose()
    pg = doc["services"]["postgres"]
    user, db = pg["environment"]["POSTGRES_USER"], pg["environment"]["POSTGRES_DB"]
    instances = notifiers(doc)
    assert len(instances) == 2
    # The DSN the recipe writes names this service, its user and database.
    (dsn_line,) = [line for line in header.splitlines() if "> secrets/notifier-dsn" in line]
    assert f"postgresql://{user}:%s@postgres:5432/{db}" in dsn_line
    for service in instances.values():
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["image"] == instances["notifier-a"]["image"]


def test_every_secret_is_created_by_the_recipe_and_mounted_where_the_settings_read_it(
    tmp_path: Path,
) -> None:
    doc, header = compose()
    for secret in doc["secrets"].values():
        written = secret["file"].removeprefix("./")
        assert f"> {written}" in header, f"the header's recipe does not create {written}"
    names = set()
    for service in notifiers(doc).values():
        env = service["environment"]
        for key, path in env.items():
            if key.endswith("_FILE"):
                assert path.removeprefix("/run/secrets/") in service["secrets"], key
        files = {
            "notifier-dsn": "postgresql://notifier:pw@postgres:5432/notifier",
            "notifier-admin": "correct horse",
            "notifier-store-secret": "k" * 64,
        }
        environ = dict(env)
        for key, path in env.items():
            if key.endswith("_FILE"):
                local = tmp_path / path.rsplit("/", 1)[1]
                local.write_text(files[local.name] + "\n")
                environ[key] = str(local)
        settings = load_settings(None, environ=environ)
        assert settings.spool.backend == "postgresql"
        assert settings.spool.dsn.get_secret_value() == files["notifier-dsn"]
        assert settings.web.admin_password.get_secret_value() == files["notifier-admin"]
        # One key for the shared token store: every instance decrypts every token.
        assert settings.oauth2.store_secret.get_secret_value() == files["notifier-store-secret"]
        names.add(settings.instance())
    assert len(names) == 2  # instance names are unique on one database


def test_each_instance_publishes_the_images_ports_on_host_ports_of_its_own() -> None:
    doc, header = compose()
    instructions, _ = containerfile()
    exposed = set(next(args for kw, args in instructions if kw == "EXPOSE").split())
    host_ports: list[str] = []
    for service in notifiers(doc).values():
        published = [shlex.split(p)[0] for p in service["ports"]]
        assert {p.split(":", 1)[1] for p in published} == exposed
        host_ports += [
            p.split(":", 1)[0] + ("/udp" if p.endswith("/udp") else "") for p in published
        ]
        volumes = service["volumes"]
        assert any(v.split(":")[1] == "/var/lib/notifier" for v in volumes)
        assert any(v.split(":")[1] == "/etc/notifier/notifier.toml" for v in volumes)
    assert len(host_ports) == len(set(host_ports))
    for port in re.findall(r"\b(80\d\d|55\d\d)\b", header):
        assert any(h.startswith(port) for h in host_ports), port


def test_the_header_says_how_to_make_postgresql_itself_highly_available() -> None:
    _, header = compose()
    assert "Patroni" in header and "managed service" in header
