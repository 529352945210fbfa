"""2026-07-28 stateless requests: checked against their headers, then relayed one POST per request.

With a Streamable HTTP backend the POST goes upstream as it came (every `Mcp-*` header included, also
the `Mcp-Param-*` ones we do not recognise) and the answer streams back byte for byte; when the client
closes its stream the upstream request is closed too, which is how this era cancels. Any other backend
(legacy SSE, stdio, a handshake-only HTTP server) is reached through the era bridge (core/bridge.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import cache
from typing import Final, Protocol

import aiohttp
import anyio
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp_types.jsonrpc import HEADER_MISMATCH, METHOD_NOT_FOUND
from multidict import CIMultiDict
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mcplane_sidecar.backends.auto import AutoBackend
from mcplane_sidecar.backends.base import Backend, LinkOptions
from mcplane_sidecar.backends.http import ACCEPT_BOTH, HttpBackend
from mcplane_sidecar.backends.stdio import StdioBackend
from mcplane_sidecar.backends.upstream import UPSTREAM_ERRORS, describe
from mcplane_sidecar.core.bridge import HandshakeBridge
from mcplane_sidecar.core.registry import SessionRegistry
from mcplane_sidecar.core.stateless_pool import StatelessPool
from mcplane_sidecar.errors import BACKEND_TIMEOUT, BACKEND_UNAVAILABLE, ProxyError
from mcplane_sidecar.front.disconnect import cancelled_on_disconnect
from mcplane_sidecar.front.param_headers import param_header_rejection
from mcplane_sidecar.front.responses import (
    STREAM_HEADERS,
    jsonrpc_error,
    message_event,
    proxy_error_response,
    reply_response,
    sse_response,
    status_of,
)
from mcplane_sidecar.jsonrpc import (
    Message,
    RequestId,
    dumps,
    error_response,
    is_request,
    is_response,
    method_of,
    request_id,
)
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)


class StatelessExchange(Protocol):
    """One 2026-07-28 request served by the proxy itself (pool or bridge) rather than relayed as HTTP."""

    def messages(self) -> AsyncIterator[Message]: ...

    async def cancel(self) -> None: ...


# Methods of the handshake era that 2026-07-28 removed; the pool's stdio server may not say 404 itself.
REMOVED_METHODS: Final = frozenset({"initialize"})


def stateless_status(reply: Message) -> int:
    """HTTP status of a final response in this era: errors map by code, as a 2026-07-28 server maps them."""
    error = reply.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return ERROR_CODE_HTTP_STATUS.get(error["code"], status_of(reply))
    return 200


def cut_off_event(rid: RequestId | None) -> bytes:
    """The last SSE event of a relayed stream the backend cut off: an error carrying the request's id
    (the blank lines first end whatever event was cut in half)."""
    error = dumps(error_response(rid, BACKEND_UNAVAILABLE, "backend stream broke before the answer"))
    return b"\n\nevent: message\ndata: " + error.encode() + b"\n\n"


# Hop-by-hop and session headers are ours; every other `mcp-*` header belongs to the request.
NOT_FORWARDED: Final = frozenset({"mcp-session-id"})
RESPONSE_HEADERS: Final = ("content-type",)
EVENT_STREAM: Final = "text/event-stream"


def relayed_headers(
    configured: Mapping[str, str], header_lines: Sequence[tuple[str, str]], forwarded: Mapping[str, str]
) -> CIMultiDict[str]:
    """The headers of a relayed request: the backend's configured ones, then every `Mcp-*` line of the
    client's (a repeated one too: the backend judges it, not us), then ours and the forwarded credentials."""
    relayed = CIMultiDict(configured)
    accept: str | None = None
    for name, value in header_lines:
        if name.startswith("mcp-") and name not in NOT_FORWARDED:
            relayed.add(name, value)
        elif name == "accept" and accept is None:
            accept = value  # the first line, as Starlette reads it
    relayed["content-type"] = "application/json"
    relayed["accept-encoding"] = "identity"  # bytes are relayed raw, so they must arrive unencoded
    relayed["accept"] = ACCEPT_BOTH if accept is None else accept
    relayed.update(forwarded)
    return relayed


