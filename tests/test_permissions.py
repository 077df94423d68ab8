"""data_dir holds alarms, mails and OAuth2 tokens: only the service's user may read it, whatever
umask `notifier run` was started with (outside systemd, a login shell's is usually 022)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.datadir import exposure_warning
from tests.authserver import AuthServer
from tests.certs import TestPKI
from tests.oauth2.harness import RECIPIENT, oauth2_config, post_alarm, smtp_server
from tests.service import NotifierProcess, wait_for

CLIENT_ID = "notifier-app"
SECRET = "client secret value"


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The umask of a login shell, inherited by the notifier process the test starts."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(directory: Path) -> dict[str, str]:
    """Every path under `directory` (itself as ".") -> its permission bits in octal."""
    found = {".": f"{stat.S_IMODE(directory.stat().st_mode):o}"}
    for path in sorted(directory.rglob("*")):
        found[str(path.relative_to(directory))] = f"{stat.S_IMODE(path.lstat().st_mode):o}"
    return found


def test_data_dir_is_0700_and_every_file_in_it_0600_under_umask_022(
    tmp_path: Path, pki: TestPKI, umask_022: None
) -> None:
    with AuthServer() as server, smtp_server(pki, server, apps=[CLIENT_ID]) as smtp:
        server.add_client(CLIENT_ID, secret=SECRET)
        config = oauth2_config(
            smtp,
            pki,
            {
                "mode": "client_secret_post",
                "grant": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "token_endpoint": server.token_url,
                "scope": "smtp",
            },
        )
        # A second account without a server writes the same alarm to the outbox.
        config["accounts"].append({"name": "files"})
        config["routes"][0]["continue"] = True
        config["routes"].append({**config["routes"][0], "name": "files", "account": "files"})
        with NotifierProcess(tmp_path, config) as proc:
            post_alarm(proc)
            mail = wait_for(lambda: smtp.received, what="the mail over SMTP")[0]
            assert mail.rcpt_tos == (RECIPIENT,)
            wait_for(lambda: list(proc.outbox.glob("*.eml")), what="the mail in the outbox")
            found = modes(proc.data_dir)
    expected_files = {
        "spool.sqlite3",
        "spool.sqlite3-wal",
        "spool.sqlite3-shm",
        "spool.sqlite3.lock",
        "alarms.sqlite",
        "alarms.sqlite-wal",
        "alarms.sqlite-shm",
        "oauth2.key",
        "oauth2-tokens.json",
        "oauth2-tokens.lock",
    }
    assert expected_files <= set(found), found
    assert found.pop(".") == "700"
    assert found.pop("outbox") == "700"
    assert set(found.values()) == {"600"}, found


def test_an_existing_data_dir_readable_by_others_is_warned_about_once_at_start(
    tmp_path: Path, umask_022: None
) -> None:
    (tmp_path / "var").mkdir(mode=0o755)
    with NotifierProcess(tmp_path) as proc:
        warnings = [e for e in proc.log_events() if e["level"] == "warning"]
    assert [w["event"] for w in warnings] == ["data_dir is not private"]
    assert warnings[0]["warning"] == (
        f"data_dir {proc.data_dir} (mode 755) is readable by its group and other users: it holds "
        f"alarms, mails and OAuth2 tokens; run `chmod 700 {proc.data_dir}`"
    )


def test_a_private_data_dir_is_not_warned_about(tmp_path: Path, umask_022: None) -> None:
    with NotifierProcess(tmp_path) as proc:
        events = proc.log_events()
    assert "data_dir is not private" not in json.dumps(events)
    assert stat.S_IMODE(proc.data_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o700, False), (0o711, False), (0o750, True), (0o705, True), (0o777, True)],
)
def test_only_a_data_dir_readable_by_group_or_others_is_warned_about(
    mode: int, warned: bool
) -> None:
    assert bool(exposure_warning(stat.S_IFDIR | mode, Path("var"))) is warned
