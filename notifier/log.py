"""Logging: structlog, JSON lines when not on a terminal, readable when on one."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Set up structlog and the stdlib root logger (uvicorn, asyncio) to one stream: stderr."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer, foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # uvicorn's access log duplicates our own request accounting.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # aiosmtpd (the SMTP relay) logs every command at info; the relay logs what matters itself.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # psycopg's pool warns at each reconnect attempt while PostgreSQL is down (several a
    # second); our spool and cluster say what happened and what to do, rate-limited.
    logging.getLogger("psycopg.pool").filters[:] = [RateLimitFilter(RateLimiter(burst=3))]


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class RateLimiter:
    """Allows `burst` events per `key` each `period_s`; counts what it suppresses.

    Garbage from one sender must not flood the log: callers log only when `allow` is True and
    add `suppressed=` (how many were held back since the last logged one) to that line.
    """

    def __init__(self, burst: int = 5, period_s: float = 60.0, max_keys: int = 10_000) -> None:
        self._burst = burst
        self._period = period_s
        self._max_keys = max_keys
        self._state: dict[str, tuple[float, int, int]] = {}  # key -> (window start, used, held)

    def allow(self, key: str, now: float | None = None) -> tuple[bool, int]:
        """(log this one?, number suppressed since the last allowed one for this key)."""
        t = time.monotonic() if now is None else now
        start, used, held = self._state.get(key, (t, 0, 0))
        if t - start >= self._period:
            start, used = t, 0
        if used < self._burst:
            self._state[key] = (start, used + 1, 0)
            if len(self._state) > self._max_keys:
                self._state.pop(next(iter(self._state)))
            return True, held
        self._state[key] = (start, used, held + 1)
        return False, 0


class RateLimitFilter(logging.Filter):
    """Lets a stdlib logger's lines through `limiter`, one key per message template."""

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self._limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        allowed, suppressed = self._limiter.allow(f"{record.name}:{record.msg}")
        if allowed and suppressed:
            record.msg = f"{record.msg} ({suppressed} like it suppressed)"
        return allowed
