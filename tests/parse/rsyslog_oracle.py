"""rsyslog as the oracle for notifier's syslog parser: the same lines, read by both, field by field.

`RsyslogOracle` is a throwaway `rsyslogd -n` (bench/common.Rsyslog with its own config): imtcp on
a free loopback port, DNS off, and a template that writes what rsyslog parsed out of each message
as one JSON line. `read_with_rsyslog` sends every line to it over one TCP connection with RFC 6587
octet counting (so a line may hold any byte but is one message) and gives back, in order, what
rsyslog read, normalised to the shape of a notifier Record (`Reading`). `read_with_notifier`
sends the same bytes the same way to a running notifier (tests/service.py) and reads the records
it stored back from ``GET /api/v1/records``.

What is normalised, and why (README: "Where notifier reads syslog differently from rsyslog"):

- Control characters: rsyslog's default `parser.escapeControlCharactersOnReceive` writes a TAB as
  ``#011``; it is turned off, so both see the bytes that were sent (Snare separates by TAB).
- RFC 3164 message: rsyslog's `%msg%` is everything after the tag's colon, so it starts with the
  space that separates tag and text; notifier drops that one space. One leading space is removed
  from rsyslog's message, no more.
- RFC 5424 message: notifier drops the UTF-8 BOM that marks the message as UTF-8 (RFC 5424 6.4);
  rsyslog keeps it. A leading BOM is removed from rsyslog's message.
- Tag: for RFC 3164 rsyslog's `%syslogtag%` (``sshd[42]:``) without the colon and the ``[pid]``;
  `%programname%` would also cut at a "/" (``postfix/smtpd`` → ``postfix``). For RFC 5424 the
  APP-NAME. The NILVALUE "-" of `%app-name%` and `%procid%` reads as empty, as notifier's does.
- Hostname: with DNS off, rsyslog names a message without hostname by the sender's IP, as
  notifier does; nothing is changed.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import Rsyslog
from tests.service import NotifierProcess, wait_for

CORPUS = Path(__file__).parent / "corpus" / "syslog-lines.txt"
README = Path(__file__).resolve().parents[2] / "README.md"
README_TABLE = "## Where notifier reads syslog differently from rsyslog"
AGREES = "-"

ORACLE_CONFIG = """\
global(workDirectory="{workdir}" maxMessageSize="64k" net.enableDNS="off"
       parser.escapeControlCharactersOnReceive="off")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="raw" name="rawmsg" format="jsonf")
  property(outname="version" name="protocol-version" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="tag" name="syslogtag" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
action(type="omfile" file="{out}" template="fields")
"""


@dataclass(frozen=True)
class CorpusLine:
    """One message of the corpus: where it comes from, and the README row it differs by."""

    number: int  # line number in the corpus file
    family: str  # sender family / sender, e.g. "network/cisco-ios"
    differs: str  # "-", or the key of the README table row explaining the difference
    text: str

    @property
    def data(self) -> bytes:
        return self.text.encode()


@dataclass(frozen=True)
class Reading:
    """What a parser read out of one message, in notifier's terms."""

    hostname: str
    tag: str
    procid: str
    message: str


FIELDS = ("hostname", "tag", "procid", "message")


def load_corpus(path: Path = CORPUS) -> list[CorpusLine]:
    """``FAMILY<TAB>DIFFERS<TAB>MESSAGE`` lines; ``#`` starts a comment line."""
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        family, differs, text = line.split("\t", 2)
        lines.append(CorpusLine(number, family, differs, text))
    return lines


def readme_difference_keys(readme: Path = README) -> set[str]:
    """The keys (first column, in backticks) of the README's table of differences."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(README_TABLE)
    end = text.find("\n## ", start + len(README_TABLE))
    section = text[start : end if end != -1 else len(text)]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M))


class RsyslogOracle(Rsyslog):
    """rsyslogd writing its parsed fields of each message as one JSON line."""

    def config_text(self) -> str:
        return ORACLE_CONFIG.format(workdir=self.workdir, tcp_port=self.tcp_port, out=self.out)

    def written(self) -> list[dict[str, str]]:
        return [json.loads(line) for line in self.out.read_text(encoding="utf-8").splitlines()]


def send_octet_counted(port: int, messages: Sequence[bytes]) -> None:
    """Every message on one TCP connection to `port` on loopback, octet-counted, in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"".join(b"%d %s" % (len(m), m) for m in messages))


def read_with_rsyslog(messages: Sequence[bytes], workdir: Path) -> list[Reading]:
    """What rsyslog reads in each of `messages`, normalised (see the module docstring)."""
    with RsyslogOracle(workdir) as oracle:
        send_octet_counted(oracle.tcp_port, messages)
        wait_for(lambda: oracle.lines() >= len(messages), 30, f"rsyslog to write {len(messages)}")
        written = oracle.written()
    readings = []
    for sent, fields in zip(messages, written, strict=True):
        # One connection, one main queue worker: rsyslog writes in the order it received.
        assert fields["raw"].encode() == sent, (fields["raw"], sent)
        readings.append(_normalised(fields))
    return readings


def _normalised(fields: dict[str, str]) -> Reading:
    if fields["version"] == "1":  # RFC 5424
        tag = fields["app"]
        message = fields["msg"].removeprefix("\ufeff")
    else:
        tag = re.sub(r"\[[^\]]*\]$", "", fields["tag"].removesuffix(":"))
        message = fields["msg"].removeprefix(" ")
    return Reading(
        hostname=fields["hostname"],
        tag="" if tag == "-" else tag,
        procid="" if fields["procid"] == "-" else fields["procid"],
        message=message,
    )


def read_with_notifier(messages: Sequence[bytes], workdir: Path) -> list[Reading]:
    """What a running notifier stored for each of `messages`, sent as rsyslog got them."""
    with NotifierProcess(workdir) as notifier:
        send_octet_counted(notifier.syslog_port, messages)

        def stored() -> dict[str, dict[str, Any]] | None:
            answer = httpx.get(f"{notifier.url}/api/v1/records", params={"limit": 1000})
            records = {r["raw"]: r for r in answer.json() if r["receiver"] == "syslog-tcp"}
            return records if len(records) >= len(messages) else None

        records = wait_for(stored, 30, f"notifier to store {len(messages)} records")
    return [_reading(records[m.decode()]) for m in messages]


def _reading(record: dict[str, Any]) -> Reading:
    return Reading(
        hostname=record["device"],
        tag=record["source"],
        procid=record["extras"].get("procid", ""),
        message=record["text"],
    )


def disagreeing_fields(ours: Reading, theirs: Reading) -> list[str]:
    return [name for name in FIELDS if getattr(ours, name) != getattr(theirs, name)]