@cache
def relay_timeouts(connect: float, read: float) -> aiohttp.ClientTimeout:
    """A relayed request's socket deadlines (the same two numbers every time, so built once)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


class StatelessRelay:
    def __init__(
        self, backend: Backend, registry: SessionRegistry, metrics: Metrics, *, request_timeout: float
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.metrics = metrics
        self.request_timeout = request_timeout
        self.bridge = HandshakeBridge(registry)
        self.pool = (
            StatelessPool(backend, size=backend.config.stateless_pool_size, request_timeout=request_timeout)
            if isinstance(backend, StdioBackend)
            else None
        )

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        if self.pool is None:
            yield
            return
        async with self.pool.run():
            yield

    async def handle(
        self,
        request: Request,
        body: bytes,
        message: Message,
        principal: str | None,
        forwarded: Mapping[str, str],
    ) -> Response:
        rid = request_id(message)
        # ASGI header names arrive lowercased; decoded once here, they serve every check and the relay.
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        duplicated = find_duplicated_routing_header(raw_headers)
        if duplicated is not None:
            return jsonrpc_error(400, rid, HEADER_MISMATCH, f"{duplicated} header given more than once")
        if is_request(message):
            # A repeated field reads as its first line, as in Starlette's headers.
            verdict = classify_inbound_request(message, headers=dict(reversed(raw_headers)))
            if isinstance(verdict, InboundLadderRejection):
                status = ERROR_CODE_HTTP_STATUS.get(verdict.code, 400)
                return jsonrpc_error(status, rid, verdict.code, verdict.message, data=verdict.data)
        try:
            target = await self.backend.resolve() if isinstance(self.backend, AutoBackend) else self.backend
            if isinstance(target, HttpBackend) and await target.speaks_modern():
                return await self._relay_http(
                    target, request, body, message, header_lines=raw_headers, forwarded=forwarded
                )
            if not is_request(message):
                return Response(status_code=202)  # notifications need no answer; nothing to cancel here
            if method_of(message) in REMOVED_METHODS:
                # The handshake is gone in this era; say so the way a 2026-07-28 server does.
                return jsonrpc_error(404, rid, METHOD_NOT_FOUND, f"Method not found: {method_of(message)}")
            # Starlette's headers list a repeated field once per line, so the Mcp-Param-* check sees it twice.
            return await self._exchange(request, message, request.headers, principal, forwarded)
        except ProxyError as exc:
            return proxy_error_response(exc, rid)

    async def _exchange(
        self,
        request: Request,
        message: Message,
        headers: Mapping[str, str],
        principal: str | None,
        forwarded: Mapping[str, str],
        *,
        bridged_only: bool = False,
    ) -> Response:
        """Serve the request on a pooled stdio process, else on a bridged handshake-era session; answer
        with JSON when the first message is the final response, else stream."""
        rid = request_id(message)
        self.registry.acquire_inflight()
        handed_over = False
        try:
            exchange: StatelessExchange
            if not bridged_only and self.pool is not None and await self.pool.speaks_modern():
                rejection = await param_header_rejection(self.pool, message, headers)
                if rejection is not None:
                    return jsonrpc_error(400, rid, rejection.code, rejection.message, data=rejection.data)
                exchange = await self.pool.submit(message)
            else:
                exchange = await self.bridge.open(message, principal, LinkOptions(dict(forwarded)))
            messages = exchange.messages()
            first: Message | None = None
            async with cancelled_on_disconnect(request):
                first = await anext(messages)
            if first is None:
                with anyio.CancelScope(shield=True):
                    await exchange.cancel()  # the client left before the first word: cancel upstream
                return Response(status_code=499)
            if is_response(first):
                return reply_response(first, stateless_status(first))
            handed_over = True
            return sse_response(self._events(exchange, first, messages))
        except StopAsyncIteration:
            return jsonrpc_error(502, rid, BACKEND_UNAVAILABLE, "the request ended without a response")
        finally:
            if not handed_over:
                self.registry.release_inflight()

    async def serve_sessionless(
        self, request: Request, message: Message, principal: str | None, forwarded: Mapping[str, str]
    ) -> Response:
        """`sessions.stateless`: a handshake-era client served without a session of its own. `initialize`
        is answered from the shared bridged backend session; every request goes through the bridge."""
        rid = request_id(message)
        try:
            if method_of(message) == "initialize":
                result = await self.bridge.initialize_result(message, principal, LinkOptions(dict(forwarded)))
                return JSONResponse({"jsonrpc": "2.0", "id": rid, "result": result})
            if not is_request(message):
                return Response(status_code=202)  # no session to tell
            return await self._exchange(request, message, {}, principal, forwarded, bridged_only=True)
        except ProxyError as exc:
            return proxy_error_response(exc, rid)

    async def _events(
        self, exchange: StatelessExchange, first: Message, messages: AsyncIterator[Message]
    ) -> AsyncIterator[ServerSentEvent]:
        finished = False
        try:
            yield message_event(None, first)
            async for message in messages:
                finished = is_response(message)
                yield message_event(None, message)
        finally:
            if not finished:
                # In this era a closed stream is the cancellation.
                with anyio.CancelScope(shield=True):
                    await exchange.cancel()
            self.registry.release_inflight()

    async def _relay_http(
        self,
        backend: HttpBackend,
        request: Request,
        body: bytes,
        message: Message,
        *,
        header_lines: Sequence[tuple[str, str]],
        forwarded: Mapping[str, str],
    ) -> Response:
        rid = request_id(message)
        relayed = relayed_headers(backend.headers, header_lines, forwarded)
        self.registry.acquire_inflight()
        started = time.monotonic()
        method = method_of(message) or ""
        socket_timeouts = relay_timeouts(backend.upstream.connect_timeout, self.request_timeout)
        upstream: aiohttp.ClientResponse | None = None
        whole_body: bytes | None = None
        try:
            async with cancelled_on_disconnect(request):
                upstream = await backend.upstream.request(
                    "POST", relayed, body, socket_timeouts=socket_timeouts
                )
                if upstream.content_type != EVENT_STREAM:
                    # One JSON answer (the common case): read it here and skip the streaming machinery.
                    whole_body = await upstream.read()
        except UPSTREAM_ERRORS as exc:
            if upstream is not None:
                upstream.close()
            self.registry.release_inflight()
            return self._upstream_failed(exc, rid, method, connected=upstream is not None)
        if upstream is None or (whole_body is None and upstream.content_type != EVENT_STREAM):
            # The client left before the backend answered; abandoning the upstream call cancelled it.
            if upstream is not None:
                upstream.close()
            self.registry.release_inflight()
            self.metrics.request_finished(method, "cancelled")
            return Response(status_code=499)
        response_headers = {k: upstream.headers[k] for k in RESPONSE_HEADERS if k in upstream.headers}
        if whole_body is not None:
            self.registry.release_inflight()
            outcome = "ok" if upstream.status < 400 else f"http_{upstream.status}"
            self.metrics.request_finished(method, outcome, time.monotonic() - started)
            return Response(whole_body, status_code=upstream.status, headers=response_headers)

        async def relay() -> AsyncIterator[bytes]:
            outcome = "ok" if upstream.status < 400 else f"http_{upstream.status}"
            try:
                async for chunk in upstream.content.iter_any():
                    yield chunk
            except aiohttp.ClientError as exc:
                outcome = "backend_error"
                self.metrics.backend_errors.labels(kind="stream").inc()
                logger.warning("stateless relay: backend stream broke: %s", describe(exc))
                yield cut_off_event(rid)  # the client still learns its request failed
            finally:
                # Reached also when the client goes away: closing upstream is the cancellation.
                upstream.close()
                self.registry.release_inflight()
                self.metrics.request_finished(method, outcome, time.monotonic() - started)

        response_headers.update(STREAM_HEADERS)
        return StreamingResponse(relay(), status_code=upstream.status, headers=response_headers)

    def _upstream_failed(
        self, exc: Exception, rid: RequestId | None, method: str, *, connected: bool
    ) -> Response:
        """The answer to a relayed request the backend failed: 504 past the deadline, else 503."""
        if isinstance(exc, TimeoutError):
            self.metrics.backend_errors.labels(kind="timeout").inc()
            self.metrics.request_finished(method, "timeout")
            logger.warning("stateless relay: backend did not answer within %g s", self.request_timeout)
            return jsonrpc_error(
                504, rid, BACKEND_TIMEOUT, f"backend did not answer within {self.request_timeout:g} s"
            )
        self.metrics.backend_errors.labels(kind="stream" if connected else "connect").inc()
        logger.warning("stateless relay: backend unreachable: %s", describe(exc))
        return jsonrpc_error(
            503, rid, BACKEND_UNAVAILABLE, "backend unreachable", headers={"retry-after": "1"}
        )
