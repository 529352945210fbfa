"""Prometheus metrics of one sidecar. Each app owns its registry, so several can live in one process."""

from __future__ import annotations

from typing import Final

from mcp_types.methods import SPEC_CLIENT_METHODS
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Tool calls through a proxy span sub-millisecond pings to minutes-long tools.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The `method` label of a request that is not one of the specification's client requests.
OTHER_METHOD: Final = "other"


def method_label(method: str) -> str:
    """The spec's request methods keep their name; any other is "other". The method is the client's to
    choose, and one series per made-up name would grow the sidecar's memory and Prometheus without bound."""
    return method if method in SPEC_CLIENT_METHODS else OTHER_METHOD


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge(
            "mcplane_sessions_active", "Client sessions currently open.", ["era"], registry=r
        )
        self.sessions_total = Counter(
            "mcplane_sessions_total", "Client sessions opened since start.", ["era"], registry=r
        )
        self.session_rejections = Counter(
            "mcplane_session_rejections_total",
            "Requests refused before reaching a session (limit, draining, unknown, auth).",
            ["reason"],
            registry=r,
        )
        self.requests = Counter(
            "mcplane_requests_total",
            "JSON-RPC requests relayed, by method and outcome.",
            ["method", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "mcplane_request_duration_seconds",
            "Time from a client request to its response.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_errors = Counter(
            "mcplane_backend_errors_total", "Failures talking to the backend, by kind.", ["kind"], registry=r
        )
        self.inflight = Gauge("mcplane_inflight_requests", "Requests awaiting a response.", registry=r)
        self.stdio_starts_waiting = Gauge(
            "mcplane_stdio_starts_waiting",
            "stdio server processes waiting for a start slot (backend.stdio.max_concurrent_starts).",
            registry=r,
        )
        self.backend_restarts = Counter(
            "mcplane_backend_restarts_total",
            "Backend processes restarted or sessions re-initialized.",
            ["reason"],
            registry=r,
        )
        self.dropped_messages = Counter(
            "mcplane_dropped_messages_total",
            "Backend messages that had no client to go to.",
            ["reason"],
            registry=r,
        )
        # Asynchronous backends (SQS, SNS+SQS, webhook).
        self.async_sent = Counter(
            "mcplane_async_messages_sent_total",
            "Messages put on a queue, topic or webhook.",
            ["backend", "destination"],
            registry=r,
        )
        self.async_received = Counter(
            "mcplane_async_messages_received_total",
            "Replies taken from the reply channel.",
            ["backend", "source"],
            registry=r,
        )
        self.async_deleted = Counter(
            "mcplane_async_messages_deleted_total",
            "Replies acknowledged (deleted) after dispatch.",
            ["backend", "source"],
            registry=r,
        )
        self.async_receive_errors = Counter(
            "mcplane_async_receive_errors_total",
            "Failed receives from the reply channel.",
            ["backend"],
            registry=r,
        )
        self.async_unknown_replies = Counter(
            "mcplane_async_unknown_session_replies_total",
            "Replies for sessions this sidecar does not hold.",
            ["backend"],
            registry=r,
        )
        self.async_reply_latency = Histogram(
            "mcplane_async_reply_latency_seconds",
            "From sending a request to its reply arriving.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.max_sessions = Gauge("mcplane_sessions_limit", "The configured session limit.", registry=r)
        self.ready = Gauge("mcplane_backend_ready", "1 when the backend answered its last check.", registry=r)
        # Every relayed request lands here; `labels()` resolves its child anew each time, this looks it up.
        self._request_series: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def request_finished(self, method: str, outcome: str, seconds: float | None = None) -> None:
        """Count one relayed request by method and outcome; time it too when `seconds` is given."""
        key = (method_label(method), outcome)
        series = self._request_series.get(key)
        if series is None:
            label = key[0]
            series = (
                self.requests.labels(method=label, outcome=outcome),
                self.request_duration.labels(method=label),
            )
            self._request_series[key] = series
        count, duration = series
        count.inc()
        if seconds is not None:
            duration.observe(seconds)
