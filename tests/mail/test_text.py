"""Making device text safe: one line for headers, line structure kept for bodies."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from notifier.mail.text import body_text, format_duration, format_time, header_text, one_line

UNSAFE = [
    "\r",
    "\n",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9b",
    "\u2028",
    "\u2029",
    "\u202e",
    "\ufeff",
    "\udcff",
]


@pytest.mark.parametrize("char", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
def test_header_text_replaces_every_break_and_control_by_a_space(char: str) -> None:
    assert header_text(f"a{char}b") == "a b"


def test_header_text_collapses_spaces_and_caps_length() -> None:
    assert header_text("  a \r\n\r\n b  ") == "a b"
    assert header_text("abcdefghij", limit=5) == "abcd…"
    assert header_text("Zentrale Köln ✓") == "Zentrale Köln ✓"


def test_body_text_keeps_lines_and_escapes_controls() -> None:
    assert body_text("a\r\nb\rc\u2028d\x85e") == "a\nb\nc\nd\ne"
    assert body_text("nul\x00 esc\x1b tab\t") == "nul\\x00 esc\\x1b tab\t"
    assert body_text("lone \udcff") == "lone \ufffd"
    assert one_line("a\nb") == "a ⏎ b"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (303, "5m 3s"),
        (300, "5m"),
        (3900, "1h 5m"),
        (7200, "2h"),
        (183600, "2d 3h"),
        (-5, "0s"),
    ],
)
def test_durations_read_like_people_say_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_times_are_shown_in_the_mail_time_zone() -> None:
    assert format_time(0) == "1970-01-01 00:00:00 UTC"
    assert format_time(0, ZoneInfo("Europe/Berlin")) == "1970-01-01 01:00:00 CET"
    assert format_time(1_782_907_200, ZoneInfo("Europe/Berlin")) == "2026-07-01 14:00:00 CEST"
    assert format_time(None) == ""
    assert "out of range" in format_time(1e20)
