"""The one duration grammar: 90s, 30m, 2h, 1d, or a number of seconds."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.duration import DurationError, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("45", 45),
        (" 2H ", 7200),
        ("1.5h", 5400),
        (600, 600),
        (0.5, 0.5),
    ],
)
def test_durations_people_write_are_read_as_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2 hours", "h", "-5m", "0", "0s", "1w", "2h30m", True, -3])
def test_a_bad_duration_is_refused_naming_the_value(text: str | float) -> None:
    with pytest.raises(DurationError) as refused:
        parse_duration(text)
    assert repr(text) in str(refused.value)
    assert "90s, 30m, 2h, 1d" in str(refused.value)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["s", "m", "h", "d", ""]))
def test_a_number_with_a_unit_is_that_many_units(number: int, unit: str) -> None:
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}[unit]
    assert parse_duration(f"{number}{unit}") == number * scale


@given(st.text(max_size=20))
def test_any_text_is_a_positive_duration_or_a_duration_error(text: str) -> None:
    with contextlib.suppress(DurationError):
        assert parse_duration(text) > 0
