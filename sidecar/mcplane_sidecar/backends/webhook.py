"""Webhook backend, on the wire exactly as asyncmcp 0.2.1's webhook client.

Messages are POSTed to the server's request endpoint with asyncmcp's headers; the server POSTs every
reply to the `webhookUrl` given in `initialize` `_meta`. The sidecar hosts that callback on its own
server, one unguessable path segment per session: the path alone tells which session a reply belongs to
and authenticates the caller, and the server's `X-Session-ID` header must agree with it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Final

import httpx2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcplane_sidecar.backends.async_link import AsyncLink, ReplyRouter, new_session_id
from mcplane_sidecar.backends.base import LinkOptions
from mcplane_sidecar.config import WebhookBackendConfig
from mcplane_sidecar.errors import BackendUnavailable
from mcplane_sidecar.jsonrpc import MalformedMessage, Message, dumps, is_request, method_of, parse_message
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

USER_AGENT: Final = "asyncmcp-webhook/1.0"
CALLBACK_TOKEN_BYTES: Final = 32
MAX_CALLBACK_BYTES: Final = 16 * 1024 * 1024
DELETE_TIMEOUT: Final = 5.0
# The server acknowledges a POST at once and answers later on the callback; a slow POST means trouble.
POST_TIMEOUT: Final = 30.0


class WebhookBackend:
    kind = "webhook"

    def __init__(
        self,
        config: WebhookBackendConfig,
        *,
        client_id: str,
        http: httpx2.AsyncClient,
        headers: dict[str, str],
        metrics: Metrics,
    ) -> None:
        self._config = config
        self._client_id = client_id
        self._http = http
        self._headers = dict(headers)
        self._metrics = metrics
        self._router = ReplyRouter(metrics, self.kind)
        self._session_of_token: dict[str, str] = {}

    def running(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    async def aclose(self) -> None:
        return None

    def routes(self) -> list[Route]:
        """The callback route the sidecar's app must serve."""
        path = f"{self._config.callback_path.rstrip('/')}/{{token}}"
        return [Route(path, self.accept_callback, methods=["POST"])]

    def callback_url(self, token: str) -> str:
        return f"{self._config.public_base_url.rstrip('/')}{self._config.callback_path.rstrip('/')}/{token}"

    # --- sessions ----------------------------------------------------------------------------------

    def open_link(self, options: LinkOptions) -> AbstractAsyncContextManager[AsyncLink]:
        return self._open(options)

    @asynccontextmanager
    async def _open(self, options: LinkOptions) -> AsyncIterator[AsyncLink]:
        token = secrets.token_urlsafe(CALLBACK_TOKEN_BYTES)
        link = AsyncLink(new_session_id(), options, self._transmit, self._metrics, self.kind)
        link.callback_token = token
        self._session_of_token[token] = link.session_id
        try:
            async with self._router.registered(token, link):
                yield link
        finally:
            self._session_of_token.pop(token, None)
            await self._terminate(link)

    async def _terminate(self, link: AsyncLink) -> None:
        headers = {**self._base_headers(), "X-Session-ID": link.session_id}
        try:
            response = await self._http.delete(
                self._config.server_url, headers=headers, timeout=DELETE_TIMEOUT
            )
            if response.status_code not in (200, 404):
                logger.info("webhook server answered HTTP %d to the session's DELETE", response.status_code)
        except httpx2.HTTPError as exc:
            logger.info("webhook session DELETE failed: %s", type(exc).__name__)

    def _base_headers(self) -> dict[str, str]:
        return {
            **self._headers,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Client-ID": self._client_id,
        }

    async def _transmit(self, link: AsyncLink, message: Message) -> None:
        if method_of(message) == "initialize":
            message = self._with_callback(message, link)
        headers = {**self._base_headers(), "X-Session-ID": link.session_id}
        method = method_of(message)
        if is_request(message):
            headers["X-Request-ID"] = str(message["id"])
        if method is not None:
            headers["X-Method"] = method
        if link.protocol_version is not None:
            headers["X-Protocol-Version"] = link.protocol_version
        try:
            response = await self._http.post(
                self._config.server_url,
                content=dumps(message).encode(),
                headers=headers,
                timeout=POST_TIMEOUT,
            )
        except httpx2.HTTPError as exc:
            self._metrics.backend_errors.labels(kind="webhook_send").inc()
            raise BackendUnavailable(f"webhook server unreachable: {type(exc).__name__}") from None
        if response.status_code >= 400:
            self._metrics.backend_errors.labels(kind=f"webhook_http_{response.status_code}").inc()
            detail = response.text[:200].strip()
            raise BackendUnavailable(f"webhook server answered HTTP {response.status_code}: {detail}")
        self._metrics.async_sent.labels(backend=self.kind, destination="server").inc()
        link.note_sent(message)

    def _with_callback(self, message: Message, link: AsyncLink) -> Message:
        params = dict(message.get("params") or {})
        meta = dict(params.get("_meta") or {})
        meta["webhookUrl"] = self.callback_url(link.callback_token or "")
        params["_meta"] = meta
        return {**message, "params": params}

    # --- callbacks ---------------------------------------------------------------------------------

    async def accept_callback(self, request: Request) -> Response:
        token = request.path_params["token"]
        session_id = self._session_of_token.get(token)
        if session_id is None:
            self._metrics.async_unknown_replies.labels(backend=self.kind).inc()
            self._metrics.dropped_messages.labels(reason="unknown_session").inc()
            return JSONResponse({"status": "error", "error": "unknown callback"}, status_code=404)
        claimed = request.headers.get("x-session-id")
        if claimed is not None and claimed != session_id:
            logger.warning("webhook callback with a session id that does not match its path; refused")
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
        self._metrics.async_received.labels(backend=self.kind, source="callback").inc()
        self._router.route(token, message)
        return JSONResponse({"status": "success"})

    # --- readiness ---------------------------------------------------------------------------------

    async def check_ready(self) -> str | None:
        try:
            response = await self._http.get(self._config.server_url, headers=self._base_headers())
        except httpx2.HTTPError as exc:
            return f"webhook server {self._config.server_url} unreachable: {type(exc).__name__}"
        if response.status_code >= 500:
            return f"webhook server {self._config.server_url} answered HTTP {response.status_code}"
        return None
