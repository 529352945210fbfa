"""Webhook backend, on the wire exactly as asyncmcp 0.2.1's webhook client.

Messages are POSTed to the server's request endpoint with asyncmcp's headers; the server POSTs every
reply to the `webhookUrl` given in `initialize` `_meta`. The sidecar hosts that callback on its own
server, one unguessable path segment per session: the path alone tells which session a reply belongs to
and authenticates the caller, and the server's `X-Session-ID` header must agree with it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Final

import httpx2
from starlette.routing import Route

from mcplane_sidecar.backends.async_link import AsyncLink, new_session_id
from mcplane_sidecar.backends.base import LinkOptions
from mcplane_sidecar.backends.callbacks import CallbackHost, with_webhook_url
from mcplane_sidecar.config import WebhookBackendConfig
from mcplane_sidecar.errors import BackendUnavailable
from mcplane_sidecar.jsonrpc import Message, dumps, is_request, method_of
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

USER_AGENT: Final = "asyncmcp-webhook/1.0"
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
        assert config.server_url is not None
        self._server_url = config.server_url
        self._client_id = client_id
        self._http = http
        self._headers = dict(headers)
        self._metrics = metrics
        self._callbacks = CallbackHost(
            config.public_base_url,
            config.callback_path,
            session_header="x-session-id",
            metrics=metrics,
            kind=self.kind,
        )

    def running(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    async def aclose(self) -> None:
        return None

    def routes(self) -> list[Route]:
        """The callback route the sidecar's app must serve."""
        return self._callbacks.routes()

    # --- sessions ----------------------------------------------------------------------------------

    def open_link(self, options: LinkOptions) -> AbstractAsyncContextManager[AsyncLink]:
        return self._open(options)

    @asynccontextmanager
    async def _open(self, options: LinkOptions) -> AsyncIterator[AsyncLink]:
        link = AsyncLink(new_session_id(), options, self._transmit, self._metrics, self.kind)
        try:
            with self._callbacks.registered(link.deliver, lambda: link.session_id) as token:
                link.callback_token = token
                yield link
        finally:
            link.close()
            await self._terminate(link)

    async def _terminate(self, link: AsyncLink) -> None:
        headers = {**self._base_headers(), "X-Session-ID": link.session_id}
        try:
            response = await self._http.delete(self._server_url, headers=headers, timeout=DELETE_TIMEOUT)
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
            message = with_webhook_url(message, self._callbacks.url_for(link.callback_token or ""))
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
                self._server_url, content=dumps(message).encode(), headers=headers, timeout=POST_TIMEOUT
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

    # --- readiness ---------------------------------------------------------------------------------

    async def check_ready(self) -> str | None:
        try:
            response = await self._http.get(self._server_url, headers=self._base_headers())
        except httpx2.HTTPError as exc:
            return f"webhook server {self._server_url} unreachable: {type(exc).__name__}"
        if response.status_code >= 500:
            return f"webhook server {self._server_url} answered HTTP {response.status_code}"
        return None
