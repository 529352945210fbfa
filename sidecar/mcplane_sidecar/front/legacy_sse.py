"""Legacy HTTP+SSE front (protocol 2024-11-05): GET opens the stream and names the POST endpoint;
every message for the session, responses included, travels on that one stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

from mcp_types.jsonrpc import INVALID_REQUEST
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from mcplane_sidecar.backends.base import LinkOptions
from mcplane_sidecar.core.registry import SessionRegistry
from mcplane_sidecar.core.session import ProxySession
from mcplane_sidecar.errors import ProxyError
from mcplane_sidecar.front.inbound import Admission
from mcplane_sidecar.front.responses import follow_stream, jsonrpc_error, proxy_error_response, sse_response
from mcplane_sidecar.jsonrpc import is_request, request_id

logger = logging.getLogger(__name__)


class LegacySseEndpoints:
    def __init__(
        self,
        registry: SessionRegistry,
        admission: Admission,
        *,
        message_path: str,
        max_body_bytes: int,
    ) -> None:
        self.registry = registry
        self.admission = admission
        self.message_path = message_path
        self.max_body_bytes = max_body_bytes

    async def stream(self, request: Request) -> Response:
        client = self.admission.admit(request)
        if isinstance(client, Response):
            return client
        try:
            session = await self.registry.open_session("sse", client.principal, LinkOptions(client.forwarded))
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
        client = self.admission.admit(request)
        if isinstance(client, Response):
            return client
        session_id = request.query_params.get("session_id")
        if not session_id:
            return jsonrpc_error(
                400, None, INVALID_REQUEST, "Bad Request: session_id query parameter is required"
            )
        received = await self.admission.read_message(request, self.max_body_bytes)
        if isinstance(received, Response):
            return received
        _, message = received
        try:
            session = self.registry.get(session_id, client.principal)
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
