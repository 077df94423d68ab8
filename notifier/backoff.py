"""Retry delays: exponential backoff with jitter, capped. The one backoff of the service: spool
retries of failed mails, token-endpoint retries, receivers waiting for room in the spool."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class Jitter(enum.StrEnum):
    # Uniform in [0, ceiling]: spreads retries most, but may retry almost at once.
    FULL = "full"
    # Uniform in [ceiling/2, ceiling]: spread, yet never sooner than half the backoff.
    EQUAL = "equal"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number `attempt` (0 = the first retry): base * factor**attempt, capped.

    The default jitter is EQUAL: a mail server answering 4xx is not helped by a retry a few
    milliseconds later, which FULL jitter allows; EQUAL still spreads a herd of retries apart.
    """

    base_s: float = 5.0
    factor: float = 2.0
    cap_s: float = 900.0
    jitter: Jitter = Jitter.EQUAL

    def ceiling(self, attempt: int) -> float:
        # Bound the exponent: factor**attempt overflows a float long before attempt is huge.
        exponent = min(max(attempt, 0), 64)
        return float(min(self.cap_s, self.base_s * self.factor**exponent))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt`."""
        top = self.ceiling(attempt)
        uniform = (rng or _rng).uniform
        if self.jitter is Jitter.FULL:
            return uniform(0.0, top)
        if self.jitter is Jitter.EQUAL:
            return uniform(top / 2, top)
        return top

    def within(self, budget_s: float, rng: random.Random | None = None) -> list[float]:
        """The waits before as many retries as fit in `budget_s` (each counted at its ceiling,
        so how many retries there are does not depend on the jitter)."""
        waits: list[float] = []
        spent = 0.0
        while (top := self.ceiling(len(waits))) > 0 and spent + top <= budget_s:
            waits.append(self.delay(len(waits), rng))
            spent += top
        return waits


_rng = random.Random()
