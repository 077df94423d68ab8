"""Prometheus metrics, one registry per process (tests may make their own)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class Reading:
    """One gauge value read when /metrics is scraped (a state, not an event to count)."""

    name: str
    help: str
    labels: dict[str, str]
    value: float


def health_readings(
    prefix: str,
    thing: str,
    labels: dict[str, str],
    failing: bool,
    times: Iterable[tuple[str, float | None, str]],
) -> list[Reading]:
    """`{prefix}_up` (1 unless failing) and `{prefix}_{name}_timestamp_seconds` for each
    (name, Unix time or None, help) in `times` that is known."""
    readings = [
        Reading(f"{prefix}_up", f"1 unless the {thing} is failing", labels, 0.0 if failing else 1.0)
    ]
    for name, value, what in times:
        if value is not None:
            readings.append(
                Reading(f"{prefix}_{name}_timestamp_seconds", f"{what}, Unix time", labels, value)
            )
    return readings


class _Readings(Collector):
    def __init__(self, source: Callable[[], Iterable[Reading]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for r in self._source():
            family = families.get(r.name)
            if family is None:
                family = families[r.name] = GaugeMetricFamily(r.name, r.help, labels=list(r.labels))
            family.add_metric(list(r.labels.values()), r.value)
        return iter(families.values())

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # names vary with the config: nothing to check at registration


class Metrics:
    """Every counter the pipeline exports; pass one instance to each stage. `watch` adds gauges
    read at scrape time from the running parts (transports, forwards)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "notifier_ingest_received",
            "Messages (requests, datagrams, frames, lines) received, by receiver",
            ["receiver"],
            registry=r,
        )
        self.accepted = Counter(
            "notifier_ingest_accepted",
            "Records accepted into the spool, by receiver and kind",
            ["receiver", "kind"],
            registry=r,
        )
        self.rejected = Counter(
            "notifier_ingest_rejected",
            "Messages and connections refused (and idle connections closed to make room), "
            "by receiver and reason",
            ["receiver", "reason"],
            registry=r,
        )
        self.connections = Gauge(
            "notifier_ingest_connections",
            "Open connections, by receiver (http: every HTTP connection)",
            ["receiver"],
            registry=r,
        )
        self.udp_rcvbuf_errors = Gauge(
            "notifier_udp_rcvbuf_errors",
            "Kernel Udp RcvbufErrors (datagrams lost before notifier could read them; host-wide)",
            registry=r,
        )
        self.spool_depth = Gauge(
            "notifier_spool_depth",
            "Records waiting, by consumer and state",
            ["consumer", "state"],
            registry=r,
        )
        self.spool_oldest_ready_age = Gauge(
            "notifier_spool_oldest_ready_age_seconds",
            "Age of the oldest ready record, by consumer",
            ["consumer"],
            registry=r,
        )
        self.spool_dropped = Counter(
            "notifier_spool_dropped",
            "Records dropped by the spool, by reason",
            ["reason"],
            registry=r,
        )
        self.spool_disk_full = Gauge(
            "notifier_spool_disk_full",
            "1 while new records are refused because the disk under data_dir is full",
            registry=r,
        )
        self.spool_disk_full_refused = Counter(
            "notifier_spool_disk_full_refused",
            "Records refused because the disk under data_dir is full (delivery goes on)",
            registry=r,
        )
        self.spool_fsyncs = Counter(
            "notifier_spool_fsyncs", "Durable commits (fsyncs) of the spool", registry=r
        )
        self.spool_records_per_commit = Histogram(
            "notifier_spool_records_per_commit",
            "Records written per durable commit",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=r,
        )
        self.mails_sent = Counter(
            "notifier_mail_sent",
            "Mails accepted by the server, by account",
            ["account"],
            registry=r,
        )
        self.mail_failures = Counter(
            "notifier_mail_failures",
            "Mail attempts that failed, by account and outcome",
            ["account", "outcome"],
            registry=r,
        )
        self.mail_retries = Counter(
            "notifier_mail_retries",
            "Mails tried again after a failure (not new decisions), by route",
            ["route"],
            registry=r,
        )
        self.dispatch_decisions = Counter(
            "notifier_dispatch_decisions", "Alarm decisions, by reason", ["reason"], registry=r
        )
        self.alarm_states = Gauge(
            "notifier_dispatch_alarm_states",
            "Alarm states a route remembers (active and recently cleared), by route",
            ["route"],
            registry=r,
        )
        self.alarm_states_forgotten = Counter(
            "notifier_dispatch_alarm_states_forgotten",
            "Alarm states forgotten, by route and reason (expired, bound_cleared, bound_active)",
            ["route", "reason"],
            registry=r,
        )
        self.forward_sent = Counter(
            "notifier_forward_sent",
            "Records a forward's target took, by forward",
            ["forward"],
            registry=r,
        )
        self.forward_failures = Counter(
            "notifier_forward_failures",
            "Forward attempts that failed (a batch or a request), by forward",
            ["forward"],
            registry=r,
        )
        self.spool_deduplicated = Counter(
            "notifier_spool_deduplicated",
            "Records not stored because an identical one was (another instance took it too), "
            "by kind",
            ["kind"],
            registry=r,
        )
        self.cluster_instance_up = Gauge(
            "notifier_cluster_instance_up",
            "1 while an instance on the shared spool heartbeats, else 0, by instance",
            ["instance"],
            registry=r,
        )
        self.cluster_heartbeat_age = Gauge(
            "notifier_cluster_heartbeat_age_seconds",
            "Seconds since an instance's last heartbeat (database clock), by instance",
            ["instance"],
            registry=r,
        )
        self.cluster_route_owner = Gauge(
            "notifier_cluster_route_owner",
            "1 for the instance that dispatches a consumer (route:NAME, forward:NAME, relay)",
            ["route", "instance"],
            registry=r,
        )

    def watch(self, source: Callable[[], Iterable[Reading]]) -> None:
        """Export what `source` returns at every scrape of /metrics."""
        self.registry.register(_Readings(source))
