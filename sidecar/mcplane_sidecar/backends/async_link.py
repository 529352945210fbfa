"""What the asynchronous backends (SQS, SNS+SQS, webhook) share: a link per backend session whose id the
proxy chooses, and a router from one reply channel to those links.

asyncmcp servers accept a client-supplied session id on `initialize`, so the proxy picks every backend
session id itself and one reply queue (or callback route) per sidecar serves every session: replies are
demultiplexed by session id, never by arrival order. A reply for a session this sidecar does not hold is
dropped and counted, so nothing reaches the wrong client.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mcplane_sidecar.backends.base import BackendMessage, LinkOptions
from mcplane_sidecar.errors import ProxyError
from mcplane_sidecar.jsonrpc import (
    Message,
    RequestId,
    error_response,
    is_request,
    is_response,
    method_of,
    request_id,
    valid_id,
)
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

# uuid4-like hex: within asyncmcp's session id pattern (visible ASCII) and unguessable.
SESSION_ID_BYTES: Final = 16

Transmit = Callable[["AsyncLink", Message], Awaitable[None]]


class AsyncLink:
    """One backend session on an asynchronous transport. `transmit` puts a message on the wire."""

    def __init__(
        self, session_id: str, options: LinkOptions, transmit: Transmit, metrics: Metrics, kind: str
    ) -> None:
        self.session_id = session_id
        self._metrics = metrics
        self._kind = kind
        # When each request went out, for the reply-latency histogram.
        self._sent_at: dict[RequestId, float] = {}
        self.options = options
        # The protocol version the backend agreed to, for transports that send it back (webhook).
        self.protocol_version: str | None = None
        self.initialized = False
        # The webhook backend's per-session callback secret; unused by queue backends.
        self.callback_token: str | None = None
        self._transmit = transmit
        send, receive = anyio.create_memory_object_stream[BackendMessage](math.inf)
        self._incoming_send: MemoryObjectSendStream[BackendMessage] = send
        self._incoming: MemoryObjectReceiveStream[BackendMessage] = receive

    @property
    def incoming(self) -> MemoryObjectReceiveStream[BackendMessage]:
        return self._incoming

    def listen(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()  # everything arrives on the one reply channel

    async def send(self, message: Message) -> None:
        try:
            await self._transmit(self, message)
        except ProxyError as exc:
            logger.warning(
                "backend send failed: %s", exc.message, extra={"session_id": self.options.session_label}
            )
            if is_request(message):
                self.deliver(error_response(request_id(message), exc.code, exc.message, exc.data))
            return
        if method_of(message) == "notifications/initialized":
            self.initialized = True

    def note_sent(self, message: Message) -> None:
        rid = request_id(message)
        if is_request(message) and rid is not None:
            self._sent_at[rid] = time.monotonic()

    def deliver(self, message: Message) -> None:
        if is_response(message):
            sent = self._sent_at.pop(message["id"], None) if valid_id(message.get("id")) else None
            if sent is not None:
                self._metrics.async_reply_latency.labels(backend=self._kind).observe(time.monotonic() - sent)
        result = message.get("result")
        if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
            self.protocol_version = result["protocolVersion"]
        try:
            self._incoming_send.send_nowait(BackendMessage(message))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            logger.debug("reply for a closed link dropped")

    def close(self) -> None:
        self._incoming_send.close()


class ReplyRouter:
    """Session id (or callback token) → link; the demultiplexer of a shared reply channel."""

    def __init__(self, metrics: Metrics, backend_kind: str) -> None:
        self._links: dict[str, AsyncLink] = {}
        self._metrics = metrics
        self._kind = backend_kind

    def __len__(self) -> int:
        return len(self._links)

    @asynccontextmanager
    async def registered(self, key: str, link: AsyncLink) -> AsyncIterator[None]:
        self._links[key] = link
        try:
            yield
        finally:
            self._links.pop(key, None)
            link.close()

    def route(self, key: str | None, message: Message) -> bool:
        """Hand a reply to its link; False (dropped, counted) when no link here holds that key."""
        link = self._links.get(key) if key is not None else None
        if link is None:
            self._metrics.dropped_messages.labels(reason="unknown_session").inc()
            self._metrics.async_unknown_replies.labels(backend=self._kind).inc()
            logger.warning("dropped a reply for a session this sidecar does not hold")
            return False
        link.deliver(message)
        return True


def new_session_id() -> str:
    return secrets.token_hex(SESSION_ID_BYTES)
