"""The root of the dispatch package's errors."""

from __future__ import annotations


class DispatchError(ValueError):
    """A route rule or a stored record that dispatch cannot use as it is."""
