"""Webhook backend, on the wire exactly as asyncmcp 0.2.1's webhook client.

Messages are POSTed to the server's request endpoint with asyncmcp's headers; the server POSTs every
reply to the `webhookUrl` given in `initialize` `_meta`. The sidecar hosts that callback on its own
server, one unguessable path segment per session: the path alone tells which session a reply belongs to
and authenticates the caller, and the server's `X-Session-ID` header must agree with it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

import aiohttp
from starlette.routing import Route

from mcplane_sidecar.backends.async_link import AsyncLink, new_session_id
from mcplane_sidecar.backends.base import LinkOptions
from mcplane_sidecar.backends.callbacks import CallbackHost, with_webhook_url
from mcplane_sidecar.backends.upstream import UPSTREAM_ERRORS, Upstream, describe
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
        headers: dict[str, str],
        metrics: Metrics,
        connect_timeout: float,
    ) -> None:
        assert config.server_url is not None
        self._server_url = config.server_url
        self._client_id = client_id
        self._upstream = Upstream(config.server_url, connect_timeout=connect_timeout)
        self._post_timeouts = aiohttp.ClientTimeout(total=POST_TIMEOUT, sock_connect=connect_timeout)
        self._delete_timeouts = aiohttp.ClientTimeout(total=DELETE_TIMEOUT, sock_connect=connect_timeout)
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
        return self._upstream.running()

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
            async with await self._upstream.request(
                "DELETE", headers, socket_timeouts=self._delete_timeouts
            ) as response:
                if response.status not in (200, 404):
                    logger.info("webhook server answered HTTP %d to the session's DELETE", response.status)
        except UPSTREAM_ERRORS as exc:
            logger.info("webhook session DELETE failed: %s", describe(exc))

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
            async with await self._upstream.request(
                "POST", headers, dumps(message).encode(), socket_timeouts=self._post_timeouts
            ) as response:
                status, body = response.status, await response.read()
        except UPSTREAM_ERRORS as exc:
            self._metrics.backend_errors.labels(kind="webhook_send").inc()
            raise BackendUnavailable(f"webhook server unreachable: {describe(exc)}") from None
        if status >= 400:
            self._metrics.backend_errors.labels(kind=f"webhook_http_{status}").inc()
            detail = body[:200].decode("utf-8", "replace").strip()
            raise BackendUnavailable(f"webhook server answered HTTP {status}: {detail}")
        self._metrics.async_sent.labels(backend=self.kind, destination="server").inc()
        link.note_sent(message)

    # --- readiness ---------------------------------------------------------------------------------

    async def check_ready(self) -> str | None:
        try:
            async with await self._upstream.request("GET", self._base_headers()) as response:
                status = response.status
        except UPSTREAM_ERRORS as exc:
            return f"webhook server {self._server_url} unreachable: {describe(exc)}"
        if status >= 500:
            return f"webhook server {self._server_url} answered HTTP {status}"
        return None
