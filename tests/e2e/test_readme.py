"""The README's commands, run as written (only the ports are the test's own) against a real
notifier: what a new user copies must work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from notifier.ingest.parse.alarmxml import parse_alarm_xml
from tests.service import NotifierProcess, wait_for

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
VENV_BIN = Path(sys.executable).parent


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def as_run_here(command: str, proc: NotifierProcess) -> str:
    """The README's command with the test's ports and this checkout's venv."""
    return (
        command.replace("-P 5514", f"-P {proc.syslog_port}")
        .replace("127.0.0.1:8080", f"127.0.0.1:{proc.http_port}")
        .replace(".venv/bin/", f"{VENV_BIN}/")
    )


def shell(command: str, proc: NotifierProcess) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env["NOTIFIER_CONFIG"] = str(proc.config_path)  # where the user's notifier listens
    return subprocess.run(
        ["sh", "-c", as_run_here(command, proc)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=proc.workdir,
        env=env,
        check=True,
    )


def history(proc: NotifierProcess) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = httpx.get(
        f"{proc.url}/api/v1/records?limit=20", timeout=5
    ).json()
    return records


def test_the_readmes_logger_one_liner_for_alarm_xml_stores_the_alarm(tmp_path: Path) -> None:
    (one_liner,) = [
        line
        for block in code_blocks(section("innovaphone alarm records in syslog (XML)"), "sh")
        for line in block.splitlines()
        if line.startswith("logger ")
    ]
    with NotifierProcess(tmp_path) as proc:
        shell(one_liner, proc)
        alarms = wait_for(
            lambda: [r for r in history(proc) if r["kind"] == "alarm"], what="the alarm record"
        )
    (alarm,) = alarms
    assert {k: alarm[k] for k in ("code", "device", "source", "severity", "text")} == {
        "code": "0x00010002",
        "device": "gw01",
        "source": "RELAY/RECH",
        "severity": "major",
        "text": "Registration down",
    }
    assert alarm["receiver"] == "syslog-udp"
    assert alarm["details"] == '<relay prot="SH323" />'


def test_the_readmes_two_ways_of_writing_an_alarm_record_read_the_same() -> None:
    (example,) = code_blocks(section("innovaphone alarm records in syslog (XML)"), "xml")
    with_attributes, with_elements = example.strip().split("\n\n")
    by_attributes = parse_alarm_xml(with_attributes)
    by_elements = parse_alarm_xml(with_elements)
    assert by_attributes is not None and by_elements is not None
    assert by_attributes.code == by_elements.code == "0x00010002"
    fields = ("type", "severity", "code", "host", "source", "text")
    assert [getattr(by_attributes, f) for f in fields] == [getattr(by_elements, f) for f in fields]


def test_the_readmes_try_it_commands_work_as_written(tmp_path: Path) -> None:
    (try_it,) = code_blocks(README[: README.index("\n## ")], "sh")[1:]
    commands = [line.split("#")[0].strip() for line in try_it.splitlines()]
    with NotifierProcess(tmp_path) as proc:
        outputs = [shell(c, proc).stdout for c in commands if not c.startswith("ls ")]
        assert outputs[1] == "OK"  # the innovaphone HTTP request
        assert outputs[2].startswith("sent ")  # send-alarm found the port in the config
        mails = wait_for(lambda: list(proc.outbox.glob("*.eml")), timeout=30, what="the mail")
    assert "[ALARM Major] gw01: Registration down (0x00010002)" in mails[0].read_text()
