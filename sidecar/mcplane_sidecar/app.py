"""The ASGI application: MCP endpoints, health, readiness, status and metrics around one registry."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcplane_sidecar.backends.factory import build_backend, new_http_client
from mcplane_sidecar.config import ConfigError, SidecarConfig
from mcplane_sidecar.core.registry import SessionRegistry
from mcplane_sidecar.front.direct_route import DirectRoutes
from mcplane_sidecar.front.field_values import TrimmedFieldValues
from mcplane_sidecar.front.inbound import Admission
from mcplane_sidecar.front.legacy_sse import LegacySseEndpoints
from mcplane_sidecar.front.responses import internal_error
from mcplane_sidecar.front.security import Guard, read_tokens
from mcplane_sidecar.front.stateless import StatelessRelay
from mcplane_sidecar.front.streamable_http import StreamableHttpEndpoint
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

READY_CHECK_TIMEOUT: Final = 5.0
NOT_CHECKED: Final = "not checked yet"
MCP_METHODS: Final = ["GET", "POST", "DELETE"]
HTTP_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Headers browsers may read and send cross-origin; MCP's own are not CORS-safelisted.
CORS_EXPOSED: Final = ["mcp-session-id", "mcp-protocol-version"]
CORS_ALLOWED: Final = ["*"]


def instance_name(name: str) -> str:
    """This replica's name: the sidecar's name and the host (the pod name in Kubernetes), queue-safe."""
    raw = f"{name}-{socket.gethostname()}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:64]


class Sidecar:
    """Everything one running sidecar owns, built from its config; `app.state.sidecar`."""

    def __init__(self, config: SidecarConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        try:
            tokens = read_tokens(secret.resolve() for secret in config.security.tokens)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"security.tokens: {exc}") from None
        if config.security.tokens and not tokens:
            raise ConfigError("security.tokens: the configured sources hold no token")
        self.guard = Guard(config.security, tokens)
        self.http = new_http_client(config.backend)
        self.backend = build_backend(
            config.backend, config.sessions, self.http, self.metrics, instance=instance_name(config.name)
        )
        self.registry = SessionRegistry(self.backend, config.sessions, self.metrics)
        self.stateless = StatelessRelay(
            self.backend, self.registry, self.metrics, request_timeout=config.sessions.request_timeout
        )
        self.not_ready_reason: str | None = NOT_CHECKED

    async def check_ready(self) -> str | None:
        if self.registry.draining:
            return "draining: shutting down"
        reason: str | None = f"backend did not answer within {READY_CHECK_TIMEOUT:g} s"
        with anyio.move_on_after(READY_CHECK_TIMEOUT):
            reason = await self.backend.check_ready()
        self.metrics.ready.set(0 if reason else 1)
        if reason != self.not_ready_reason:
            # Not ready while starting (the first check) is expected; later, it is news.
            log = logger.warning if reason and self.not_ready_reason != NOT_CHECKED else logger.info
            log("backend %s", f"not ready: {reason}" if reason else "ready")
        self.not_ready_reason = reason
        return reason

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        try:
            async with self.backend.running(), self.registry.run(), self.stateless.run():
                await self.check_ready()
                yield
        finally:
            with anyio.CancelScope(shield=True):
                await self.backend.aclose()
                await self.http.aclose()


class SidecarApp(FastAPI):
    """FastAPI with a front door: every request meets `front` first (header trimming, CORS, the hot routes:
    front/direct_route.py), and what the hot routes do not serve goes on to FastAPI's own stack."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            await self.full_stack(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def full_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(config: SidecarConfig, *, metrics: Metrics | None = None) -> SidecarApp:
    sidecar = Sidecar(config, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with sidecar.running():
            yield

    app = SidecarApp(
        title=f"mcplane sidecar ({config.name})", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.sidecar = sidecar
    sessions = config.sessions
    admission = Admission(
        sidecar.guard, sidecar.metrics, forward_authorization=config.backend.forward_authorization
    )
    mcp = StreamableHttpEndpoint(
        sidecar.registry,
        sidecar.metrics,
        sidecar.stateless,
        admission,
        max_body_bytes=sessions.max_body_bytes,
        request_timeout=sessions.request_timeout,
        sessionless=sessions.stateless,
    )
    legacy = LegacySseEndpoints(
        sidecar.registry,
        admission,
        message_path=config.server.message_path,
        max_body_bytes=sessions.max_body_bytes,
    )
    # Every method reaches the MCP endpoint, which answers those it does not serve with a JSON-RPC 405.
    hot_routes = [
        Route(config.server.path, mcp.__call__, methods=HTTP_METHODS),
        Route(config.server.message_path, legacy.post, methods=["POST"]),  # a legacy SSE client's messages
    ]
    hot_routes += getattr(sidecar.backend, "routes", list)()  # e.g. the webhook backend's callbacks
    app.router.routes.extend(hot_routes)  # served by the front door below; the router answers the rest
    app.add_api_route(config.server.sse_path, legacy.stream, methods=["GET"], include_in_schema=False)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return internal_error(request, exc)  # never a stack trace to a client

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        reason = await sidecar.check_ready()
        if reason:
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/status", include_in_schema=False)
    async def status() -> JSONResponse:
        registry = sidecar.registry
        return JSONResponse(
            {
                "name": config.name,
                "backend": config.backend.kind,
                "activeSessions": len(registry.sessions),
                "maxSessions": sessions.max_sessions,
                "inflightRequests": registry.inflight,
                "draining": registry.draining,
            }
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(sidecar.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    front: ASGIApp = DirectRoutes(app.full_stack, routes=hot_routes)
    if config.security.cors_origins:
        front = CORSMiddleware(
            front,
            allow_origins=config.security.cors_origins,
            allow_methods=MCP_METHODS,
            allow_headers=CORS_ALLOWED,
            expose_headers=CORS_EXPOSED,
        )
    app.front = TrimmedFieldValues(front)
    return app
