"""HTTP answers shared by the front transports: JSON-RPC errors with the right status, and SSE framing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from mcp_types.jsonrpc import INTERNAL_ERROR
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcplane_sidecar.core.replay import ReplayStream
from mcplane_sidecar.errors import (
    BACKEND_SESSION_LOST,
    BACKEND_TIMEOUT,
    BACKEND_UNAVAILABLE,
    REQUEST_TOO_LARGE,
    ProxyError,
)
from mcplane_sidecar.jsonrpc import Message, RequestId, dumps, error_response

# Proxies such as nginx buffer responses unless told not to; SSE must flow event by event.
STREAM_HEADERS: Final = {"x-accel-buffering": "no", "cache-control": "no-cache, no-transform"}
# Comment lines keep idle streams alive through load balancers that cut silent connections.
KEEPALIVE_SECONDS: Final = 15

logger = logging.getLogger(__name__)


def jsonrpc_error(
    status: int,
    id_: RequestId | None,
    code: int,
    message: str,
    *,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return JSONResponse(
        error_response(id_, code, message, data), status_code=status, headers=dict(headers or {})
    )


def internal_error(request: Request, exc: Exception) -> Response:
    """The answer to a request our own code failed: logged with its trace, never shown to the client."""
    logger.exception("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
    return jsonrpc_error(500, None, INTERNAL_ERROR, "Internal error in the proxy")


def proxy_error_response(exc: ProxyError, id_: RequestId | None) -> Response:
    headers = {"retry-after": str(exc.retry_after)} if exc.retry_after is not None else {}
    return jsonrpc_error(exc.http_status, id_, exc.code, exc.message, data=exc.data, headers=headers)


# The proxy's own answers for trouble behind it carry an HTTP status that says so, as load balancers and
# retry logic expect; every other JSON-RPC response (the backend's own errors included) is a plain 200.
PROXY_ERROR_STATUS: Final = {
    BACKEND_TIMEOUT: 504,
    BACKEND_UNAVAILABLE: 503,
    BACKEND_SESSION_LOST: 502,
    REQUEST_TOO_LARGE: 413,
}


def status_of(reply: Message | None) -> int:
    """HTTP status for a final response: the proxy's own failure codes map to 5xx/413, the rest to 200."""
    if reply is None:
        return 504
    error = reply.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return PROXY_ERROR_STATUS.get(error["code"], 200)
    return 200


def reply_response(reply: Message, status: int | None = None) -> JSONResponse:
    """A final JSON-RPC response as JSON; a 503 tells the client when to try again."""
    code = status_of(reply) if status is None else status
    return JSONResponse(reply, status_code=code, headers={"retry-after": "1"} if code == 503 else None)


def message_event(event_id: str | None, message: Message) -> ServerSentEvent:
    return ServerSentEvent(data=dumps(message), id=event_id, event="message")


def sse_response(
    events: AsyncIterator[ServerSentEvent], *, headers: Mapping[str, str] | None = None
) -> EventSourceResponse:
    return EventSourceResponse(events, headers={**STREAM_HEADERS, **(headers or {})}, ping=KEEPALIVE_SECONDS)


async def follow_stream(stream: ReplayStream, after: int, *, prime: bool) -> AsyncIterator[ServerSentEvent]:
    if prime:
        # An id before any data lets the client resume even if the connection drops before the first event.
        yield ServerSentEvent(data="", id=stream.event_id(0))
    async for event_id, message in stream.follow(after):
        yield message_event(event_id, message)
