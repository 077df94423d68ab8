"""notifier reads real-world syslog as rsyslog does, except where the README says why not.

The corpus (tests/parse/corpus/syslog-lines.txt) goes, byte for byte and octet-counted over TCP,
to a throwaway rsyslogd and to a running notifier; what rsyslog parsed and what notifier stored
are compared field by field (tests/parse/rsyslog_oracle.py, which also says what is normalised).
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from bench.common import rsyslogd_path
from tests.parse.rsyslog_oracle import (
    AGREES,
    FIELDS,
    CorpusLine,
    Reading,
    disagreeing_fields,
    load_corpus,
    read_with_notifier,
    read_with_rsyslog,
    readme_difference_keys,
)

CORPUS = load_corpus()
FAMILIES = ("network", "pbx", "linux", "windows", "appliance", "embedded")
Compared = list[tuple[CorpusLine, Reading, Reading]]  # line, notifier's reading, rsyslog's


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Compared:
    assert rsyslogd_path(), "rsyslogd is not installed: run scripts/install-test-deps.sh"
    workdir: Path = tmp_path_factory.mktemp("rsyslog-oracle")
    messages = [line.data for line in CORPUS]
    theirs = read_with_rsyslog(messages, workdir / "rsyslog")
    ours = read_with_notifier(messages, workdir / "notifier")
    return list(zip(CORPUS, ours, theirs, strict=True))


def agrees_on_hostname_and_message(ours: Reading, theirs: Reading) -> bool:
    return (ours.hostname, ours.message) == (theirs.hostname, theirs.message)


def test_corpus_has_the_issue_shapes_the_rfc_examples_and_six_sender_families() -> None:
    assert len(CORPUS) >= 60
    assert len({line.text for line in CORPUS}) == len(CORPUS), "a message is in the corpus twice"
    kinds = collections.Counter(line.family.split("/")[0] for line in CORPUS)
    for kind in ("issue", "rfc3164", "rfc5424", *FAMILIES):
        assert kinds[kind] >= (4 if kind == "issue" else 1), (kind, kinds)


def test_notifier_agrees_with_rsyslog_on_hostname_and_message_in_nine_lines_of_ten(
    compared: Compared,
) -> None:
    agreeing = sum(agrees_on_hostname_and_message(ours, theirs) for _, ours, theirs in compared)
    per_field = {
        name: sum(getattr(ours, name) == getattr(theirs, name) for _, ours, theirs in compared)
        for name in FIELDS
    }
    print(f"hostname and message: {agreeing} of {len(compared)} lines agree")
    for name, count in per_field.items():
        print(f"{name}: {count} of {len(compared)}")
    assert agreeing >= 0.9 * len(compared)


def test_every_difference_from_rsyslog_is_a_row_of_the_readme_table(compared: Compared) -> None:
    unexplained = []
    stale = []
    for line, ours, theirs in compared:
        differs = disagreeing_fields(ours, theirs)
        if differs and line.differs == AGREES:
            unexplained.append(f"line {line.number} ({line.family}) {differs}: {ours} / {theirs}")
        if not differs and line.differs != AGREES:
            stale.append(f"line {line.number} ({line.family}) is marked {line.differs!r}")
    assert not unexplained, "\n".join(["differs from rsyslog, not in the README:", *unexplained])
    assert not stale, "\n".join(["reads as rsyslog does now: unmark it", *stale])


def test_the_readme_table_explains_exactly_the_keys_the_corpus_uses() -> None:
    used = {line.differs for line in CORPUS} - {AGREES}
    assert used == readme_difference_keys()


@pytest.mark.parametrize(
    "family",
    [
        "issue/sd-space-after-equals",
        "issue/space-after-pri",
        "issue/year-then-host-only",
        "issue/ends-after-host",
        "issue/ends-after-host-rfc3339",
    ],
)
def test_the_issue_shapes_keep_the_header_rsyslog_reads(compared: Compared, family: str) -> None:
    [(_, ours, theirs)] = [c for c in compared if c[0].family == family]
    assert (ours.hostname, ours.tag, ours.procid) == (theirs.hostname, theirs.tag, theirs.procid)
