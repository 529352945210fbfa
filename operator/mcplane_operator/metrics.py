"""Prometheus metrics of the operator itself, on their own registry and their own port."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# Results of one reconcile, the `result` label of reconciles_total.
RESULT_READY = "ready"  # children applied, every wanted replica ready
RESULT_PROGRESSING = "progressing"  # children applied, the rollout is not finished
RESULT_DEGRADED = "degraded"  # the spec cannot be realised (invalid, a Secret missing, the API refused)
RESULT_ERROR = "error"  # an unexpected failure: kopf logs it and retries
RESULTS = (RESULT_READY, RESULT_PROGRESSING, RESULT_DEGRADED, RESULT_ERROR)
# A reconcile is a few API round trips, plus probing the pods' /status on a timer tick.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "mcplane_operator_reconciles_total",
            "Reconciles of MCPProxy resources, by result.",
            ["result"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "mcplane_operator_reconcile_errors_total",
            "Reconciles that failed on an API error or an unexpected exception (kopf retries them).",
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "mcplane_operator_reconcile_duration_seconds",
            "Time one reconcile took, API calls and pod probes included.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        for result in RESULTS:  # every series exists from the start, so rate() has a baseline
            self.reconciles.labels(result)

    @contextlib.contextmanager
    def reconciling(self) -> Iterator[None]:
        """Time a reconcile; an exception escaping it counts as an `error` result and an error."""
        start = time.perf_counter()
        try:
            yield
        except Exception:
            self.reconciles.labels(RESULT_ERROR).inc()
            self.reconcile_errors.inc()
            raise
        finally:
            self.reconcile_duration.observe(time.perf_counter() - start)


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[v6]:PORT`; a bad value fails here, at startup."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address {address!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(metrics: OperatorMetrics, address: str) -> WSGIServer:
    """Serve /metrics on `address` from a daemon thread; call `.shutdown()` on the result to stop it."""
    host, port = parse_address(address)
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
