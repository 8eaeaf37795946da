"""HTTP request metrics for /metrics: counts and latency histograms by method, route and status.

A custom prometheus-client collector rather than ``Counter``/``Histogram``
objects: those take a lock and walk every bucket in Python on each
observation, which showed up in the read path's profile. Everything here runs
on the event loop thread (observations and scrapes alike), so plain lists
suffice and a scrape sees a consistent snapshot.

Label cardinality is bounded: the route is the template (never the raw path)
and a method outside ``METHODS`` is counted as ``OTHER``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def method_label(method: str) -> str:
    """``method`` if it is one of ``METHODS``, else ``OTHER`` (clients can send any token)."""
    return method if method in METHODS else "OTHER"


class _Latency:
    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0


class RequestMetrics(Collector):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[tuple[str, str, int], _Latency] = {}
        self.registry.register(self)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method_label(method), route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        latency = self._latency.get(key)
        if latency is None:
            latency = self._latency[key] = _Latency()
        latency.buckets[bisect_left(BUCKETS, seconds)] += 1
        latency.count += 1
        latency.total += seconds

    def collect(self) -> Iterator[Metric]:
        labels = ["method", "route", "status"]
        requests = CounterMetricFamily(
            "llmcm_http_requests", "HTTP requests by route and status", labels=labels
        )
        for (method, route, status), count in sorted(self._requests.items()):
            requests.add_metric([method, route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "llmcm_http_request_duration_seconds", "HTTP request latency by route and status", labels=labels
        )
        for (method, route, status), data in sorted(self._latency.items()):
            cumulative, running = [], 0
            for bound, n in zip((*BUCKETS, float("inf")), data.buckets, strict=True):
                running += n
                cumulative.append((str(bound) if bound != float("inf") else "+Inf", running))
            latency.add_metric([method, route, str(status)], cumulative, data.total)
        yield latency
