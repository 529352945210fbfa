"""Legacy HTTP+SSE backends (the 2024-11-05 transport).

A link is one GET event stream: its first `endpoint` event names the URL the client POSTs its messages to,
and every later `message` event carries one JSON-RPC message from the server. Messages travel as raw JSON
(never re-modelled) and are POSTed one at a time, in the order the client sent them.

The stream is the session: when it drops, the server has forgotten us. The link then answers every request
still waiting with an error, reconnects with backoff and replays the client's `initialize` on the new
session, so that later requests work without the client noticing more than the lost ones.
"""

from __future__ import annotations

import json
import logging
import math
import random
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Final, cast

import anyio
import httpx2
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp_types.jsonrpc import INVALID_REQUEST

from mcplane_sidecar.backends.base import BackendLink, BackendMessage, LinkOptions
from mcplane_sidecar.errors import (
    BackendClosed,
    BackendProtocolError,
    BackendUnavailable,
    ProxyError,
    SessionLost,
)
from mcplane_sidecar.jsonrpc import (
    JSONRPC_VERSION,
    MalformedMessage,
    Message,
    RequestId,
    dumps,
    error_response,
    is_request,
    is_response,
    method_of,
    params_of,
    parse_message,
    request_id,
    valid_id,
)
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

# Backend messages waiting for the core; when full, the stream reader stops reading (backpressure).
INCOMING_BUFFER: Final = 64
# Client messages waiting to be POSTed; when full, send() waits.
OUTGOING_BUFFER: Final = 64
# A legacy server answers a POST with 202 as soon as it has the body (the answer comes on the stream), so a
# POST slower than this is a stuck backend, whatever the tool being called.
POST_TIMEOUT: Final = 30.0
# Reconnect delays double from the first up to the cap; jitter keeps the many sessions of one backend from
# reconnecting in lockstep after it restarts.
RECONNECT_FIRST_DELAY: Final = 0.2
RECONNECT_MAX_DELAY: Final = 10.0
# Same-origin redirects followed (a `/sse` -> `/sse/` normalisation), as the SDK client does.
MAX_REDIRECTS: Final = 5
# Ids of the link's own replayed `initialize`, so that its answer is not passed on to the client.
REINIT_ID_PREFIX: Final = "mcplane-sse-reinit-"
# Largest single event read. httpx2's default (1 MiB) is below a tool result carrying a screenshot, and an
# event over the limit breaks the whole stream (the session with it), so the bound only guards memory.
MAX_EVENT_SIZE: Final = 16 * 1024 * 1024
SSE_HEADERS: Final = {"Accept": "text/event-stream", "Cache-Control": "no-store"}


