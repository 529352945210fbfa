"""The Streamable HTTP endpoint: 2025-era sessions and 2026-07-28 stateless requests on one path.

A POST whose body carries the `_meta` protocol envelope is stateless (front/stateless.py); an
`initialize` opens a session; everything else needs `Mcp-Session-Id`. Messages pass through untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Final

import anyio
from mcp_types.jsonrpc import INVALID_REQUEST, PARSE_ERROR
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcplane_sidecar.backends.base import LinkOptions
from mcplane_sidecar.core.registry import SessionRegistry
from mcplane_sidecar.core.replay import ReplayStream, parse_event_id
from mcplane_sidecar.core.session import ProxySession
from mcplane_sidecar.errors import BACKEND_TIMEOUT, ProxyError
from mcplane_sidecar.front.disconnect import cancelled_on_disconnect
from mcplane_sidecar.front.inbound import Admission, ClientContext, accepts
from mcplane_sidecar.front.responses import (
    follow_stream,
    jsonrpc_error,
    message_event,
    proxy_error_response,
    reply_response,
    sse_response,
)
from mcplane_sidecar.front.stateless import StatelessRelay
from mcplane_sidecar.jsonrpc import (
    Message,
    error_response,
    is_request,
    is_response,
    is_stateless,
    method_of,
    request_id,
)
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

MCP_SESSION_ID: Final = "mcp-session-id"
MCP_PROTOCOL_VERSION: Final = "mcp-protocol-version"
LAST_EVENT_ID: Final = "last-event-id"


class StreamableHttpEndpoint:
    def __init__(
        self,
        registry: SessionRegistry,
        metrics: Metrics,
        stateless: StatelessRelay,
        admission: Admission,
        *,
        max_body_bytes: int,
        request_timeout: float,
        sessionless: bool = False,
    ) -> None:
        self.sessionless = sessionless
        self.registry = registry
        self.metrics = metrics
        self.stateless = stateless
        self.admission = admission
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout

    async def __call__(self, request: Request) -> Response:
        client = self.admission.admit(request)
        if isinstance(client, Response):
            return client
        try:
            if request.method == "POST":
                return await self._post(request, client)
            if request.method == "GET":
                return await self._get(request, client)
            if request.method == "DELETE":
                return self._delete(request, client)
        except ProxyError as exc:
            return proxy_error_response(exc, None)
        return jsonrpc_error(
            405,
            None,
            INVALID_REQUEST,
            "Method Not Allowed: use POST, GET or DELETE",
            headers={"allow": "GET, POST, DELETE"},
        )

    # --- POST ----------------------------------------------------------------------------------

    async def _post(self, request: Request, client: ClientContext) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return jsonrpc_error(
                415, None, INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json"
            )
        received = await self.admission.read_message(request, self.max_body_bytes)
        if isinstance(received, Response):
            return received
        body, message = received
        version_header = request.headers.get(MCP_PROTOCOL_VERSION)
        if is_stateless(message) or (
            version_header in MODERN_PROTOCOL_VERSIONS and method_of(message) != "initialize"
        ):
            return await self.stateless.handle(request, body, message, client.principal, client.forwarded)
        if version_header is not None and version_header not in HANDSHAKE_PROTOCOL_VERSIONS:
            return jsonrpc_error(
                400,
                request_id(message),
                INVALID_REQUEST,
                f"Bad Request: unsupported protocol version {version_header}",
            )
        try:
            return await self._dispatch(request, client, message)
        except ProxyError as exc:
            return proxy_error_response(exc, request_id(message))

    async def _dispatch(self, request: Request, client: ClientContext, message: Message) -> Response:
        if self.sessionless and MCP_SESSION_ID not in request.headers:
            return await self.stateless.serve_sessionless(
                request, message, client.principal, client.forwarded
            )
        if method_of(message) == "initialize":
            if not is_request(message):
                return jsonrpc_error(
                    400, None, INVALID_REQUEST, "Invalid Request: initialize must be a request with an id"
                )
            if MCP_SESSION_ID in request.headers:
                # Re-initializing inside a session is the backend's call; pass it along.
                session = self._session(request, client)
                return await self._relay_request(request, session, message)
            return await self._initialize(request, message, client)
        session = self._session(request, client, message)
        if is_request(message):
            return await self._relay_request(request, session, message)
        await session.notify(message)
        return Response(status_code=202)

    def _session(
        self, request: Request, client: ClientContext, message: Message | None = None
    ) -> ProxySession:
        session_id = request.headers.get(MCP_SESSION_ID)
        if session_id is None:
            raise _MissingSession()
        return self.registry.get(session_id, client.principal)

    async def _initialize(self, request: Request, message: Message, client: ClientContext) -> Response:
        """Open a session; the id goes out on the initialize response, so this one answers as JSON."""
        rid = request_id(message)
        options = LinkOptions(dict(client.forwarded))
        try:
            session = await self.registry.open_session("2025", client.principal, options)
        except ProxyError as exc:
            return proxy_error_response(exc, rid)
        reply: Message | None = None
        try:
            # The deadline covers the send too: a backend that never answers the initialize POST holds
            # the send itself, where the registry's reaper cannot reach it.
            with anyio.move_on_after(self.request_timeout):
                async with cancelled_on_disconnect(request) as watched, self.registry.inflight_slot():
                    stream = await session.request(message)
                    async for _, event in stream.follow():
                        if is_response(event) and event.get("id") == rid:
                            reply = event
        except ProxyError as exc:
            session.close()
            return proxy_error_response(exc, rid)
        if watched.cancelled_caught or (reply is not None and await request.is_disconnected()):
            # Nobody will ever learn this session's id (e.g. a client that gave up on a slow stdio start):
            # keeping it would hold a backend session until the idle timeout, and closing it while the
            # server is still queued to start spares that start.
            session.close()
            logger.info("client left before its initialize was answered; session closed")
            return Response(status_code=499)
        if reply is None or "error" in reply:
            session.close()
            answer = reply or error_response(rid, BACKEND_TIMEOUT, "backend did not answer initialize")
            return reply_response(answer)
        return JSONResponse(reply, headers={MCP_SESSION_ID: session.session_id})

    async def _relay_request(self, request: Request, session: ProxySession, message: Message) -> Response:
        """Answer with JSON when the backend's first word is the final response, else stream SSE.

        The registry's reaper settles every request by its deadline, so waiting for the first event is
        bounded; a request that timed out before anything was said gets 504.
        """
        rid = request_id(message)
        try:
            self.registry.acquire_inflight()
        except ProxyError as exc:
            return proxy_error_response(exc, rid)
        handed_over = False
        try:
            stream = await session.request(message)
            events = stream.follow()
            first_id, first = await anext(events)
            if is_response(first) and first.get("id") == rid:
                return reply_response(first)
            if not accepts(request, "text/event-stream"):
                async for _, event in events:  # a JSON-only client gets the final response alone
                    if is_response(event) and event.get("id") == rid:
                        return reply_response(event)
                return jsonrpc_error(502, rid, BACKEND_TIMEOUT, "the request ended without a response")
            handed_over = True
            return sse_response(self._stream_rest(stream, first_id, first, events))
        except ProxyError as exc:
            return proxy_error_response(exc, rid)
        except StopAsyncIteration:
            return jsonrpc_error(502, rid, BACKEND_TIMEOUT, "the request ended without a response")
        finally:
            if not handed_over:
                self.registry.release_inflight()

    async def _stream_rest(
        self,
        stream: ReplayStream,
        first_id: str,
        first: Message,
        events: AsyncIterator[tuple[str, Message]],
    ) -> AsyncIterator[ServerSentEvent]:
        try:
            yield message_event(first_id, first)
            async for event_id, message in events:
                yield message_event(event_id, message)
        finally:
            self.registry.release_inflight()

    # --- GET -----------------------------------------------------------------------------------

    async def _get(self, request: Request, client: ClientContext) -> Response:
        if not accepts(request, "text/event-stream"):
            return jsonrpc_error(
                406, None, INVALID_REQUEST, "Not Acceptable: GET needs Accept: text/event-stream"
            )
        if request.headers.get(MCP_PROTOCOL_VERSION) in MODERN_PROTOCOL_VERSIONS:
            return Response(status_code=405, headers={"allow": "POST"})
        try:
            session = self._session(request, client)
        except _MissingSession:
            return jsonrpc_error(400, None, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
        resume = request.headers.get(LAST_EVENT_ID)
        if resume is not None:
            position = parse_event_id(resume)
            stream = session.find_stream(position[0]) if position else None
            if position is None or stream is None:
                return jsonrpc_error(400, None, INVALID_REQUEST, "Bad Request: unknown Last-Event-ID")
            if stream is not session.standing:
                return sse_response(follow_stream(stream, position[1], prime=False))
            after = position[1]
        else:
            after = 0
        if session.listeners:
            return jsonrpc_error(
                409, None, INVALID_REQUEST, "Conflict: a GET stream is already open for this session"
            )
        return sse_response(self._listen(session, after))

    async def _listen(self, session: ProxySession, after: int) -> AsyncIterator[ServerSentEvent]:
        session.listeners += 1
        try:
            async with session.open_backend_listener().listen():
                async for event in follow_stream(session.standing, after, prime=after == 0):
                    yield event
        finally:
            session.listeners -= 1
            session.last_seen = time.monotonic()

    # --- DELETE --------------------------------------------------------------------------------

    def _delete(self, request: Request, client: ClientContext) -> Response:
        try:
            session = self._session(request, client)
        except _MissingSession:
            return jsonrpc_error(400, None, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
        self.registry.close(session)
        return Response(status_code=200)


class _MissingSession(ProxyError):
    code = INVALID_REQUEST
    http_status = 400

    def __init__(self) -> None:
        super().__init__("Bad Request: Mcp-Session-Id header is required")


__all__ = ["PARSE_ERROR", "StreamableHttpEndpoint"]
