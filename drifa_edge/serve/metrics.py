"""Prometheus metrics of one service (its own registry, so several services can live in one
process, as in the tests). Counters are updated where things happen; per-state gauges are
read from the store at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drifa_edge.errors import missing_dependency

if TYPE_CHECKING:
    from drifa_edge.serve.service import Service


class Metrics:
    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as e:
            raise missing_dependency("prometheus_client", "serve") from e
        self.registry = CollectorRegistry()
        r = self.registry
        self.instances = Counter("drifa_instances_total", "Instances by outcome", ["outcome"], registry=r)
        self.ack_seconds = Histogram(
            "drifa_store_ack_seconds", "Check + atomic write + store commit of one instance", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "drifa_inference_batch_seconds", "One micro-batch of inference", registry=r
        )
        self.cases_inferred = Counter(
            "drifa_cases_inferred_total", "Results committed", ["status"], registry=r
        )
        self.http_unauthorized = Counter(
            "drifa_http_unauthorized_total", "HTTP requests refused (token)", registry=r
        )
        self.cases = Gauge("drifa_cases", "Cases per state", ["state"], registry=r)
        self.outbox = Gauge("drifa_outbox", "Outbox items per state", ["state"], registry=r)
        self.ready = Gauge("drifa_ready", "1 when /health/ready passes", registry=r)

    def render(self, service: Service) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        for state, n in service.store.counts().items():
            self.cases.labels(state).set(n)
        for state, n in service.outbox_counts().items():
            self.outbox.labels(state).set(n)
        self.ready.set(1 if all(service.readiness().values()) else 0)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def observe_batch(self, seconds: float, records: list[dict[str, Any]]) -> None:
        self.batch_seconds.observe(seconds)
        for record in records:
            self.cases_inferred.labels(record.get("status", "error")).inc()

    def observe_outcome(self, outcome: Any, seconds: float) -> None:
        self.instances.labels(outcome.reason or outcome.event).inc()
        if outcome.accepted:
            self.ack_seconds.observe(seconds)
