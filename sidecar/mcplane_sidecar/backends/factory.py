"""Builds the configured backend; the one place that knows every backend kind."""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx2

from mcplane_sidecar.backends.auto import AutoBackend
from mcplane_sidecar.backends.base import Backend
from mcplane_sidecar.backends.callbacks import CallbackHost
from mcplane_sidecar.backends.http import HttpBackend
from mcplane_sidecar.backends.sse import SseBackend
from mcplane_sidecar.backends.stdio import StdioBackend
from mcplane_sidecar.backends.webhook import WebhookBackend
from mcplane_sidecar.config import BackendConfig, ConfigError, SessionConfig, SqsBackendConfig
from mcplane_sidecar.metrics import Metrics


def resolve_headers(config: BackendConfig) -> dict[str, str]:
    try:
        return {name: value.resolve() for name, value in config.headers.items()}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"backend.headers: {exc}") from None


def new_http_client(config: BackendConfig) -> httpx2.AsyncClient:
    """For the legacy SSE backend; Streamable HTTP and webhooks have their own pool (backends/upstream.py).

    No read timeout: SSE streams idle legitimately; the proxy enforces request deadlines itself."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(config.connect_timeout, read=None),
        limits=httpx2.Limits(max_connections=None, max_keepalive_connections=256),
        follow_redirects=False,
        # One client serves every session: a cookie set for one must never reach another, so none is kept.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


def build_backend(
    config: BackendConfig,
    sessions: SessionConfig,
    http: httpx2.AsyncClient,
    metrics: Metrics,
    *,
    instance: str,
) -> Backend:
    """`instance` names this sidecar replica (its reply queue, the default ClientId)."""
    headers = resolve_headers(config)
    client_id = config.client_id or instance
    if config.kind in ("sqs", "sns-sqs"):
        # Imported here: boto3 and botocore cost 0.3 s of start-up and 10 MiB that no other kind needs.
        from mcplane_sidecar.backends.queues import (  # noqa: PLC0415
            QueueBackend,
            QueueSettings,
            SnsSqsBackend,
        )

        settings = QueueSettings(
            aws=config.aws,
            sqs=config.sqs or SqsBackendConfig(),  # sns-sqs needs only the reply-queue settings
            client_id=client_id,
            extra_attributes=config.message_attributes,
            instance=instance,
        )
        if config.kind == "sqs":
            return QueueBackend(settings, metrics)
        assert config.sns is not None
        return SnsSqsBackend(settings, metrics, config.sns)
    if config.kind == "webhook":
        assert config.webhook is not None
        return WebhookBackend(
            config.webhook,
            client_id=client_id,
            headers=headers,
            metrics=metrics,
            connect_timeout=config.connect_timeout,
        )
    if config.kind == "stdio":
        assert config.stdio is not None
        return StdioBackend(config.stdio, metrics, request_timeout=sessions.request_timeout)
    assert config.url is not None
    if config.kind == "streamable-http-webhook":
        assert config.webhook is not None
        callbacks = CallbackHost(
            config.webhook.public_base_url,
            config.webhook.callback_path,
            session_header="mcp-session-id",
            metrics=metrics,
            kind=config.kind,
        )
        return HttpBackend(
            config.url,
            headers=headers,
            metrics=metrics,
            connect_timeout=config.connect_timeout,
            callbacks=callbacks,
        )
    http_backend = HttpBackend(
        config.url, headers=headers, metrics=metrics, connect_timeout=config.connect_timeout
    )
    if config.kind == "http":
        return http_backend
    sse_backend = SseBackend(
        config.url, headers=headers, http=http, metrics=metrics, connect_timeout=config.connect_timeout
    )
    if config.kind == "sse":
        return sse_backend
    return AutoBackend(config.url, http_backend, sse_backend)
