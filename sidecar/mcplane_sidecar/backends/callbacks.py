"""Callbacks a server POSTs to the sidecar (asyncmcp's webhook transports), one unguessable path per session.

The path segment names the session and authenticates the caller; a session id header, when the server
sends one and the session's id is known, must agree with it. Bodies are JSON-RPC messages, handed to the
session's deliver function as they came.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcplane_sidecar.jsonrpc import MalformedMessage, Message, parse_message
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

CALLBACK_TOKEN_BYTES: Final = 32
MAX_CALLBACK_BYTES: Final = 16 * 1024 * 1024
# What asyncmcp's own webhook receiver answers; one per reply, so encoded once.
ACCEPTED_BODY: Final = b'{"status":"success"}'


@dataclass
class _Registration:
    deliver: Callable[[Message], None]
    # The session id the server will claim in `session_header`, when known (it may be assigned later).
    session_id: Callable[[], str | None]


class CallbackHost:
    def __init__(
        self, public_base_url: str, callback_path: str, *, session_header: str, metrics: Metrics, kind: str
    ) -> None:
        self._base = public_base_url.rstrip("/")
        self._path = callback_path.rstrip("/")
        self._session_header = session_header
        self._metrics = metrics
        self._kind = kind
        self._registrations: dict[str, _Registration] = {}

    def routes(self) -> list[Route]:
        return [Route(f"{self._path}/{{token}}", self.accept, methods=["POST"])]

    def url_for(self, token: str) -> str:
        return f"{self._base}{self._path}/{token}"

    @contextmanager
    def registered(
        self, deliver: Callable[[Message], None], session_id: Callable[[], str | None]
    ) -> Iterator[str]:
        """A fresh token routing callbacks to `deliver` while the block runs."""
        token = secrets.token_urlsafe(CALLBACK_TOKEN_BYTES)
        self._registrations[token] = _Registration(deliver, session_id)
        try:
            yield token
        finally:
            self._registrations.pop(token, None)

    async def accept(self, request: Request) -> Response:
        registration = self._registrations.get(request.path_params["token"])
        if registration is None:
            self._metrics.async_unknown_replies.labels(backend=self._kind).inc()
            self._metrics.dropped_messages.labels(reason="unknown_session").inc()
            return JSONResponse({"status": "error", "error": "unknown callback"}, status_code=404)
        claimed = request.headers.get(self._session_header)
        expected = registration.session_id()
        if claimed is not None and expected is not None and claimed != expected:
            logger.warning("callback with a session id that does not match its path; refused")
            return JSONResponse({"status": "error", "error": "session mismatch"}, status_code=403)
        try:
            body = await request.body()
        except ClientDisconnect:
            return Response(status_code=400)
        if len(body) > MAX_CALLBACK_BYTES:
            return JSONResponse({"status": "error", "error": "too large"}, status_code=413)
        try:
            message = parse_message(body)
        except MalformedMessage as exc:
            return JSONResponse({"status": "error", "error": str(exc)}, status_code=400)
        self._metrics.async_received.labels(backend=self._kind, source="callback").inc()
        registration.deliver(message)
        return Response(ACCEPTED_BODY, media_type="application/json")


def with_webhook_url(message: Message, url: str) -> Message:
    """An `initialize` carrying the callback address in `_meta.webhookUrl`, as asyncmcp servers expect."""
    params = dict(message.get("params") or {})
    meta = dict(params.get("_meta") or {})
    meta["webhookUrl"] = url
    params["_meta"] = meta
    return {**message, "params": params}
