"""Build the configured spool from settings (the service's one way to open it)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from notifier.config import ReceiverSpoolSettings, Settings
from notifier.metrics import Metrics
from notifier.records import SMTP_RELAY, Kind, Record
from notifier.spool.base import Overflow, Spool
from notifier.spool.cluster import Cluster, LocalCluster
from notifier.spool.memory import MemorySpool
from notifier.spool.policy import ReceiverPolicy, SpoolPolicy
from notifier.spool.schema import spool_path
from notifier.spool.sqlite import SqliteSpool
from notifier.spool.sqlite_state import SqliteStateStore, state_path
from notifier.spool.state import StateStore
from notifier.spool.tiered import TieredSpool


def open_spool(
    settings: Settings,
    consumers: Sequence[str],
    metrics: Metrics,
    interest: Mapping[str, Collection[Kind]] | None = None,
    wanted: Callable[[Record], bool] | None = None,
) -> TieredSpool:
    """The spool under `data_dir` for `consumers`; call `start()` before use.

    `interest`: consumer -> the kinds it takes (absent: all). A consumer that takes no kind the
    memory tier can hold gets no deliveries there: a flood of log lines that no route mails
    costs a history entry each, not a lease and an ack per route. `wanted`: whether some
    consumer takes a record (`SpoolPolicy.wanted`; None: every record is owed to all)."""
    s = settings.spool
    policy = SpoolPolicy.of(
        durable_kinds=s.durable_kinds,
        overflow=s.overflow,
        receivers=receiver_policies(s.receivers),
        wanted=wanted,
    )
    wants = interest or {}
    if s.backend == "postgresql":
        # The owner of a route or forward may be another instance: what it consumes must be
        # in the shared database, whatever its kind. Only history-only lines stay local.
        policy = policy.durable_also(consumed_kinds(consumers, wants))
    durable = durable_spool(settings, consumers, policy, metrics)
    volatile = policy.volatile_kinds()
    memory = MemorySpool(
        [c for c in consumers if c not in wants or volatile & set(wants[c])],
        max_entries=s.memory_queue_entries,
        overflow=policy,
        history_entries=s.history_entries,
        metrics=metrics,
    )
    # TieredSpool is annotated with SqliteSpool but uses only the Spool interface.
    return TieredSpool(durable, memory, policy, metrics=metrics)  # type: ignore[arg-type]


def consumed_kinds(
    consumers: Sequence[str], interest: Mapping[str, Collection[Kind]]
) -> frozenset[Kind]:
    """The kinds some consumer takes (a consumer without an entry takes every kind); pure."""
    kinds: set[Kind] = set()
    for consumer in consumers:
        kinds |= set(interest.get(consumer, Kind))
    return frozenset(kinds)


def durable_spool(
    settings: Settings, consumers: Sequence[str], policy: SpoolPolicy, metrics: Metrics
) -> Spool:
    """The tier for durable kinds: the SQLite file under data_dir, or the shared database."""
    s = settings.spool
    limits: dict[str, Any] = {
        "max_entries": s.persistent_queue_entries,
        "max_disk_bytes": s.max_disk_bytes,
        "overflow": policy,
        "history_entries": s.history_entries,
        "metrics": metrics,
    }
    if s.backend == "postgresql":
        from notifier.spool.pg import PostgresSpool

        return PostgresSpool(
            s.dsn.get_secret_value(),
            consumers,
            instance=settings.instance(),
            dedupe_window_s=s.dedupe_window_s,
            **limits,
        )
    return SqliteSpool(spool_path(settings.data_dir), consumers, **limits)


def open_cluster(
    settings: Settings, spool: Spool, consumers: Sequence[str], metrics: Metrics, version: str
) -> Cluster:
    """Who dispatches which consumer: on PostgreSQL, one instance each (heartbeats and lease
    rows in the database); on SQLite, this instance, everything."""
    durable = spool.durable if isinstance(spool, TieredSpool) else spool
    if settings.spool.backend == "postgresql":
        from notifier.spool.pg import PostgresSpool
        from notifier.spool.pg.cluster import PgCluster

        assert isinstance(durable, PostgresSpool)
        return PgCluster(
            settings.spool.dsn.get_secret_value(),
            settings.instance(),
            consumers,
            durable,
            version=version,
            metrics=metrics,
        )
    return LocalCluster(settings.instance(), consumers, version)


def open_state(settings: Settings, spool: Spool | None = None) -> StateStore:
    """The configured shared state (alarm states, silences, acks); call `start()` before use.

    With `backend = "postgresql"` it borrows the pool of `spool` (started, PostgreSQL) so a
    process keeps one pool; `spool` must then stay open until the state store is closed."""
    s = settings.spool
    if s.backend == "postgresql":
        from notifier.spool.pg import PostgresSpool
        from notifier.spool.pg.state import PostgresStateStore

        durable = spool.durable if isinstance(spool, TieredSpool) else spool
        pool = durable.pool if isinstance(durable, PostgresSpool) else None
        return PostgresStateStore(s.dsn.get_secret_value(), pool=pool)
    return SqliteStateStore(state_path(settings.data_dir))


def receiver_policies(
    receivers: Mapping[str, ReceiverSpoolSettings],
) -> dict[str, ReceiverPolicy]:
    """Per-receiver overrides from `[spool.receivers.NAME]`; an unset key keeps the default."""
    policies = {
        receiver: ReceiverPolicy(
            durable_kinds=None if r.durable_kinds is None else frozenset(r.durable_kinds),
            overflow=None if r.overflow is None else Overflow(r.overflow),
        )
        for receiver, r in receivers.items()
    }
    # The relay answers 250 only for what is on disk, and a full spool must answer 451 rather
    # than drop the mail it is taking: not configurable.
    policies[SMTP_RELAY] = ReceiverPolicy(durable_kinds=frozenset(Kind), overflow=Overflow.REJECT)
    return policies
