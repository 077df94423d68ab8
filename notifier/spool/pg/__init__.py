"""The PostgreSQL backend: shared queues for several notifier instances on one database."""

from notifier.spool.pg.spool import PostgresSpool

__all__ = ["PostgresSpool"]
