"""Making untrusted text safe for mail headers and bodies, and formatting times for people.

Everything a device sends may end up in a header (subject, X-Notifier-Device) or a body. A
header value must stay one line: any character that some parser treats as a line break or a
control (CR, LF, NUL, VT, FF, NEL, U+2028, U+2029, the C0 and C1 sets) is replaced before the
text reaches `email`. Bodies keep their line structure, with every kind of break normalised to LF
and other controls shown escaped.
"""

from __future__ import annotations

import datetime as dt
import re

# C0 controls, DEL, C1 controls (NEL U+0085 is one), the Unicode line and paragraph separators,
# the bidi embedding/override/isolate marks (they reorder what a reader sees in a subject), BOM
# and lone surrogates (from surrogateescape decoding; they cannot be encoded at all).
_HEADER_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
_SPACES = re.compile(r" {2,}")
# Every sequence some reader treats as the end of a line.
_LINE_BREAKS = re.compile("\r\n|[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# What remains unsafe in a body line once breaks are LF: controls except TAB and LF.
_BODY_UNSAFE = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)


def header_text(value: str, limit: int | None = None) -> str:
    """One line of printable text: unsafe characters become a space, runs of spaces one space.

    `limit` caps the length in characters (an ellipsis marks the cut).
    """
    text = _SPACES.sub(" ", _HEADER_UNSAFE.sub(" ", value)).strip()
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)].rstrip() + "…"
    return text


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def body_text(value: str) -> str:
    """Multi-line text for a body: line breaks normalised to LF, other controls escaped (\\x00)."""
    return _BODY_UNSAFE.sub(_escape, _LINE_BREAKS.sub("\n", value))


def one_line(value: str) -> str:
    """Body text for a table cell: line breaks shown as ' ⏎ ', other controls escaped."""
    return body_text(value).replace("\n", " ⏎ ")


def format_time(timestamp: float | None, zone: dt.tzinfo = dt.UTC) -> str:
    """Unix seconds as people read them in mails, to the second, in `zone` (the mail time zone):
    ``2026-11-27 22:50:19 CET``; '' for None."""
    if timestamp is None:
        return ""
    try:
        moment = dt.datetime.fromtimestamp(timestamp, zone)
    except (OverflowError, OSError, ValueError):
        return f"{timestamp!r} (out of range)"
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def format_duration(seconds: float) -> str:
    """A duration as people say it, two units at most: ``45s``, ``5m 3s``, ``1h 5m``, ``2d 3h``."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
