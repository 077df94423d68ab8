"""examples/oauth2/<mode>.toml: one per mode, each valid for `notifier check-config` once its
secret and key files exist (placeholders here, real values in production)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from notifier.cli import main
from notifier.oauth2.modes import MODES
from tests.oauth2.conftest import KeyPair

EXAMPLES = Path(__file__).parents[2] / "examples" / "oauth2"


def test_there_is_one_example_per_mode() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.toml")) == sorted(MODES)


def _fill_in(path: str, keys: KeyPair) -> None:
    """Create what the example names under /etc/notifier, as a user would."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    if file.name.endswith("-key.pem"):
        file.write_bytes(keys.private_pem)
    elif file.name.endswith("-cert.pem"):
        file.write_bytes(keys.certificate_file.read_bytes())
    elif file.name == "google-client.json":
        client = {"client_id": "1234.apps.googleusercontent.com", "client_secret": "GOCSPX-x"}
        file.write_text(json.dumps({"web": client}))
    elif file.name == "service-account.json":
        file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "client_email": "notifier@project.iam.gserviceaccount.com",
                    "private_key_id": "0123abcd",
                    "private_key": keys.private_pem.decode(),
                }
            )
        )
    else:
        file.write_text("placeholder secret\n")


# The HTTP mail API transports, one example each: (file, its mode, its transport).
API_EXAMPLES = [
    ("graph", "microsoft365_app", "graph"),
    ("gmail_api", "google_service_account", "gmail_api"),
]


@pytest.mark.parametrize(
    ("example", "mode", "transport"),
    [(EXAMPLES / f"{mode}.toml", mode, "smtp") for mode in MODES]
    + [(EXAMPLES.parent / "api" / f"{name}.toml", mode, t) for name, mode, t in API_EXAMPLES],
    ids=[*MODES, *(f"api-{name}" for name, _, _ in API_EXAMPLES)],
)
def test_example_passes_check_config(
    example: Path,
    mode: str,
    transport: str,
    tmp_path: Path,
    rsa_keys: KeyPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = example.read_text()
    text = text.replace("/var/lib/notifier", str(tmp_path / "var"))
    text = text.replace("/etc/notifier/", f"{tmp_path}/etc/")
    config = tmp_path / example.name
    config.write_text(text)

    assert main(["check-config", "--config", str(config)]) == 2  # files not there yet
    assert "cannot read" in capsys.readouterr().err

    for path in re.findall(r'^\w+_file = "([^"]+)"', text, re.M):
        _fill_in(path, rsa_keys)
    assert main(["check-config", "--config", str(config)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f'mode = "{mode}"' in out
    assert f'transport = "{transport}"' in out
    assert "placeholder secret" not in out
