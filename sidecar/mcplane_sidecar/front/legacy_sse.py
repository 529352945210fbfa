"""Legacy HTTP+SSE front (protocol 2024-11-05): GET opens the stream and names the POST endpoint;
every message for the session, responses included, travels on that one stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

from mcp_types.jsonrpc import INVALID_REQUEST
from sse_starlette import ServerSentEvent
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from mcplane_sidecar.backends.base import LinkOptions
from mcplane_sidecar.core.registry import SessionRegistry, principal_of
from mcplane_sidecar.core.session import ProxySession
from mcplane_sidecar.errors import REQUEST_TOO_LARGE, UNAUTHORIZED, ProxyError
from mcplane_sidecar.front.responses import follow_stream, jsonrpc_error, proxy_error_response, sse_response
from mcplane_sidecar.front.security import Guard
from mcplane_sidecar.front.streamable_http import BodyTooLarge, read_body
from mcplane_sidecar.jsonrpc import MalformedMessage, is_request, parse_message, request_id

logger = logging.getLogger(__name__)


class LegacySseEndpoints:
    def __init__(
        self,
        registry: SessionRegistry,
        guard: Guard,
        *,
        message_path: str,
        max_body_bytes: int,
        forward_authorization: bool,
    ) -> None:
        self.registry = registry
        self.guard = guard
        self.message_path = message_path
        self.max_body_bytes = max_body_bytes
        self.forward_authorization = forward_authorization

    def _admit(self, request: Request) -> tuple[Response | None, str | None]:
        if not self.guard.origin_allowed(request):
            return jsonrpc_error(403, None, INVALID_REQUEST, "Forbidden: origin not allowed"), None
        accepted, token = self.guard.authenticate(request)
        if not accepted:
            return jsonrpc_error(
                401,
                None,
                UNAUTHORIZED,
                "Unauthorized: a valid bearer token is required",
                headers={"www-authenticate": 'Bearer realm="mcplane"'},
            ), None
        return None, principal_of(token)

    async def stream(self, request: Request) -> Response:
        refusal, principal = self._admit(request)
        if refusal is not None:
            return refusal
        forwarded = {}
        if self.forward_authorization and "authorization" in request.headers:
            forwarded["authorization"] = request.headers["authorization"]
        try:
            session = await self.registry.open_session("sse", principal, LinkOptions(forwarded))
        except ProxyError as exc:
            return proxy_error_response(exc, None)
        root = request.scope.get("root_path", "")
        endpoint = f"{root}{self.message_path}?session_id={quote(session.session_id)}"
        return sse_response(self._events(session, endpoint))

    async def _events(self, session: ProxySession, endpoint: str) -> AsyncIterator[ServerSentEvent]:
        session.listeners += 1
        try:
            yield ServerSentEvent(data=endpoint, event="endpoint")
            async with session.open_backend_listener().listen():
                async for event in follow_stream(session.standing, 0, prime=False):
                    yield event
        finally:
            # In this transport the stream is the session: when it goes, so does the backend session.
            session.listeners -= 1
            self.registry.close(session)

    async def post(self, request: Request) -> Response:
        refusal, principal = self._admit(request)
        if refusal is not None:
            return refusal
        session_id = request.query_params.get("session_id")
        if not session_id:
            return jsonrpc_error(
                400, None, INVALID_REQUEST, "Bad Request: session_id query parameter is required"
            )
        try:
            body = await read_body(request, self.max_body_bytes)
        except BodyTooLarge:
            return jsonrpc_error(
                413, None, REQUEST_TOO_LARGE, f"Request body exceeds {self.max_body_bytes} bytes"
            )
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            message = parse_message(body)
        except MalformedMessage as exc:
            return jsonrpc_error(400, None, exc.code, str(exc))
        try:
            session = self.registry.get(session_id, principal)
            if is_request(message):
                self.registry.acquire_inflight()
                try:
                    await session.request(message)
                finally:
                    # The answer goes out on the stream; in-flight accounting ends when it was handed over.
                    self.registry.release_inflight()
            else:
                await session.notify(message)
        except ProxyError as exc:
            return proxy_error_response(exc, request_id(message))
        return Response("Accepted", status_code=202)
