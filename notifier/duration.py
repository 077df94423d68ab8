"""The one duration grammar: `90s`, `30m`, `2h`, `1d`, or a number of seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FORM = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def parse_duration(text: str | float) -> float:
    """Seconds of `text`; raises ValueError naming the value when it is not a duration."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"{text!r} is not a duration (a number of seconds >= 0)")
        return float(text)
    match = _FORM.fullmatch(str(text).strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 2h, 1d or 3600")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]
