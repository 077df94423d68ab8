"""OAuth2 on several instances (#9): two `notifier run` on one throwaway PostgreSQL share one
token store. A sign-in on one is what the other uses; refreshes of a rotating refresh token
are single-flight across both; without `[oauth2] store_secret` the cluster refuses to start."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.authserver import AuthServer
from tests.certs import TestPKI
from tests.oauth2.harness import (
    PASSWORD,
    USER,
    codes_received,
    form_token,
    notifier_cli,
    oauth2_config,
    oauth2_page,
    post_alarm,
    row_of,
    sign_in_on_page,
    smtp_server,
)
from tests.pg import PgServer
from tests.service import NotifierProcess, render_toml, wait_for
from tests.smtpserver import SmtpTestServer

CLIENT_SECRET = "client secret value"
STORE_SECRET = "the cluster's token store secret"
MARGIN_S = 1.0


def _oauth2(server: AuthServer) -> dict[str, Any]:
    return {
        "mode": "client_secret_post",
        "client_id": "notifier",
        "client_secret": CLIENT_SECRET,
        "token_endpoint": server.token_url,
        "authorization_url": server.authorize_url,
        "scope": "smtp offline_access",
        "refresh_margin_s": MARGIN_S,
    }


def _instance(
    tmp_path: Path, name: str, dsn: str, smtp: SmtpTestServer, pki: TestPKI, server: AuthServer
) -> NotifierProcess:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(dsn + "\n")
    proc = NotifierProcess(tmp_path / name)
    config = oauth2_config(smtp, pki, _oauth2(server))
    # In the config file, not the environment: `notifier oauth2 ...` reads the same file.
    config["spool"] |= {"backend": "postgresql", "dsn_file": str(dsn_file)}
    proc.overrides = {
        **config,
        "instance_name": name,
        "oauth2": {"store_secret": STORE_SECRET},
    }
    return proc


@pytest.fixture
def two_instances(
    tmp_path: Path, pg_dsn: str, pki: TestPKI
) -> Iterator[tuple[NotifierProcess, NotifierProcess, AuthServer, SmtpTestServer]]:
    """Instances a and b on one database, an account `ops` whose access tokens live 5 s and
    whose refresh token rotates on every use; signed in on a's page."""
    with AuthServer(access_token_lifetime_s=5) as server, smtp_server(pki, server) as smtp:
        server.add_user(USER, PASSWORD)
        a = _instance(tmp_path, "a", pg_dsn, smtp, pki, server)
        b = _instance(tmp_path, "b", pg_dsn, smtp, pki, server)
        server.add_client(
            "notifier",
            secret=CLIENT_SECRET,
            redirect_uris=[f"http://localhost:{p.http_port}/oauth2/callback" for p in (a, b)],
        )
        a.start()
        try:
            b.start()
            try:
                assert "ops is authorized" in sign_in_on_page(a, server)
                yield a, b, server, smtp
            finally:
                b.stop()
        finally:
            a.stop()


