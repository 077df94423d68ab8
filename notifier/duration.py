"""The one duration grammar: ``90s``, ``30m``, ``2h``, ``1d``, or a number of seconds.

Used by every place a person writes how long something lasts: the `duration` of a maintenance
window, a silence's `--for` and `duration`. Imports nothing of ours, so `config` may use it.
"""

from __future__ import annotations

import math
import re

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)")
EXAMPLES = "90s, 30m, 2h, 1d or a number of seconds"


class DurationError(ValueError):
    """A duration that is not in the grammar, or not positive; the message names the value."""


def parse_duration(value: str | int | float) -> float:
    """Seconds of `value`: a positive number of seconds, or a number with one unit (s, m, h, d).

    Raises `DurationError` naming the value.
    """
    if isinstance(value, bool):  # True is an int to Python, not a duration to a person
        raise DurationError(f"duration {value!r} is not a duration: use {EXAMPLES}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        found = _DURATION.fullmatch(value.strip().lower())
        if found is None:
            raise DurationError(f"duration {value[:40]!r} is not a duration: use {EXAMPLES}")
        seconds = float(found[1]) * _UNIT_S[found[2] or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise DurationError(f"duration {value!r} must be more than 0 seconds: use {EXAMPLES}")
    return seconds
