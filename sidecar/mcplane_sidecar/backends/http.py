"""Remote Streamable HTTP backend (2025 era sessions, plus the 2026-07-28 per-request relay).

Each client session gets its own backend session. A message keeps its stream: what the backend says on
the SSE stream of a POST is tagged with that request, so the front relays it on the client's stream of
the same request, and unsolicited messages arrive on the GET stream only while the client holds one.
If the backend forgets the session (404 after a restart), the link replays the client's `initialize`
and retries, so the client never notices.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing, asynccontextmanager
from typing import Final

import aiohttp
import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.routing import Route

from mcplane_sidecar.backends.base import BackendMessage, LinkOptions
from mcplane_sidecar.backends.callbacks import CallbackHost, with_webhook_url
from mcplane_sidecar.backends.event_stream import ServerSentEvent, read_events
from mcplane_sidecar.backends.upstream import UPSTREAM_ERRORS, Upstream, describe
from mcplane_sidecar.errors import (
    BACKEND_SESSION_LOST,
    BACKEND_UNAVAILABLE,
    BackendUnavailable,
    ProxyError,
    SessionLost,
)
from mcplane_sidecar.jsonrpc import (
    MalformedMessage,
    Message,
    RequestId,
    dumps,
    error_response,
    is_request,
    is_response,
    method_of,
    parse_message,
    request_id,
)
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

MCP_SESSION_ID: Final = "mcp-session-id"
MCP_PROTOCOL_VERSION: Final = "mcp-protocol-version"
LAST_EVENT_ID: Final = "last-event-id"
ACCEPT_BOTH: Final = "application/json, text/event-stream"
# Ids of the link's own replayed initialize; a client cannot collide with the prefix in practice, and the
# response is swallowed before routing anyway.
REINIT_ID_PREFIX: Final = "mcplane-reinit-"
# A backend may close a POST stream early and expect the client to resume it (SSE polling).
MAX_RESUMPTIONS: Final = 16
MAX_RETRY_DELAY: Final = 5.0
DEFAULT_RETRY_DELAY: Final = 0.5
MAX_ERROR_BODY: Final = 64 * 1024
# One SSE event carries one JSON-RPC message; tool results with images or files run to megabytes.
MAX_SSE_EVENT_BYTES: Final = 64 * 1024 * 1024
# How long a request's stream may stay open after its answer before the link stops reading it.
STREAM_END_GRACE: Final = 1.0
MODERN_VERSION: Final = "2026-07-28"
DISCOVER_PROBE: Final = {
    "jsonrpc": "2.0",
    "id": "mcplane-discover",
    "method": "server/discover",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    },
}
DISCOVER_HEADERS: Final = {
    "accept": ACCEPT_BOTH,
    "content-type": "application/json",
    "mcp-protocol-version": MODERN_VERSION,
    "mcp-method": "server/discover",
}


def _sse_events(response: aiohttp.ClientResponse) -> AsyncGenerator[ServerSentEvent]:
    return read_events(response, max_event_size=MAX_SSE_EVENT_BYTES)


class HttpBackend:
    """Remote Streamable HTTP server; every link shares one connection pool, open while `running()`."""

    kind = "http"

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        metrics: Metrics,
        connect_timeout: float,
        callbacks: CallbackHost | None = None,
    ) -> None:
        self.url = url
        self.headers = dict(headers)
        self.metrics = metrics
        # asyncmcp's StreamableHTTP+Webhook: the answers to some tools come to this callback host instead.
        self.callbacks = callbacks
        self.upstream = Upstream(url, connect_timeout=connect_timeout)
        self._modern: bool | None = None

    async def speaks_modern(self) -> bool:
        """Whether the backend serves 2026-07-28 requests itself (asked once with `server/discover`)."""
        if self._modern is None:
            try:
                async with await self.upstream.request(
                    "POST", {**self.headers, **DISCOVER_HEADERS}, dumps(DISCOVER_PROBE).encode()
                ) as response:
                    status, text = response.status, (await response.read()).decode("utf-8", "replace")
            except UPSTREAM_ERRORS as exc:
                raise BackendUnavailable(f"backend {self.url} unreachable: {describe(exc)}") from None
            if status >= 500:
                raise BackendUnavailable(f"backend {self.url} answered HTTP {status}")
            self._modern = status == 200 and MODERN_VERSION in text
            logger.info("backend %s %s 2026-07-28", self.url, "speaks" if self._modern else "does not speak")
        return self._modern

    def open_link(self, options: LinkOptions) -> AbstractAsyncContextManager[HttpLink]:
        return self._open(options)

    @asynccontextmanager
    async def _open(self, options: LinkOptions) -> AsyncIterator[HttpLink]:
        send, receive = anyio.create_memory_object_stream[BackendMessage](math.inf)
        async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
            link = HttpLink(self, options, tg, send, receive)
            if self.callbacks is not None:
                token = stack.enter_context(self.callbacks.registered(link.deliver_callback, link.session_id))
                link.webhook_url = self.callbacks.url_for(token)
            try:
                yield link
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await link.terminate()
                    send.close()

    def running(self) -> AbstractAsyncContextManager[None]:
        return self.upstream.running()

    def routes(self) -> list[Route]:
        return self.callbacks.routes() if self.callbacks is not None else []

    async def check_ready(self) -> str | None:
        # Any HTTP answer means the server is up; a session is not opened just to probe.
        try:
            response = await self.upstream.request("GET", {**self.headers, "accept": "text/event-stream"})
            response.close()
        except UPSTREAM_ERRORS as exc:
            return f"backend {self.url} unreachable: {describe(exc)}"
        if response.status >= 500:
            return f"backend {self.url} answered HTTP {response.status}"
        return None

    async def aclose(self) -> None:
        return None


class HttpLink:
    def __init__(
        self,
        backend: HttpBackend,
        options: LinkOptions,
        tg: TaskGroup,
        incoming_send: MemoryObjectSendStream[BackendMessage],
        incoming: MemoryObjectReceiveStream[BackendMessage],
    ) -> None:
        self._backend = backend
        self._options = options
        self._tg = tg
        self._incoming_send = incoming_send
        self._incoming = incoming
        self._session_id: str | None = None
        self._protocol_version: str | None = None
        self._initialize: Message | None = None
        # Set in StreamableHTTP+Webhook mode: sent as `_meta.webhookUrl`, and a request whose stream ends
        # without an answer is then not failed: the answer is on its way to the callback.
        self.webhook_url: str | None = None
        # Bumped by every successful (re-)initialize, so concurrent 404s re-initialize only once.
        self._generation = 0
        self._reinit_lock = anyio.Lock()

    @property
    def incoming(self) -> MemoryObjectReceiveStream[BackendMessage]:
        return self._incoming

    def session_id(self) -> str | None:
        return self._session_id

    def deliver_callback(self, message: Message) -> None:
        """A message the server POSTed to our callback: an answer goes to the stream of its request."""
        self._deliver(message, request_id(message) if is_response(message) else None)

    async def send(self, message: Message) -> None:
        if method_of(message) == "initialize" and self.webhook_url is not None:
            message = with_webhook_url(message, self.webhook_url)
        if method_of(message) == "initialize":
            # Inline: nothing else may go out before the session id is known.
            self._initialize = message
            await self._exchange(message)
        elif is_request(message):
            self._tg.start_soon(self._exchange, message)
        else:
            # Notifications and responses keep their order relative to what follows them.
            await self._exchange(message)

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[None]:
        scope = anyio.CancelScope()  # entered by the listening task; cancelling it first is fine too
        self._tg.start_soon(self._listen_loop, scope)
        try:
            yield
        finally:
            scope.cancel()

    async def terminate(self) -> None:
        if self._session_id is None:
            return
        try:
            with anyio.fail_after(5):
                response = await self._backend.upstream.request("DELETE", self._headers())
                response.close()
        except UPSTREAM_ERRORS as exc:  # a TimeoutError also when fail_after expires
            logger.info("backend DELETE failed: %s", describe(exc))

    # --- internals -------------------------------------------------------------------------------

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {**self._backend.headers, **self._options.forwarded_headers}
        if self._session_id is not None:
            headers[MCP_SESSION_ID] = self._session_id
        if self._protocol_version is not None:
            headers[MCP_PROTOCOL_VERSION] = self._protocol_version
        if extra:
            headers.update(extra)
        return headers

    def _deliver(self, message: Message, related_id: RequestId | None) -> None:
        try:
            self._incoming_send.send_nowait(BackendMessage(message, related_id))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            logger.debug("link closed; dropped a backend message")

    def _fail(self, rid: RequestId | None, code: int, text: str, kind: str) -> None:
        self._backend.metrics.backend_errors.labels(kind=kind).inc()
        logger.warning(
            "backend error (%s): %s", kind, text, extra={"session_id": self._options.session_label}
        )
        if rid is not None:
            self._deliver(error_response(rid, code, text), rid)

    async def _post(self, message: Message) -> aiohttp.ClientResponse:
        return await self._backend.upstream.request(
            "POST",
            self._headers({"accept": ACCEPT_BOTH, "content-type": "application/json"}),
            dumps(message).encode(),
        )

    async def _exchange(self, message: Message, *, may_reinitialize: bool = True) -> None:
        rid = request_id(message) if is_request(message) else None
        generation = self._generation
        try:
            response = await self._post(message)
        except UPSTREAM_ERRORS as exc:
            self._fail(rid, BACKEND_UNAVAILABLE, f"backend unreachable: {describe(exc)}", "connect")
            return
        try:
            lost = (
                response.status == 404
                and self._session_id is not None
                and method_of(message) != "initialize"
                and may_reinitialize
            )
            if not lost:
                await self._consume(response, message, rid)
                return
        except UPSTREAM_ERRORS as exc:
            self._fail(rid, BACKEND_UNAVAILABLE, f"backend stream broke: {describe(exc)}", "stream")
            return
        except Exception:  # the link's promise (every request settled) must hold even for our own bugs
            logger.exception("unexpected failure relaying to the backend")
            self._fail(rid, BACKEND_UNAVAILABLE, "proxy failed relaying to the backend", "internal")
            return
        finally:
            response.close()  # a no-op once the body was read to its end: the connection is back in the pool
        try:
            await self._reinitialize(generation)
        except ProxyError as exc:
            self._fail(rid, BACKEND_SESSION_LOST, exc.message, "session_lost")
            return
        await self._exchange(message, may_reinitialize=False)

    async def _consume(
        self, response: aiohttp.ClientResponse, message: Message, rid: RequestId | None
    ) -> None:
        status = response.status
        if status >= 400:
            await self._relay_http_error(response, rid, message)
            return
        if rid is None:
            return  # notification or response accepted (202)
        if method_of(message) == "initialize":
            self._session_id = response.headers.get(MCP_SESSION_ID)
        content_type = response.content_type
        if content_type == "text/event-stream":
            await self._relay_event_stream(response, rid)
        elif content_type == "application/json":
            body = await response.read()
            try:
                reply = parse_message(body)
            except MalformedMessage as exc:
                self._fail(rid, BACKEND_UNAVAILABLE, f"backend sent invalid JSON-RPC: {exc}", "protocol")
                return
            self._note_initialized(reply, message)
            self._deliver(reply, rid)
        elif self.webhook_url is None:
            self._fail(
                rid, BACKEND_UNAVAILABLE, f"backend answered HTTP {status} with no response", "protocol"
            )

    def _note_initialized(self, reply: Message, message: Message) -> None:
        if method_of(message) == "initialize" and isinstance(reply.get("result"), dict):
            version = reply["result"].get("protocolVersion")
            self._protocol_version = version if isinstance(version, str) else None

    async def _relay_http_error(
        self, response: aiohttp.ClientResponse, rid: RequestId | None, message: Message
    ) -> None:
        body = bytearray()
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) >= MAX_ERROR_BODY:
                break  # enough to show; the rest is not read
        reply: Message | None = None
        try:
            reply = parse_message(bytes(body[:MAX_ERROR_BODY]))
        except MalformedMessage:
            reply = None
        if rid is not None and reply is not None and "error" in reply:
            # The backend's own JSON-RPC error is the most useful answer; it must carry the request's id.
            self._backend.metrics.backend_errors.labels(kind=f"http_{response.status}").inc()
            self._deliver({**reply, "id": rid}, rid)
            return
        detail = body[:200].decode("utf-8", "replace").strip()
        self._fail(
            rid,
            BACKEND_UNAVAILABLE,
            f"backend answered HTTP {response.status} to {method_of(message) or 'a response'}"
            + (f": {detail}" if detail else ""),
            f"http_{response.status}",
        )

    async def _relay_event_stream(self, response: aiohttp.ClientResponse, rid: RequestId) -> None:
        last_event_id: str | None = None
        retry_delay = DEFAULT_RETRY_DELAY
        current = response
        for attempt in range(MAX_RESUMPTIONS + 1):
            async with aclosing(_sse_events(current)) as events:
                async for event in events:
                    if event.id:
                        last_event_id = event.id
                    if event.retry is not None:
                        retry_delay = min(event.retry / 1000, MAX_RETRY_DELAY)
                    if not event.data:
                        continue  # priming event
                    msg = self._parse_event(event.data)
                    if msg is None:
                        continue
                    self._deliver(msg, rid)
                    if is_response(msg) and msg.get("id") == rid:
                        await self._finish_stream(events)
                        if current is not response:
                            current.close()
                        return
            if current is not response:
                current.close()
            if last_event_id is None or attempt == MAX_RESUMPTIONS:
                break
            await anyio.sleep(retry_delay)  # the delay the server asked for before resuming
            current = await self._resume(last_event_id)
            if current.status != 200:
                current.close()
                break
        if self.webhook_url is not None:
            return  # the answer goes to the callback; the proxy's deadline covers one that never comes
        self._fail(rid, BACKEND_UNAVAILABLE, "backend closed the stream before answering", "stream")

    def _parse_event(self, data: str) -> Message | None:
        try:
            return parse_message(data.encode())
        except MalformedMessage as exc:
            self._fail(None, 0, f"backend sent an invalid SSE message: {exc}", "protocol")
            return None

    async def _finish_stream(self, events: AsyncIterator[ServerSentEvent]) -> None:
        """Read a request's stream to its end after the answer, so its connection goes back to the pool.

        Closing a response mid-body closes the connection, and the next request then pays a TCP connect.
        The server ends the stream right after the answer; one that keeps it open is cut after a grace.
        Anything it still says there is passed on as unsolicited rather than lost.
        """
        with anyio.move_on_after(STREAM_END_GRACE):
            async for event in events:
                if event.data and (msg := self._parse_event(event.data)) is not None:
                    self._deliver(msg, None)

    async def _resume(self, last_event_id: str) -> aiohttp.ClientResponse:
        return await self._backend.upstream.request(
            "GET", self._headers({"accept": "text/event-stream", LAST_EVENT_ID: last_event_id})
        )

    async def _reinitialize(self, generation: int) -> None:
        async with self._reinit_lock:
            if self._generation != generation:
                return  # another request already re-initialized
            if self._initialize is None:
                raise SessionLost("backend lost the session and no initialize is known to replay")
            replay = {**self._initialize, "id": f"{REINIT_ID_PREFIX}{generation + 1}"}
            self._session_id = None
            self._protocol_version = None
            logger.info(
                "backend lost the session; re-initializing", extra={"session_id": self._options.session_label}
            )
            try:
                async with await self._post(replay) as response:
                    if response.status >= 400:
                        raise SessionLost(f"backend refused re-initialization: HTTP {response.status}")
                    self._session_id = response.headers.get(MCP_SESSION_ID)
                    reply = await self._first_reply(response)
                if reply is None or "result" not in reply:
                    raise SessionLost("backend did not accept the replayed initialize")
                self._note_initialized(reply, replay)
                note = await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
                note.close()
            except UPSTREAM_ERRORS as exc:
                raise SessionLost(f"backend re-initialization failed: {describe(exc)}") from None
            self._generation += 1
            self._backend.metrics.backend_restarts.labels(reason="session_lost").inc()

    async def _first_reply(self, response: aiohttp.ClientResponse) -> Message | None:
        if response.content_type == "application/json":
            try:
                return parse_message(await response.read())
            except MalformedMessage:
                return None
        async for event in _sse_events(response):
            if event.data:
                try:
                    msg = parse_message(event.data.encode())
                except MalformedMessage:
                    continue
                if is_response(msg):
                    return msg
        return None

    async def _listen_loop(self, scope: anyio.CancelScope) -> None:
        last_event_id: str | None = None
        delay = DEFAULT_RETRY_DELAY
        with scope:
            while True:
                extra = {"accept": "text/event-stream"}
                if last_event_id:
                    extra[LAST_EVENT_ID] = last_event_id
                try:
                    async with await self._backend.upstream.request("GET", self._headers(extra)) as response:
                        if response.status == 405:
                            return  # the backend offers no GET stream; nothing unsolicited will come
                        if response.status == 200:
                            delay = DEFAULT_RETRY_DELAY
                            async with aclosing(_sse_events(response)) as events:
                                async for event in events:
                                    if event.id:
                                        last_event_id = event.id
                                    if event.data:
                                        self._deliver_unsolicited(event.data)
                except UPSTREAM_ERRORS as exc:
                    self._backend.metrics.backend_errors.labels(kind="listen").inc()
                    logger.info("backend GET stream failed: %s", describe(exc))
                await anyio.sleep(delay)  # bounded backoff before reopening the stream
                delay = min(delay * 2, MAX_RETRY_DELAY)

    def _deliver_unsolicited(self, data: str) -> None:
        try:
            self._deliver(parse_message(data.encode()), None)
        except MalformedMessage as exc:
            logger.warning("backend sent an invalid SSE message on the GET stream: %s", exc)
