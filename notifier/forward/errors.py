"""What a forward's sender raises when records did not get through."""

from __future__ import annotations


class ForwardError(Exception):
    """Records not delivered. `str()` is one line a person can act on, never a secret.

    `sent`: how many records of the batch, from its start, were delivered before the failure
    (acknowledged; the rest is retried). `permanent`: the target refused them for good (they
    are dead-lettered: retrying cannot help)."""

    def __init__(self, message: str, *, sent: int = 0, permanent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.permanent = permanent
