"""Routing rules: does this record belong to this route? Pure functions over compiled matchers."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from notifier.config import MatchSettings, RouteSettings
from notifier.dispatch.errors import DispatchError
from notifier.records import SMTP_RELAY, Kind, Record, Severity, parse_severity


class RuleError(DispatchError):
    """A match rule that cannot be compiled; the message names the field and value."""


@dataclass(frozen=True, slots=True)
class CodeRange:
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class Matcher:
    """A compiled `match` table. Empty lists match everything; all given fields must match."""

    kinds: frozenset[Kind]
    severities: frozenset[Severity]
    code_exact: frozenset[str]
    code_prefixes: tuple[str, ...]
    code_ranges: tuple[CodeRange, ...]
    devices: tuple[str, ...]
    sources: tuple[str, ...]
    receivers: frozenset[str]
    text: re.Pattern[str] | None
    labels: tuple[tuple[str, str], ...] = ()  # (label name, lowered glob of its value)
    min_severity: Severity | None = None  # this severity and above

    def matches(self, record: Record) -> bool:
        if self.kinds and record.kind not in self.kinds:
            return False
        if self.severities and record.severity not in self.severities:
            return False
        if self.min_severity is not None and record.severity.rank < self.min_severity.rank:
            return False
        if self.receivers and record.receiver not in self.receivers:
            return False
        if self.devices and not _glob_any(record.device, self.devices):
            return False
        if self.sources and not _glob_any(record.source, self.sources):
            return False
        if (self.code_exact or self.code_prefixes or self.code_ranges) and not self._code_matches(
            record.code
        ):
            return False
        if self.labels and not _labels_match(record.labels, self.labels):
            return False
        return not (self.text is not None and self.text.search(record.text) is None)

    def _code_matches(self, code: str) -> bool:
        normal = code.strip().lower()
        if normal in self.code_exact:
            return True
        if any(normal.startswith(p) for p in self.code_prefixes):
            return True
        if self.code_ranges:
            number = _code_number(normal)
            if number is not None:
                return any(r.low <= number <= r.high for r in self.code_ranges)
        return False


@dataclass(frozen=True, slots=True)
class FirstMatch:
    """A route's matcher where the first match wins: its own rule, unless an earlier took it."""

    own: Matcher
    earlier: tuple[Matcher, ...] = ()

    def matches(self, record: Record) -> bool:
        if record.receiver == SMTP_RELAY:  # relayed mail bypasses routes: the relay sends it
            return False
        return self.own.matches(record) and not any(m.matches(record) for m in self.earlier)


def _glob_any(value: str, patterns: Sequence[str]) -> bool:
    lowered = value.lower()
    return any(fnmatch.fnmatchcase(lowered, p) for p in patterns)


def _labels_match(labels: Mapping[str, str], wanted: Sequence[tuple[str, str]]) -> bool:
    # As in Prometheus matchers, a missing label reads as "" (so `team = ""` means "no team").
    return all(_glob_any(labels.get(name, ""), (glob,)) for name, glob in wanted)


def _code_number(code: str) -> int | None:
    try:
        return int(code, 0)
    except ValueError:
        return None


def _severity(value: str, key: str) -> Severity:
    try:
        return parse_severity(value)
    except ValueError as e:
        raise RuleError(f"{key}: {e}") from None


def compile_match(match: MatchSettings, where: str = "match") -> Matcher:
    """Compile a route's `match` table; raises `RuleError` naming the bad entry."""
    severities = {_severity(s, f"{where}.severities") for s in match.severities}
    min_severity = None
    if match.min_severity:
        min_severity = _severity(match.min_severity, f"{where}.min_severity")
    exact, prefixes, ranges = set(), [], []
    for c in match.codes:
        c = c.strip().lower()
        if c.endswith("*"):
            prefixes.append(c[:-1])
        elif "-" in c.lstrip("-"):
            low_text, _, high_text = c.partition("-")
            low, high = _code_number(low_text), _code_number(high_text)
            if low is None or high is None or low > high:
                raise RuleError(f"{where}.codes: {c!r} is not a range like 0x00010000-0x0001ffff")
            ranges.append(CodeRange(low, high))
        else:
            exact.add(c)
    text = None
    if match.text:
        try:
            text = re.compile(match.text)
        except re.error as e:
            raise RuleError(
                f"{where}.text: {match.text!r} is not a valid regular expression: {e}"
            ) from None
    return Matcher(
        kinds=frozenset(match.kinds),
        severities=frozenset(severities),
        code_exact=frozenset(exact),
        code_prefixes=tuple(prefixes),
        code_ranges=tuple(ranges),
        devices=tuple(d.lower() for d in match.devices),
        sources=tuple(s.lower() for s in match.sources),
        receivers=frozenset(match.receivers),
        text=text,
        labels=tuple((name, glob.lower()) for name, glob in sorted(match.labels.items())),
        min_severity=min_severity,
    )


def anyone_wants(matches: Sequence[Callable[[Record], bool]]) -> Callable[[Record], bool]:
    """Whether some consumer (a route, a forward, the relay) wants a record: the spool asks
    once, when it takes the record, and keeps one that nobody wants as history only, with no
    delivery to lease and acknowledge. The same `matches` the workers apply, so a record a
    worker would have acknowledged unread never reaches it."""
    if len(matches) == 1:
        return matches[0]

    def wanted(record: Record) -> bool:
        for matches_record in matches:  # noqa: SIM110 (no generator: runs for every record put)
            if matches_record(record):
                return True
        return False

    return wanted


def compile_routes(routes: Sequence[RouteSettings]) -> list[FirstMatch]:
    """Each route's matcher, in order. First match wins: a route skips what an earlier route
    without `continue` took. Raises `RuleError` naming ``routes.<index>.match.<key>``."""
    matchers: list[FirstMatch] = []
    taken_before: list[Matcher] = []
    for i, route in enumerate(routes):
        own = compile_match(route.match, f"routes.{i}.match")
        matchers.append(FirstMatch(own, tuple(taken_before)))
        if not route.continue_matching:
            taken_before.append(own)
    return matchers
