"""Ownership of the consumers among the instances on one PostgreSQL database.

Each instance heartbeats into `cluster_instances` and holds a lease row in `cluster_owners` for
every consumer it owns, renewed with each heartbeat (every `interval_s`) and valid for `ttl_s`
in the database's clock. A consumer whose row has expired (or has none) goes to the first
instance whose heartbeat claims it; that instance then releases at once the records the dead
owner had leased (`PostgresSpool.release_leases`).

Why a lease row and not a session advisory lock: an advisory lock lives as long as the
server's session, and after a network partition or a frozen host the server notices the
dead session only when TCP gives up (minutes, unless keepalives are tuned on every box), so the
takeover time would not be ours to bound. A row with an expiry in the database clock bounds it
(`ttl_s` + `interval_s`, 12 s by default: within the 15 s promised), shows who owns what to
every instance, and survives a pooled connection being replaced.

An owner that cannot renew stops dispatching on its own, before its row expires: it counts
from the moment it *sent* its last successful renewal (so a slow answer only shortens the
time), and gives up `interval_s` before the row could expire in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from notifier.log import RateLimiter, get_logger
from notifier.metrics import Metrics
from notifier.spool.base import SpoolError
from notifier.spool.cluster import ClusterView, InstanceInfo, Member, publish_cluster
from notifier.spool.pg.conninfo import describe, scrub
from notifier.spool.pg.spool import PostgresSpool

log = get_logger("notifier.cluster")

_NOW = "extract(epoch FROM statement_timestamp())::float8"
# An instance silent this long is forgotten (its row removed from the status page).
FORGET_INSTANCE_AFTER_S = 24 * 3600.0


def give_up_at(sent_at: float, ttl_s: float, interval_s: float) -> float:
    """When an owner whose last successful renewal was sent at `sent_at` (its monotonic clock)
    must stop dispatching: `interval_s` before the row can expire in the database (pure)."""
    return sent_at + ttl_s - interval_s


class PgCluster(Member):
    """Heartbeats and consumer ownership on the spool's database; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        instance: str,
        consumers: Sequence[str],
        spool: PostgresSpool,
        *,
        version: str = "",
        metrics: Metrics | None = None,
        ttl_s: float = 10.0,
        interval_s: float = 2.0,
    ) -> None:
        if not instance:
            raise ValueError("a cluster member needs an instance name")
        super().__init__(instance, consumers)
        self._dsn = dsn
        self._target = describe(dsn)
        self._spool = spool
        self._version = version
        self._metrics = metrics
        self._ttl = ttl_s
        self._interval = interval_s
        self._deadline: dict[str, float] = {}  # owned consumer -> give_up_at (monotonic)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._view = ClusterView()
        self._first = True
        self._process = secrets.token_hex(8)
        self._log_limit = RateLimiter(burst=3, period_s=60.0)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._beat(), name="cluster-heartbeat"),
            asyncio.create_task(self._watch(), name="cluster-watch"),
        ]

    async def close(self, *, release: bool = True) -> None:
        """Stop; with `release`, hand the owned consumers back at once (a graceful stop: the
        others need not wait for the rows to expire). `release=False` is what a crash does."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        self._tasks = []
        for consumer in self._ownership.owned():
            self._ownership.lose(consumer)
        if release:
            with contextlib.suppress(psycopg.Error, OSError, TimeoutError):
                conn = await self._connection()
                async with asyncio.timeout(self._interval * 2):
                    await conn.execute(
                        "DELETE FROM cluster_owners WHERE instance = %s", (self._instance,)
                    )
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def view(self) -> ClusterView:
        return self._view

    # -- the heartbeat ---------------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=max(1, int(self._interval * 2))
            )
        return self._conn

    async def _beat(self) -> None:
        failing = False
        while True:
            sent = time.monotonic()
            try:
                async with asyncio.timeout(self._interval * 2):
                    await self._tick(sent)
            except (psycopg.Error, SpoolError, OSError, TimeoutError) as e:
                failing = True
                self._warn(
                    "cluster heartbeat failed; dispatch stops where the ownership runs out",
                    database=self._target,
                    error=scrub(str(e), self._dsn) or type(e).__name__,
                    hint=f"this instance reconnects by itself every {self._interval:g} s: "
                    f"check that PostgreSQL at {self._target} is up and reachable",
                )
                await self._drop_connection()
            except Exception as e:  # a bug must not end the heartbeat (the routes would stop)
                failing = True
                # Rate-limited like the rest: a bug that fails every beat is one traceback a
                # minute, not one a second.
                self._warn(
                    "cluster heartbeat failed (a bug: please report it)",
                    logging.ERROR,
                    error=str(e),
                    exc_info=e,
                )
                await self._drop_connection()
            else:
                if failing:
                    failing = False
                    log.info(
                        "cluster heartbeat back", database=self._target, instance=self._instance
                    )
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - sent)))

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _watch(self) -> None:
        """Lose what could not be renewed in time, even while a heartbeat hangs."""
        while True:
            self._expire(time.monotonic())
            await asyncio.sleep(min(0.5, self._interval / 4))

    def _expire(self, now: float) -> None:
        for consumer, deadline in list(self._deadline.items()):
            if now >= deadline:
                self._lose(consumer, "its ownership could not be renewed in time")

    def _lose(self, consumer: str, why: str) -> None:
        self._deadline.pop(consumer, None)
        if self._ownership.owns(consumer):
            self._ownership.lose(consumer)
            log.warning("ownership lost", consumer=consumer, instance=self._instance, why=why)

    async def _tick(self, sent: float) -> None:
        conn = await self._connection()
        consumers = self._ownership.consumers
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT process FROM cluster_instances WHERE name = %s FOR UPDATE",
                (self._instance,),
            )
            row = await cur.fetchone()
            if not self._first and row is not None and row[0] != self._process:
                # Both would own the same consumers and mail everything twice.
                self._warn(
                    "another running instance has the same instance_name",
                    level=logging.ERROR,
                    hint="give each instance its own instance_name (the default, "
                    "host:http-port, is the same for two containers with one host name)",
                )
            await conn.execute(
                "INSERT INTO cluster_instances"
                " (name, process, version, started_at, heartbeat_at)"
                f" VALUES (%(me)s, %(p)s, %(v)s, {_NOW}, {_NOW}) ON CONFLICT (name) DO UPDATE"
                " SET process = excluded.process, version = excluded.version,"
                " heartbeat_at = excluded.heartbeat_at,"
                " started_at = CASE WHEN %(first)s THEN excluded.started_at"
                "  ELSE cluster_instances.started_at END",
                {
                    "me": self._instance,
                    "p": self._process,
                    "v": self._version,
                    "first": self._first,
                },
            )
            # Renew ours, take what nobody holds or whose owner stopped renewing. Of two
            # instances claiming one consumer, the second waits for the first's row and then
            # finds it taken and alive.
            cur = await conn.execute(
                "INSERT INTO cluster_owners"
                " (consumer, instance, acquired_at, heartbeat_at, expires_at)"
                f" SELECT c, %(me)s, {_NOW}, {_NOW}, {_NOW} + %(ttl)s"
                " FROM unnest(%(cs)s::text[]) c ORDER BY c"
                " ON CONFLICT (consumer) DO UPDATE SET instance = excluded.instance,"
                " heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at,"
                " acquired_at = CASE WHEN cluster_owners.instance = excluded.instance"
                "  THEN cluster_owners.acquired_at ELSE excluded.acquired_at END"
                " WHERE cluster_owners.instance = excluded.instance"
                "  OR cluster_owners.expires_at < excluded.heartbeat_at"
                " RETURNING consumer",
                {"me": self._instance, "ttl": self._ttl, "cs": consumers},
            )
            mine = {row[0] for row in await cur.fetchall()}
            await conn.execute(
                f"DELETE FROM cluster_instances WHERE heartbeat_at < {_NOW} - %s",
                (FORGET_INSTANCE_AFTER_S,),
            )
            cur = await conn.execute(
                f"SELECT name, version, {_NOW} - heartbeat_at, started_at"
                " FROM cluster_instances ORDER BY name"
            )
            instances = tuple(
                InstanceInfo(name, version, age < self._ttl, max(0.0, age), started)
                for name, version, age, started in await cur.fetchall()
            )
            cur = await conn.execute(
                f"SELECT consumer, instance FROM cluster_owners WHERE expires_at >= {_NOW}"
            )
            owners = {c: "" for c in consumers} | dict(await cur.fetchall())
        self._first = False
        self._view = ClusterView(instances, owners)
        if self._metrics is not None:
            publish_cluster(self._metrics, self._view)
        for consumer in consumers:
            if consumer not in mine:
                self._lose(consumer, f"instance {owners.get(consumer) or '?'} owns it now")
        for consumer in sorted(mine):
            if not self._ownership.owns(consumer):
                await self._take_over(consumer)
            self._deadline[consumer] = give_up_at(sent, self._ttl, self._interval)

    async def _take_over(self, consumer: str) -> None:
        """Release the records the previous owner leased, then dispatch. (Nobody else
        dispatches `consumer` now: an owner stops before its row can expire.)"""
        released = await self._spool.release_leases(consumer)
        self._ownership.gain(consumer)
        log.info(
            "ownership taken",
            consumer=consumer,
            instance=self._instance,
            leases_released=released,
        )

    def _warn(self, event: str, level: int = logging.WARNING, **fields: Any) -> None:
        allowed, suppressed = self._log_limit.allow(event)
        if allowed:
            log.log(level, event, suppressed=suppressed, instance=self._instance, **fields)
