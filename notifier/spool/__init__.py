"""Bounded queues between receivers and consumers."""

from notifier.spool.base import (
    DeliveryState,
    DropNotice,
    Lease,
    Overflow,
    Spool,
    SpoolError,
    SpoolFull,
    SpoolStats,
    SpoolUnavailable,
)
from notifier.spool.memory import MemorySpool
from notifier.spool.policy import DEFAULT_DURABLE_KINDS, ReceiverPolicy, SpoolPolicy
from notifier.spool.sqlite import SqliteSpool
from notifier.spool.tiered import TieredSpool

__all__ = [
    "DEFAULT_DURABLE_KINDS",
    "DeliveryState",
    "DropNotice",
    "Lease",
    "MemorySpool",
    "Overflow",
    "ReceiverPolicy",
    "Spool",
    "SpoolError",
    "SpoolFull",
    "SpoolPolicy",
    "SpoolStats",
    "SpoolUnavailable",
    "SqliteSpool",
    "TieredSpool",
]