@pytest.mark.timeout(300)
def test_two_instances_with_rotating_refresh_tokens_refresh_once_per_expiry_and_are_never_refused(
    two_instances: tuple[NotifierProcess, NotifierProcess, AuthServer, SmtpTestServer],
) -> None:
    """#9 acceptance 3: 5 s tokens, refresh_margin_s = 1, alarms into both instances for 60 s.

    The authorization server rotates the refresh token on every use, so a refresh token used
    twice (two instances refreshing at once) is refused with invalid_grant. "One refresh per
    expiry": every refresh arrives when the newest access token has at most the margin left
    (plus up to one second by which the server rounds `exp` up); a second refresh after another
    instance already got a fresh token would arrive with about 4 s left.

    One instance at a time dispatches the route (its owner), so each instance also sends its
    /oauth2/ page's test mail at the same moments: both need tokens, whichever owns the route."""
    a, b, server, smtp = two_instances
    sent: set[str] = set()
    start = time.monotonic()
    i = 0
    tokens = {p.url: form_token(oauth2_page(p)) for p in (a, b)}

    def test_mail(proc: NotifierProcess) -> str:
        data = {"account": "ops", "csrf": tokens[proc.url]}
        return httpx.post(f"{proc.url}/oauth2/test-mail", data=data, timeout=30).text

    # Alarms into both instances and a test mail on each at the same moment: both instances
    # find the token due at once, which is when a refresh that is not single-flight would show.
    with ThreadPoolExecutor(4) as senders:
        while time.monotonic() - start < 60:
            codes = [f"0x0002{i:04x}", f"0x0002{i + 1:04x}"]
            tested = senders.map(test_mail, (a, b))
            list(senders.map(lambda proc, code: post_alarm(proc, code=code), (a, b), codes))
            for answer in tested:
                assert "Test mail accepted" in answer, answer[-2000:]
            sent.update(codes)
            i += 2
            time.sleep(0.5)
    wait_for(lambda: sent <= codes_received(smtp), 30, "every alarm mailed")

    assert [x for x in smtp.auth_attempts if not x.success] == [], "a token was refused (535)"
    assert server.token_refusals == {}, "the token endpoint refused a request"
    refreshes = server.token_requests["refresh_token"]
    # 60 s of tokens good for 4 s (5 s less the margin): about 15 refreshes across the cluster.
    assert 10 <= refreshes <= 20, refreshes
    assert len(server.refresh_headroom_s) == refreshes
    assert max(server.refresh_headroom_s) <= MARGIN_S + 1.0, server.refresh_headroom_s
    # Both instances mailed (the owner its alarms, the other its test mails), so both needed
    # tokens; each mail's token was good.
    for proc in (a, b):
        assert any(e.get("event") == "test mail from the oauth2 page" for e in proc.log_events())
    for proc in (a, b):
        assert "needs authorization" not in proc.logs()
    assert "smtp_token_refused" not in a.logs() + b.logs()


def test_a_sign_in_on_one_instance_is_seen_by_the_other_and_the_cli(
    two_instances: tuple[NotifierProcess, NotifierProcess, AuthServer, SmtpTestServer],
) -> None:
    """#9: the sign-in pages and `notifier oauth2 ...` work on the shared store."""
    a, b, server, smtp = two_instances

    assert "ok" in row_of(oauth2_page(b), "ops").split()
    post_alarm(b, code="0x00030001")
    wait_for(lambda: "0x00030001" in codes_received(smtp), what="b's alarm mailed")
    status = notifier_cli(b, "oauth2", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "ok" in status.stdout.split()

    revoked = notifier_cli(b, "oauth2", "revoke", "ops")
    assert revoked.returncode == 0, revoked.stderr
    assert "stored tokens deleted" in revoked.stdout
    assert "needs authorization" in row_of(oauth2_page(a), "ops")

    assert "ops is authorized" in sign_in_on_page(b, server)
    assert "ok" in row_of(oauth2_page(a), "ops").split()


def test_a_cluster_without_a_store_secret_does_not_start(
    tmp_path: Path, pg_server: PgServer, pki: TestPKI
) -> None:
    with AuthServer() as server, smtp_server(pki, server) as smtp:
        config = tmp_path / "notifier.toml"
        body = oauth2_config(smtp, pki, _oauth2(server))
        body["spool"] |= {"backend": "postgresql", "dsn": pg_server.dsn("alarms")}
        config.write_text(render_toml({"data_dir": str(tmp_path / "var"), **body}))

        for command in ("check-config", "run"):
            done = subprocess.run(
                [sys.executable, "-m", "notifier", command, "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )

            assert done.returncode == 2, (command, done.stdout, done.stderr)
            assert done.stderr.splitlines() == [
                'notifier: config: oauth2.store_secret: with spool.backend = "postgresql" the '
                "OAuth2 tokens are kept in the shared database, and every instance must decrypt "
                "them: set [oauth2] store_secret (or store_secret_file), the same on every "
                "instance"
            ]
            assert pg_server.password not in done.stderr
