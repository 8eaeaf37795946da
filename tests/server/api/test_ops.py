"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.server.api.helpers import cfg, ok, problem
from tests.support import Http, ServerProcess

CONFIG_ROUTE = "/v1/configs/{namespace}/{key}"


def samples(server: ServerProcess) -> list[Sample]:
    reply = server.http().get("/metrics")
    assert reply.status == 200
    return [s for family in text_string_to_metric_families(reply.body.decode()) for s in family.samples]


def find(all_samples: Iterable[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in all_samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


class TestHealth:
    """Liveness and readiness answer without a token."""

    def test_live(self, server: ServerProcess) -> None:
        """/health/live is 200 {"status": "ok"}."""
        assert ok(server.http().get("/health/live")) == {"status": "ok"}

    def test_ready(self, server: ServerProcess) -> None:
        """/health/ready is 200 and reports the storage up."""
        body = ok(server.http().get("/health/ready"))
        assert (body["status"], body["storage"]) == ("ok", "up")

    def test_health_ignores_bad_token(self, server: ServerProcess) -> None:
        """A bad token does not make the probes fail."""
        assert server.http("lcm_bogus").get("/health/live").status == 200


@pytest.fixture(scope="module")
def traffic(server: ServerProcess) -> ServerProcess:
    """Some requests with known outcomes: two 201, one 200, one 404, one 400, one 401, one PROPFIND."""
    http: Http = server.admin
    ok(http.put(cfg("metrics-ns/secret-part", "k1"), {"value": {"a": 1}}), 201)
    ok(http.put(cfg("metrics-ns/secret-part", "k2"), {"value": {"a": 1}}), 201)
    ok(http.get(cfg("metrics-ns/secret-part", "k1")))
    problem(http.get(cfg("metrics-ns/secret-part", "absent")), 404)
    problem(http.put(cfg("metrics-ns/secret-part", "k1"), raw=b"{"), 400)
    problem(server.http("lcm_bogus").get("/v1/configs"), 401)
    assert http.request("PROPFIND", "/health/live").status == 405
    return server


class TestMetrics:
    """/metrics exposes request counts and latency by route template and status."""

    def test_content_type(self, server: ServerProcess) -> None:
        """/metrics answers in the Prometheus text format."""
        reply = server.http().get("/metrics")
        assert reply.headers["content-type"].startswith("text/plain")

    @pytest.mark.parametrize(
        ("method", "status", "count"),
        [("PUT", "201", 2), ("GET", "200", 1), ("GET", "404", 1), ("PUT", "400", 1)],
    )
    def test_requests_counted_by_route_and_status(
        self, traffic: ServerProcess, method: str, status: str, count: int
    ) -> None:
        """llmcm_http_requests_total counts requests by method, route template and status."""
        found = find(
            samples(traffic), "llmcm_http_requests_total", method=method, route=CONFIG_ROUTE, status=status
        )
        assert len(found) == 1
        assert found[0].value >= count

    def test_unauthenticated_counted(self, traffic: ServerProcess) -> None:
        """A 401 is counted under its route too."""
        assert find(samples(traffic), "llmcm_http_requests_total", route="/v1/configs", status="401")

    def test_latency_histogram(self, traffic: ServerProcess) -> None:
        """llmcm_http_request_duration_seconds has buckets, count and sum per method, route and status."""
        all_samples = samples(traffic)
        labels = {"route": CONFIG_ROUTE, "method": "PUT", "status": "201"}
        buckets = find(all_samples, "llmcm_http_request_duration_seconds_bucket", **labels)
        assert buckets and {"le"} <= set(buckets[0].labels)
        assert next(s for s in buckets if s.labels["le"] == "+Inf").value >= 2
        assert find(all_samples, "llmcm_http_request_duration_seconds_count", **labels)
        assert find(all_samples, "llmcm_http_request_duration_seconds_sum", **labels)

    def test_latency_histogram_split_by_status(self, traffic: ServerProcess) -> None:
        """A failed request's latency is kept apart from the successes on the same route."""
        all_samples = samples(traffic)
        name = "llmcm_http_request_duration_seconds_count"
        put_400 = find(all_samples, name, route=CONFIG_ROUTE, method="PUT", status="400")
        get_404 = find(all_samples, name, route=CONFIG_ROUTE, method="GET", status="404")
        assert len(put_400) == 1 and put_400[0].value >= 1
        assert len(get_404) == 1 and get_404[0].value >= 1
        histogram = [s for s in all_samples if s.name.startswith("llmcm_http_request_duration_seconds")]
        assert histogram and all("status" in s.labels for s in histogram)

    def test_unknown_method_counted_as_other(self, traffic: ServerProcess) -> None:
        """A method outside GET HEAD POST PUT PATCH DELETE OPTIONS is labelled OTHER, never by its name."""
        all_samples = samples(traffic)
        assert find(all_samples, "llmcm_http_requests_total", method="OTHER", status="405")
        assert find(all_samples, "llmcm_http_request_duration_seconds_count", method="OTHER", status="405")
        assert not [s for s in all_samples if s.labels.get("method") == "PROPFIND"]

    def test_route_label_is_template(self, traffic: ServerProcess) -> None:
        """No label carries a raw path, so names never leak into metrics and cardinality stays bounded."""
        reply = traffic.http().get("/metrics")
        assert "metrics-ns" not in reply.body.decode()
        assert "secret-part" not in reply.body.decode()
