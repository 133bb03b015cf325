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
from cerm.stats import JudgeStats

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
        self.criteria_prefetched = Counter("cerm_criteria_prefetched", "prompts sent ahead to POST /v1/criteria",
                                           registry=r)
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._statuses: dict[str, Counter] = {}
        self._synced: dict[str, int] = {}

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        """Count one HTTP request and its latency."""
        # labels() builds and looks up its key under a lock on every call: keep the children per (route, code)
        children = self._children.get((route, code))
        if children is None:
            children = self._children[route, code] = (self.requests.labels(route, str(code)),
                                                      self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, report: BatchReport) -> None:
        """Count one judge call (a batch of merged requests, or one slice of a request sent straight on)."""
        self.batch_responses.observe(report.responses)
        self.batch_requests.observe(report.requests)
        self.batch_seconds.observe(report.seconds)
        if report.error is not None:
            self.batch_errors.inc()
            return
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

    def sync_judge(self, stats: JudgeStats) -> None:
        """Bring the criteria counters up to the judge's own (concurrent requests for one prompt share one
        generation, which a per-request count would count once per request).
        """
        for counter, name in ((self.criteria_generated, "criteria_generated"),
                              (self.criteria_cache_hits, "criteria_cache_hits")):
            value = getattr(stats, name)
            counter.inc(max(0, value - self._synced.get(name, 0)))
            self._synced[name] = max(value, self._synced.get(name, 0))
        self.criteria_lease_waits.set(stats.criteria_lease_waits)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
