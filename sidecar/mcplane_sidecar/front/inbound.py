"""What every HTTP front does before a message reaches a session: admit the caller (Origin, bearer token),
then read and parse one JSON-RPC message under the body limit. Each refusal is a finished Response."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mcp_types.jsonrpc import INVALID_REQUEST
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from mcplane_sidecar.core.registry import principal_of
from mcplane_sidecar.errors import REQUEST_TOO_LARGE, UNAUTHORIZED
from mcplane_sidecar.front.responses import jsonrpc_error
from mcplane_sidecar.front.security import Guard
from mcplane_sidecar.jsonrpc import MalformedMessage, Message, parse_message
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass
class ClientContext:
    """What the front learned about the caller before the body: principal and forwardable headers."""

    principal: str | None
    forwarded: dict[str, str] = field(default_factory=dict)


class Admission:
    def __init__(self, guard: Guard, metrics: Metrics, *, forward_authorization: bool) -> None:
        self.guard = guard
        self.metrics = metrics
        self.forward_authorization = forward_authorization

    def admit(self, request: Request) -> ClientContext | Response:
        if not self.guard.origin_allowed(request):
            self.metrics.session_rejections.labels(reason="origin").inc()
            logger.warning("refused a request from origin %s", request.headers.get("origin"))
            return jsonrpc_error(403, None, INVALID_REQUEST, "Forbidden: origin not allowed")
        accepted, token = self.guard.authenticate(request)
        if not accepted:
            self.metrics.session_rejections.labels(reason="unauthorized").inc()
            return jsonrpc_error(
                401,
                None,
                UNAUTHORIZED,
                "Unauthorized: a valid bearer token is required",
                headers={"www-authenticate": 'Bearer realm="mcplane"'},
            )
        forwarded = {}
        if self.forward_authorization and "authorization" in request.headers:
            forwarded["authorization"] = request.headers["authorization"]
        return ClientContext(principal_of(token), forwarded)

    async def read_message(self, request: Request, max_body_bytes: int) -> tuple[bytes, Message] | Response:
        """The body as received (relayed byte for byte where it can be) and its parsed message."""
        try:
            body = await read_body(request, max_body_bytes)
        except BodyTooLarge:
            self.metrics.session_rejections.labels(reason="too_large").inc()
            return jsonrpc_error(413, None, REQUEST_TOO_LARGE, f"Request body exceeds {max_body_bytes} bytes")
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            return body, parse_message(body)
        except MalformedMessage as exc:
            return jsonrpc_error(400, None, exc.code, str(exc))


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def accepts(request: Request, media_type: str) -> bool:
    """Whether the Accept header admits `media_type` (a missing header admits everything)."""
    accept = request.headers.get("accept", "")
    if not accept:
        return True
    wildcard = media_type.split("/", maxsplit=1)[0] + "/*"
    return any(part.split(";")[0].strip() in (media_type, "*/*", wildcard) for part in accept.split(","))
