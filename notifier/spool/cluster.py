"""Which instance dispatches each consumer (route, forward, relay): the cluster interface.

Several instances on one PostgreSQL database all receive, but each consumer is dispatched by
one instance at a time: a route's grouping, rate limit and alarm decisions need one mind. An
instance runs a consumer's worker only while it owns that consumer (`while_owned`), and runs
the worker's start path again each time it gains it, so the worker loads the state another
instance left. On SQLite there is one instance, and it owns everything (`LocalCluster`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from notifier.log import get_logger
from notifier.metrics import Metrics

log = get_logger("notifier.cluster")


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """One notifier instance as its heartbeat row says (ages in seconds, database clock)."""

    name: str
    version: str
    up: bool  # heartbeat younger than the ownership lease: it may own consumers
    heartbeat_age_s: float
    started_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What the status page and /metrics show: the instances and who owns each consumer."""

    instances: tuple[InstanceInfo, ...] = ()
    owners: Mapping[str, str] = field(default_factory=dict)  # consumer -> instance ("" none)


class Cluster(Protocol):
    """Ownership of the consumers among the instances on one spool."""

    @property
    def instance(self) -> str: ...

    async def start(self) -> None:
        """Heartbeat and claim the consumers nobody owns; returns at once (claims follow)."""
        ...

    async def close(self) -> None:
        """Stop heartbeating and hand the owned consumers back at once (a graceful stop)."""
        ...

    def owns(self, consumer: str) -> bool: ...

    async def acquired(self, consumer: str) -> None:
        """Returns once this instance owns `consumer` (at once if it does)."""
        ...

    async def lost(self, consumer: str) -> None:
        """Returns once this instance no longer owns `consumer` (at once if it does not)."""
        ...

    def view(self) -> ClusterView: ...


class Ownership:
    """This instance's view of what it owns, as events the workers' runners wait on."""

    def __init__(self, consumers: Sequence[str]) -> None:
        self._owned = {c: asyncio.Event() for c in consumers}
        self._free = {c: asyncio.Event() for c in consumers}
        for event in self._free.values():
            event.set()

    @property
    def consumers(self) -> list[str]:
        return list(self._owned)

    def owns(self, consumer: str) -> bool:
        return self._owned[consumer].is_set()

    def owned(self) -> list[str]:
        return [c for c, event in self._owned.items() if event.is_set()]

    def gain(self, consumer: str) -> None:
        self._free[consumer].clear()
        self._owned[consumer].set()

    def lose(self, consumer: str) -> None:
        self._owned[consumer].clear()
        self._free[consumer].set()

    async def acquired(self, consumer: str) -> None:
        await self._owned[consumer].wait()

    async def lost(self, consumer: str) -> None:
        await self._free[consumer].wait()


class Member:
    """What every cluster member answers from its `Ownership`."""

    def __init__(self, instance: str, consumers: Sequence[str]) -> None:
        self._instance = instance
        self._ownership = Ownership(consumers)

    @property
    def instance(self) -> str:
        return self._instance

    def owns(self, consumer: str) -> bool:
        return self._ownership.owns(consumer)

    async def acquired(self, consumer: str) -> None:
        await self._ownership.acquired(consumer)

    async def lost(self, consumer: str) -> None:
        await self._ownership.lost(consumer)


class LocalCluster(Member):
    """One instance (SQLite): it owns every consumer from the start."""

    def __init__(self, instance: str, consumers: Sequence[str], version: str = "") -> None:
        super().__init__(instance, consumers)
        self._version = version
        for consumer in consumers:
            self._ownership.gain(consumer)
        self._started_at = 0.0

    async def start(self) -> None:
        self._started_at = time.time()

    async def close(self) -> None:
        return None

    def view(self) -> ClusterView:
        me = InstanceInfo(self._instance, self._version, True, 0.0, self._started_at)
        return ClusterView((me,), {c: self._instance for c in self._ownership.consumers})


async def while_owned(
    cluster: Cluster,
    consumer: str,
    run: Callable[[], Awaitable[None]],
    stopping: asyncio.Event,
) -> None:
    """Run `run` (a worker's loop, whose start path loads what it needs) while this instance
    owns `consumer`: cancelled when the ownership is lost (another instance dispatches now, so
    this one must not send a thing more), started again when it comes back. Returns when `run`
    returns (the worker was stopped) or `stopping` is set while the consumer is not owned."""
    while not stopping.is_set():
        if not await _first(cluster.acquired(consumer), stopping.wait()):
            return
        log.info("dispatching: this instance owns the consumer", consumer=consumer)
        worker = asyncio.ensure_future(run())
        lost = asyncio.ensure_future(cluster.lost(consumer))
        try:
            done, _ = await asyncio.wait({worker, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            await _ended(worker, consumer)
        if worker in done and lost not in done:
            if worker.cancelled() or worker.exception() is None:
                return
            # Its start path failed (say, loading its state): this instance still owns the
            # consumer, and nobody else will dispatch it, so try again rather than give up.
            log.error(
                "consumer's worker failed; starting it again in a second",
                consumer=consumer,
                error=str(worker.exception()),
            )
            await _first(asyncio.sleep(1.0), stopping.wait())
            continue
        log.warning(
            "dispatch stopped: this instance no longer owns the consumer",
            consumer=consumer,
            hint="another instance took it over (this one missed its heartbeats: check the "
            "connection to PostgreSQL); its leased records are released by the new owner",
        )


async def _ended(worker: asyncio.Future[None], consumer: str) -> None:
    """Cancel `worker` and return once it has ended (its failure is the caller's to look at).
    A worker that runs on after its cancellation is cancelled again, and that is logged: once
    another instance owns the consumer, this one must not send a thing more."""
    while not worker.done():
        worker.cancel()
        await asyncio.wait({worker}, timeout=1.0)
        if not worker.done():
            log.error(
                "consumer's worker runs on after it was cancelled; cancelling it again",
                consumer=consumer,
                hint="a bug: please report it with this log",
            )
    if not worker.cancelled():
        worker.exception()  # retrieved: asyncio would otherwise log it when it is collected


async def _first(wanted: Awaitable[None], other: Awaitable[object]) -> bool:
    """Wait for either; True if `wanted` finished first."""
    want = asyncio.ensure_future(wanted)
    rest = asyncio.ensure_future(other)
    try:
        await asyncio.wait({want, rest}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        want.cancel()
        rest.cancel()
    return want.done() and not want.cancelled()


class Runnable(Protocol):
    """A consumer's worker as `owned` sees it."""

    @property
    def consumer(self) -> str: ...

    async def run(self) -> None: ...


def owned(
    cluster: Cluster | None, worker: Runnable, stopping: asyncio.Event
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The worker's loop, run only while this instance owns its consumer (`while_owned`):
    each time it gains the consumer, `run` starts afresh and so loads its state again.
    Without a cluster the loop runs as it is."""
    if cluster is None:
        return worker.run
    return functools.partial(while_owned, cluster, worker.consumer, worker.run, stopping)


def publish_cluster(metrics: Metrics, view: ClusterView) -> None:
    """Set the instance and owner gauges from `view` (stale label sets are removed)."""
    metrics.cluster_instance_up.clear()
    metrics.cluster_heartbeat_age.clear()
    for i in view.instances:
        metrics.cluster_instance_up.labels(instance=i.name).set(1 if i.up else 0)
        metrics.cluster_heartbeat_age.labels(instance=i.name).set(i.heartbeat_age_s)
    metrics.cluster_route_owner.clear()
    for consumer, owner in view.owners.items():
        if owner:
            metrics.cluster_route_owner.labels(route=consumer, instance=owner).set(1)
