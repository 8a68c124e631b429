"""Prometheus metrics of scr, in their own registry.

Under ``scr serve`` every process writes its metrics to the supervisor's run folder
(prometheus_client's multi-process mode, switched on by ``PROMETHEUS_MULTIPROC_DIR``), and
``render()`` sums them over the whole set: a dead child's counters stay in the sum, so no
counter goes back when a child restarts; its gauges leave with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


# Per-tenant counts read by the dashboard's live stream (scr.dashboard.live) with a tenant's
# key; /metrics needs none, so it does not show them (no tenant learns another's name).
NOT_EXPORTED = frozenset({"scr_tenant_events"})


class _Exported(Collector):
    """The families of ``source`` but those in ``NOT_EXPORTED``."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        return (family for family in self.source.collect() if family.name not in NOT_EXPORTED)


class Metrics:
    """Every metric scr exports; names use the flow's words."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter("scr_events_accepted", "Events committed to the ledger", registry=r)
        self.duplicate = Counter(
            "scr_events_duplicate", "Events already in the ledger with the same body", registry=r
        )
        self.rejected = Counter(
            "scr_events_rejected", "Events rejected, by reason", ["reason"], registry=r
        )
        self.tenant_events = Counter(
            "scr_tenant_events", "Events by tenant and outcome (accepted, duplicate, rejected)",
            ["tenant", "outcome"], registry=r,
        )
        self.beacons_limited = Counter(
            "scr_beacons_rate_limited", "Browser beacons refused over their key's rate limit",
            registry=r,
        )
        self.unpriced_model = Counter(
            "scr_events_unpriced_model", "Accepted events whose model the price table does not know",
            ["model"], registry=r,
        )
        self.otlp_spans = Counter(
            "scr_otlp_spans", "OTLP spans received: stored (GenAI), ignored (no gen_ai.* "
            "attribute) or rejected (invalid)", ["result"], registry=r,
        )
        self.otlp_sessions = Counter(
            "scr_otlp_sessions_emitted", "Sessions emitted from OTLP spans, by ledger outcome",
            ["outcome"], registry=r,
        )
        self.commit_groups = Counter(
            "scr_commit_groups", "Group-commit transactions that appended entries", registry=r
        )
        self.delivered = Counter(
            "scr_destination_delivered", "Events delivered", ["destination"], registry=r
        )
        self.retried = Counter(
            "scr_destination_retried", "Events scheduled for a retry", ["destination"], registry=r
        )
        self.resent = Counter(
            "scr_destination_resent",
            "Entries a destination may send again: read again after an error in its reader, or "
            "delivered but not recorded when it stopped (the store out of reach): possible "
            "duplicates, same webhook-id",
            ["destination"], registry=r,
        )
        self.dead = Counter(
            "scr_destination_dead", "Events dead-lettered", ["destination"], registry=r
        )
        self.filtered_out = Counter(
            "scr_destination_filtered_out", "Events the filter skipped", ["destination"], registry=r
        )
        self.sampled_out = Counter(
            "scr_destination_sampled_out", "Events sampling skipped", ["destination"], registry=r
        )
        self.attempt_latency = Histogram(
            "scr_destination_attempt_seconds", "Delivery attempt latency", ["destination"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.lag_entries = Gauge(
            "scr_destination_lag_entries", "Ledger entries not yet past the cursor",
            ["destination"], registry=r, multiprocess_mode="livesum",
        )
        self.oldest_pending_age = Gauge(
            "scr_destination_oldest_pending_age_seconds",
            "Age of the oldest entry a destination has not settled", ["destination"], registry=r,
            multiprocess_mode="livemax",
        )

        # ----- usage (the usage reader, scr.usage) -----
        self.usage_cost = Gauge(
            "scr_usage_cost_usd", "Cost of the ledger's events (billing_v1 cost_usd) counted so far",
            ["tenant", "model"], registry=r, multiprocess_mode="livesum",
        )
        self.usage_tokens = Gauge(
            "scr_usage_tokens", "Tokens (total_tokens) of the ledger's events counted so far",
            ["tenant", "model"], registry=r, multiprocess_mode="livesum",
        )
        self.anomalies_raised = Counter(
            "scr_usage_anomalies_raised", "Anomalies the usage reader raised (ANOMALY entries written)",
            ["tenant", "metric"], registry=r,
        )
        self.budget_used = Gauge(
            "scr_usage_budget_used_ratio",
            "Cost spent in a budget's current UTC period over its limit (1: the limit reached)",
            ["tenant", "period"], registry=r, multiprocess_mode="livemax",
        )
        self.usage_lag = Gauge(
            "scr_usage_lag_entries", "Ledger entries the usage reader has not counted yet",
            registry=r, multiprocess_mode="livesum",
        )
        self.enrich_lag = Gauge(
            "scr_enrich_lag_entries", "Ledger entries the enricher has not read yet",
            registry=r, multiprocess_mode="livesum",
        )
        self.enrich_vectors = Counter(
            "scr_enrich_vectors_total", "Session vectors the enricher stored", registry=r,
        )
        self.enrich_failures = Counter(
            "scr_enrich_embedder_failures_total", "Rounds the embedder failed (each retried)",
            registry=r,
        )

        # ----- the bus and the cluster (scale-out) -----
        self.bus_connected = Gauge(
            "scr_bus_connected", "1 while this instance is connected to NATS JetStream", registry=r,
            multiprocess_mode="livemax",
        )
        self.bus_publish_seconds = Histogram(
            "scr_bus_publish_seconds", "Time for JetStream to store one POST's events (publish to ack)",
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.bus_batches = Counter(
            "scr_bus_batches",
            "Atomic batches JetStream stored for this instance (one ack for up to 1,000 events)", registry=r,
        )
        self.bus_batches_refused = Counter(
            "scr_bus_batches_refused",
            "Atomic batches JetStream refused (an id already seen, a limit); their events were "
            "published one by one", registry=r,
        )
        self.bus_appended = Counter(
            "scr_bus_appended", "Bus events this instance appended to the ledger as their owner", registry=r
        )
        self.bus_duplicates = Counter(
            "scr_bus_duplicates", "Bus events already in the ledger with the same body (redeliveries)",
            registry=r,
        )
        self.bus_conflicts = Counter(
            "scr_bus_conflicts",
            "Bus events whose id was in the ledger with another body, recorded as EVENT_CONFLICT",
            registry=r,
        )
        self.bus_undecodable = Counter(
            "scr_bus_undecodable", "Bus messages that were not valid events (dropped, logged)", registry=r
        )
        self.partitions_owned = Gauge(
            "scr_cluster_partitions_owned", "Partitions this instance owns", registry=r,
            multiprocess_mode="livesum",
        )
        self.partition_lag = Gauge(
            "scr_cluster_partition_lag", "Bus events of a partition not yet appended (owned ones)",
            ["partition"], registry=r, multiprocess_mode="livesum",
        )
        self.reader_lease_held = Gauge(
            "scr_reader_lease_held",
            "1 while this instance runs the reader (usage, enrich, archive): in a cluster, while it "
            "holds the reader's lease; 0 on a standby", ["role"], registry=r, multiprocess_mode="livemax",
        )
        self.failover_redeliveries = Counter(
            "scr_cluster_failover_redeliveries",
            "Entries a new partition owner delivered again from the inherited cursor (possible "
            "duplicates, same webhook-id)", ["destination"], registry=r,
        )

    def render(self, *whole_set: Collector) -> bytes:
        """The exposition of this process; under ``scr serve``, of the whole set of processes,
        with ``whole_set``'s collectors (what the supervisor says of its children) added;
        never the families that name tenants to a caller without a key (``NOT_EXPORTED``)."""
        exported = CollectorRegistry(auto_describe=False)
        exported.register(_Exported(self.whole_set(*whole_set)))
        return generate_latest(exported)

    def whole_set(self, *collectors: Collector) -> CollectorRegistry:
        """This process's registry; under ``scr serve``, the sum over every process of the set
        (any process can read it, e.g. an edge answering the dashboard), plus ``collectors``."""
        metrics_dir = os.environ.get(METRICS_DIR_ENV)
        if not metrics_dir:
            return self.registry
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
        for collector in collectors:
            registry.register(collector)
        return registry
