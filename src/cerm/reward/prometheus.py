"""Prometheus metrics of the reward server, in a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from cerm.reward.batcher import BatchReport
from cerm.reward.scoring import is_backend_failure

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 180)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """Requests, latency, batch sizes, judgment statuses, parse failures and criteria cache use."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cerm_requests", "HTTP requests by route and status code", ["route", "code"],
                                registry=r)
        self.latency = Histogram("cerm_request_seconds", "HTTP request latency", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_responses = Histogram("cerm_batch_responses", "responses judged per backend batch",
                                         buckets=_BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("cerm_batch_requests", "HTTP requests merged into one backend batch",
                                         buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("cerm_batch_seconds", "judge time per batch", buckets=_LATENCY_BUCKETS,
                                       registry=r)
        self.batch_errors = Counter("cerm_batch_errors", "judge calls that raised", registry=r)
        self.judgments = Counter("cerm_judgments", "judgments by parse status", ["status"], registry=r)
        self.parse_failures = Counter("cerm_parse_failures", "judgments the model wrote without a readable score",
                                      registry=r)
        self.backend_errors = Counter("cerm_backend_errors", "judgments the backend failed to produce", registry=r)
        self.criteria_cache_hits = Counter("cerm_criteria_cache_hits", "criteria read from the cache", registry=r)
        self.criteria_generated = Counter("cerm_criteria_generated", "criteria generated", registry=r)
        self.criteria_lease_waits = Gauge("cerm_criteria_lease_waits", "criteria another process sharing the "
                                          "cache was generating, waited for instead of generated twice",
                                          registry=r)
        self.queue_depth = Gauge("cerm_queue_depth", "requests waiting for the judge", registry=r)
        self.rejected = Counter("cerm_rejected", "requests refused before judging", ["reason"], registry=r)
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._statuses: dict[str, Counter] = {}

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        """Count one request of ``route`` answered with ``code`` and its latency."""
        # labels() builds and looks up its key under a lock on every call: keep the children per (route, code)
        children = self._children.get((route, code))
        if children is None:
            children = self._children[route, code] = (self.requests.labels(route, str(code)),
                                                      self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, report: BatchReport) -> None:
        """Called on the batcher thread after each judge call."""
        self.batch_responses.observe(report.responses)
        self.batch_requests.observe(report.requests)
        self.batch_seconds.observe(report.seconds)
        if report.error is not None:
            self.batch_errors.inc()
            return
        # requests for one query merged into a batch share one criteria object: count it once
        sources = {c.key or c.text: c.source for item in report.scored for c in item.criteria}
        self.criteria_cache_hits.inc(sum(s == "cache" for s in sources.values()))
        self.criteria_generated.inc(sum(s == "generated" for s in sources.values()))
        for item in report.scored:
            for j in item.judgments:
                status = self._statuses.get(j.status.value)
                if status is None:
                    status = self._statuses[j.status.value] = self.judgments.labels(j.status.value)
                status.inc()
                if is_backend_failure(j):
                    self.backend_errors.inc()
                elif j.score is None:
                    self.parse_failures.inc()

    def render(self) -> bytes:
        """The metrics in Prometheus' text format (``GET /metrics``)."""
        return generate_latest(self.registry)
