"""HTTP answers shared by the front transports: JSON-RPC errors with the right status, and SSE framing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import JSONResponse, Response

from mcplane_sidecar.core.replay import ReplayStream
from mcplane_sidecar.errors import BACKEND_TIMEOUT, ProxyError
from mcplane_sidecar.jsonrpc import Message, RequestId, dumps, error_response

# Proxies such as nginx buffer responses unless told not to; SSE must flow event by event.
STREAM_HEADERS: Final = {"x-accel-buffering": "no", "cache-control": "no-cache, no-transform"}
# Comment lines keep idle streams alive through load balancers that cut silent connections.
KEEPALIVE_SECONDS: Final = 15


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


def proxy_error_response(exc: ProxyError, id_: RequestId | None) -> Response:
    headers = {"retry-after": str(exc.retry_after)} if exc.retry_after is not None else {}
    return jsonrpc_error(exc.http_status, id_, exc.code, exc.message, data=exc.data, headers=headers)


def status_of(reply: Message | None) -> int:
    """HTTP status for a final response: 504 when the proxy's deadline settled it, else 200."""
    if reply is None:
        return 504
    error = reply.get("error")
    return 504 if isinstance(error, dict) and error.get("code") == BACKEND_TIMEOUT else 200


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
