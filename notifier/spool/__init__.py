"""Bounded queues between receivers and consumers."""

from notifier.spool.base import DropNotice, Lease, Overflow, Spool, SpoolFull, SpoolStats
from notifier.spool.memory import MemorySpool

__all__ = ["DropNotice", "Lease", "MemorySpool", "Overflow", "Spool", "SpoolFull", "SpoolStats"]