class SseBackend:
    """A remote MCP server speaking legacy HTTP+SSE. The HTTP client belongs to the caller."""

    kind = "sse"

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        http: httpx2.AsyncClient,
        metrics: Metrics,
        connect_timeout: float,
    ) -> None:
        try:
            parsed = httpx2.URL(url)
        except httpx2.InvalidURL as exc:
            raise ValueError(f"SSE backend URL {url!r} is not a URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"SSE backend URL must be an absolute http(s) URL, got {url!r}")
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout}")
        self.url = parsed
        # What logs and error messages show: no credentials, no query (it may carry a key).
        self.shown = str(parsed.copy_with(userinfo=b"", query=None, fragment=None))
        self.headers = headers
        self.connect_timeout = connect_timeout
        self.metrics = metrics
        self._http = http

    @asynccontextmanager
    async def open_link(self, options: LinkOptions) -> AsyncIterator[BackendLink]:
        """Open the event stream and wait for the endpoint; raises `BackendUnavailable` if that fails."""
        link = _SseLink(self, options)
        async with link.run():
            yield link

    def running(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    async def check_ready(self) -> str | None:
        """Open a stream, wait for its `endpoint` event, close it again."""
        response: httpx2.Response | None = None
        try:
            with anyio.fail_after(self.connect_timeout):
                response = await self.open_stream(httpx2.Headers(self.headers))
                async with aclosing(_events(response)) as events:
                    async for sse in events:
                        if sse.event == "endpoint":
                            self.resolve_endpoint(sse.data)
                            return None
        except TimeoutError:
            return self.no_endpoint_in_time()
        except httpx2.HTTPError as exc:
            return f"backend {self.shown} unreachable: {describe(exc)}"
        except ProxyError as exc:
            return exc.message
        finally:
            if response is not None:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        return f"backend {self.shown} closed its event stream without sending an endpoint"

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is the caller's, links close their own streams."""

    async def open_stream(self, headers: httpx2.Headers) -> httpx2.Response:
        """GET the event stream: a streaming 200 `text/event-stream` response, else a `ProxyError`."""
        request = self._http.build_request(
            "GET",
            self.url,
            headers=_with(headers, SSE_HEADERS),
            # No read timeout: a quiet stream is an idle session, not a dead one, and dropping it would
            # make the backend forget the session.
            timeout=httpx2.Timeout(self.connect_timeout, read=None),
        )
        try:
            response = await self.send_within_origin(request, stream=True)
        except httpx2.HTTPError as exc:
            raise BackendUnavailable(f"backend {self.shown} unreachable: {describe(exc)}") from None
        content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if response.status_code == 200 and content_type == "text/event-stream":
            return response
        await response.aclose()
        if response.status_code != 200:
            raise BackendProtocolError(f"backend {self.shown} answered HTTP {_status(response)}")
        raise BackendProtocolError(
            f"backend {self.shown} did not answer with an event stream (content type {content_type!r}); "
            "is it a Streamable HTTP server?"
        )

    async def post(
        self, endpoint: httpx2.URL, headers: httpx2.Headers, message: Message
    ) -> ProxyError | None:
        """POST one message; None once the backend accepted it, else the error to report."""
        request = self._http.build_request(
            "POST",
            endpoint,
            headers=_with(headers, {"Content-Type": "application/json"}),
            content=dumps(message).encode(),
            timeout=httpx2.Timeout(POST_TIMEOUT, connect=self.connect_timeout),
        )
        try:
            response = await self.send_within_origin(request, stream=False)
        except httpx2.HTTPError as exc:
            return BackendUnavailable(f"backend {self.shown} unreachable: {describe(exc)}")
        if not response.is_success:
            return BackendProtocolError(
                f"backend {self.shown} answered HTTP {_status(response)} to a message POST"
            )
        return None

    async def send_within_origin(self, request: httpx2.Request, *, stream: bool) -> httpx2.Response:
        """Send, following redirects that keep the method and stay on the origin; others come back as is."""
        for _ in range(MAX_REDIRECTS):
            response = await self._http.send(request, stream=stream, follow_redirects=False)
            following = response.next_request
            if (
                following is None
                or following.method != request.method
                or not _same_origin(request.url, following.url)
            ):
                return response
            await response.aclose()
            request = following
        return await self._http.send(request, stream=stream, follow_redirects=False)

    def resolve_endpoint(self, data: str) -> httpx2.URL:
        """The POST URL an `endpoint` event names; one on another origin is refused, as the SDK does."""
        try:
            endpoint = self.url.join(data.strip())
        except httpx2.InvalidURL:
            raise BackendProtocolError(f"backend {self.shown} sent an invalid endpoint {data!r}") from None
        if (endpoint.scheme, endpoint.host, endpoint.port) != (self.url.scheme, self.url.host, self.url.port):
            raise BackendProtocolError(
                f"backend {self.shown} named a message endpoint on another origin ({data.strip()}); refused"
            )
        return endpoint

    def no_endpoint_in_time(self) -> str:
        return f"backend {self.shown} sent no endpoint event within {self.connect_timeout:g} s"


@dataclass(slots=True)
class _Stream:
    """One open event stream, as the reader task reports it to the supervisor."""

    endpoint: httpx2.URL
    # Why the stream ended; set by the reader when it does.
    ended: ProxyError | None = None


@dataclass(slots=True)
class _Reinit:
    """A replayed `initialize` waiting for its answer."""

    id: str
    done: anyio.Event = field(default_factory=anyio.Event)
    answer: Message | None = None


class _SseLink:
    """One backend session: the event stream, a supervisor that re-opens it, and an ordered POST writer."""

    def __init__(self, backend: SseBackend, options: LinkOptions) -> None:
        self._backend = backend
        self._label = options.session_label or "-"
        # Operator-configured headers win over forwarded client headers (case-insensitively).
        self._headers = httpx2.Headers(options.forwarded_headers)
        self._headers.update(backend.headers)
        self._in_send, self._incoming = anyio.create_memory_object_stream[BackendMessage](INCOMING_BUFFER)
        self._out_send, self._out_recv = anyio.create_memory_object_stream[Message](OUTGOING_BUFFER)
        # The live session's POST URL; None while the stream is down or being re-initialized.
        self._endpoint: httpx2.URL | None = None
        self._up = anyio.Event()
        # Why the backend is down, and whether the writer already waited in vain for it to come back (then
        # it fails messages at once instead of waiting again for each).
        self._failure: ProxyError = BackendUnavailable(f"backend {backend.shown} not connected")
        self._gave_up = False
        # Requests POSTed and not yet answered: they get an error if the stream drops.
        self._pending: set[RequestId] = set()
        # The client's handshake, replayed on a new backend session.
        self._initialize: Message | None = None
        self._initialized: Message = {"jsonrpc": JSONRPC_VERSION, "method": "notifications/initialized"}
        self._reinit: _Reinit | None = None
        self._reinit_count = 0

    @property
    def incoming(self) -> MemoryObjectReceiveStream[BackendMessage]:
        return self._incoming

    async def send(self, message: Message) -> None:
        method = method_of(message)
        if method == "initialize" and is_request(message):
            self._initialize = message
        elif method == "notifications/initialized":
            self._initialized = message
        try:
            await self._out_send.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise BackendClosed(f"link to {self._backend.shown} is closed") from None

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[None]:
        # The event stream is open for the whole life of the link; unsolicited messages already arrive.
        yield

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Hold the link's tasks while the caller uses it; an error the caller raises comes out as is."""
        failure: ProxyError | None = None
        caller_error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                failure = await tg.start(self._supervise)
                if failure is None:
                    tg.start_soon(self._write_loop)
                    try:
                        yield
                    # Re-raised below, so that it is not wrapped in the task group's ExceptionGroup.
                    except Exception as exc:
                        caller_error = exc
                    finally:
                        tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._out_send.aclose()
                await self._out_recv.aclose()
                await self._in_send.aclose()
                # Whoever reads `incoming` does so inside the link's context; nothing is read after it.
                await self._incoming.aclose()
        if caller_error is not None:
            raise caller_error
        if failure is not None:
            raise failure

    # The stream side.

    async def _supervise(
        self, *, task_status: TaskStatus[ProxyError | None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the event stream for the life of the link, re-opening it when it drops.

        Reports the first connection through `task_status`: None once up, else why it failed.
        """
        backend = self._backend
        first = True
        attempt = 0
        while True:
            failure: ProxyError | None = None
            async with anyio.create_task_group() as tg:
                opened: _Stream | ProxyError = await tg.start(self._read_stream)
                if isinstance(opened, ProxyError):
                    failure = opened
                else:
                    if not first:
                        failure = await self._reinitialize(opened.endpoint)
                    if failure is None:
                        self._set_up(opened.endpoint)
                        if first:
                            task_status.started(None)
                        else:
                            backend.metrics.backend_restarts.labels(reason="sse_reconnect").inc()
                            logger.info("session %s: reconnected to %s", self._label, backend.shown)
                        attempt = 0
                    else:
                        tg.cancel_scope.cancel()
            if failure is None:
                # The stream was up and has ended; the reader said why.
                assert isinstance(opened, _Stream)
                failure = opened.ended or BackendUnavailable(f"lost the event stream of {backend.shown}")
                backend.metrics.backend_errors.labels(kind="sse_stream").inc()
                logger.warning("session %s: %s; reconnecting", self._label, failure.message)
            else:
                backend.metrics.backend_errors.labels(kind="sse_connect").inc()
                if first:
                    task_status.started(failure)
                    return
                # Only the first retry of an outage warns: a backend down for long must not flood the log.
                logger.log(
                    logging.WARNING if attempt == 1 else logging.DEBUG,
                    "session %s: reconnect failed: %s",
                    self._label,
                    failure.message,
                )
            first = False
            await self._set_down(failure)
            await anyio.sleep(_backoff(attempt))
            attempt += 1

    async def _read_stream(self, *, task_status: TaskStatus[_Stream | ProxyError]) -> None:
        """Open the event stream and read it until it ends.

        Reports through `task_status` the opened stream once its endpoint is known, or why it could not be
        opened; then passes each message on and finally records on the `_Stream` why the stream ended.
        """
        backend = self._backend
        response: httpx2.Response | None = None
        stream: _Stream | None = None
        outcome: ProxyError
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + backend.connect_timeout) as connecting:
                response = await backend.open_stream(self._headers)
                async with aclosing(_events(response)) as events:
                    async for sse in events:
                        if stream is not None:
                            await self._on_event(sse)
                        elif sse.event == "endpoint":
                            stream = _Stream(backend.resolve_endpoint(sse.data))
                            connecting.deadline = math.inf
                            task_status.started(stream)
                        else:
                            logger.debug(
                                "session %s: %r event before the endpoint ignored", self._label, sse.event
                            )
            if stream is None and connecting.cancelled_caught:
                outcome = BackendUnavailable(backend.no_endpoint_in_time())
            elif stream is None:
                outcome = BackendProtocolError(
                    f"backend {backend.shown} closed its event stream without sending an endpoint"
                )
            else:
                outcome = BackendUnavailable(f"backend {backend.shown} closed the event stream")
        except httpx2.HTTPError as exc:
            if stream is None:
                outcome = BackendUnavailable(f"backend {backend.shown} unreachable: {describe(exc)}")
            else:
                logger.debug("session %s: event stream failed", self._label, exc_info=True)
                outcome = BackendUnavailable(f"lost the event stream of {backend.shown} ({describe(exc)})")
        except ProxyError as exc:
            outcome = exc
        finally:
            if response is not None:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            if self._reinit is not None:
                self._reinit.done.set()
        if stream is None:
            task_status.started(outcome)
        else:
            stream.ended = outcome

    async def _on_event(self, sse: httpx2.ServerSentEvent) -> None:
        if sse.event != "message":
            logger.debug("session %s: %r event ignored", self._label, sse.event)
            return
        if not sse.data:
            return  # a keep-alive
        try:
            messages = _decode(sse.data)
        except MalformedMessage as exc:
            self._backend.metrics.backend_errors.labels(kind="sse_malformed").inc()
            logger.warning(
                "session %s: malformed message from %s skipped: %s", self._label, self._backend.shown, exc
            )
            return
        for message in messages:
            if is_response(message):
                id_ = request_id(message)
                if self._reinit is not None and id_ == self._reinit.id:
                    self._reinit.answer = message
                    self._reinit.done.set()
                    continue
                if id_ is not None:
                    self._pending.discard(id_)
            await self._in_send.send(BackendMessage(message))

    async def _reinitialize(self, endpoint: httpx2.URL) -> ProxyError | None:
        """Replay the client's handshake on a new backend session; None when it worked."""
        if self._initialize is None:
            return None  # the client never initialized: nothing to restore
        backend = self._backend
        self._reinit_count += 1
        reinit = self._reinit = _Reinit(f"{REINIT_ID_PREFIX}{self._reinit_count}")
        try:
            failure = await backend.post(endpoint, self._headers, {**self._initialize, "id": reinit.id})
            if failure is not None:
                return failure
            with anyio.move_on_after(backend.connect_timeout):
                await reinit.done.wait()
        finally:
            self._reinit = None
        answer = reinit.answer
        if answer is None:
            return SessionLost(f"backend {backend.shown} did not answer the replayed initialize")
        if "error" in answer:
            error = answer["error"]
            detail = error.get("message") if isinstance(error, dict) else error
            return SessionLost(f"backend {backend.shown} refused the replayed initialize: {detail}")
        return await backend.post(endpoint, self._headers, self._initialized)

    def _set_up(self, endpoint: httpx2.URL) -> None:
        self._endpoint = endpoint
        self._gave_up = False
        self._up.set()

    async def _set_down(self, failure: ProxyError) -> None:
        """Forget the endpoint and answer every request the lost session still owed."""
        self._endpoint = None
        if self._up.is_set():
            self._up = anyio.Event()
        self._failure = failure
        lost, self._pending = self._pending, set()
        for id_ in lost:
            await self._in_send.send(
                BackendMessage(
                    error_response(id_, failure.code, f"{failure.message} before the request was answered")
                )
            )

    # The POST side.

    async def _write_loop(self) -> None:
        """POST the client's messages one at a time: the order matters (initialized before the next call)."""
        async for message in self._out_recv:
            await self._deliver(message)

    async def _deliver(self, message: Message) -> None:
        endpoint = await self._wait_up()
        if endpoint is None:
            await self._fail(message, self._failure)
            return
        id_ = request_id(message) if is_request(message) else None
        if id_ is not None:
            self._pending.add(id_)
        elif method_of(message) == "notifications/cancelled":
            # The backend will not answer a cancelled request: nothing is owed if the stream drops.
            cancelled = params_of(message).get("requestId")
            if valid_id(cancelled):
                self._pending.discard(cancelled)
        failure = await self._backend.post(endpoint, self._headers, message)
        if failure is None:
            return
        self._backend.metrics.backend_errors.labels(kind="sse_post").inc()
        if id_ is not None:
            if id_ not in self._pending:
                return  # the stream dropped meanwhile, and that already answered the request
            self._pending.discard(id_)
        await self._fail(message, failure)

    async def _wait_up(self) -> httpx2.URL | None:
        """The live endpoint, waiting up to the connect timeout once while the stream is re-opened."""
        if self._endpoint is None and not self._gave_up:
            with anyio.move_on_after(self._backend.connect_timeout):
                await self._up.wait()
            self._gave_up = self._endpoint is None
        return self._endpoint

    async def _fail(self, message: Message, failure: ProxyError) -> None:
        """Answer a request with the failure; for anything else the client awaits nothing, so just log."""
        id_ = request_id(message) if is_request(message) else None
        if id_ is not None:
            await self._in_send.send(BackendMessage(error_response(id_, failure.code, failure.message)))
            return
        logger.warning(
            "session %s: %s not delivered: %s",
            self._label,
            method_of(message) or "response",
            failure.message,
        )


def _events(response: httpx2.Response) -> AsyncGenerator[httpx2.ServerSentEvent, None]:
    # EventSource.__aiter__ is an async generator; typed as one so that it can be closed deterministically.
    return cast(
        AsyncGenerator[httpx2.ServerSentEvent, None],
        httpx2.EventSource(response, max_event_size=MAX_EVENT_SIZE).__aiter__(),
    )


def _decode(data: str) -> list[Message]:
    """The messages of one `message` event: one object, or (from a 2025-03-26 server) a batch of them."""
    try:
        return [parse_message(data.encode())]
    except MalformedMessage as exc:
        if exc.code != INVALID_REQUEST or not data.lstrip().startswith("["):
            raise
    # A valid JSON array: parse_message refuses those, so each element is checked on its own.
    return [parse_message(json.dumps(item).encode()) for item in json.loads(data)]


def describe(exc: httpx2.HTTPError) -> str:
    """A short human cause for an httpx2 failure ("connection refused"), from the deepest known cause."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve host ({cause.strerror})"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx2.TimeoutException):
        return "connection timed out" if isinstance(exc, httpx2.ConnectTimeout) else "timed out"
    if isinstance(exc, httpx2.ConnectError):
        return f"cannot connect ({exc})"
    if isinstance(exc, httpx2.RemoteProtocolError):
        return "connection closed by the backend"
    if isinstance(exc, (httpx2.ReadError, httpx2.WriteError)):
        return "connection lost"
    return str(exc) or type(exc).__name__


def _with(headers: httpx2.Headers, extra: dict[str, str]) -> httpx2.Headers:
    merged = httpx2.Headers(headers)
    merged.update(extra)  # replaces case-insensitively, unlike merging dicts
    return merged


def _status(response: httpx2.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".rstrip()


def _same_origin(a: httpx2.URL, b: httpx2.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _backoff(attempt: int) -> float:
    delay = min(RECONNECT_MAX_DELAY, RECONNECT_FIRST_DELAY * 2.0**attempt)
    return delay * random.uniform(0.5, 1.0)
