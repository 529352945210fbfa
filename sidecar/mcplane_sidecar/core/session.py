"""A client session of the handshake era and its routing to one backend session.

The session is a small record plus one task that pumps the backend link. It decides which client stream
each backend message goes to, by the rule of the 2025-11-25 transport: a response goes to the stream of
its request; a message the backend sent on a request's stream (or a progress notification for it) goes
there too; anything else goes to the standing GET stream, kept until the client opens it. Each message
lands on exactly one stream.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import anyio
from anyio.abc import TaskStatus

from mcplane_sidecar.backends.base import Backend, BackendLink, BackendMessage, LinkOptions
from mcplane_sidecar.core.replay import ReplayStream
from mcplane_sidecar.errors import BACKEND_TIMEOUT, BackendUnavailable, find_proxy_error
from mcplane_sidecar.jsonrpc import (
    Message,
    RequestId,
    error_response,
    is_response,
    method_of,
    params_of,
    progress_token,
    request_id,
)
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

Era = Literal["2025", "sse", "bridge"]
STANDING_STREAM = "g"
# Closed request streams kept for resumption after their request settled.
KEPT_STREAMS = 32


@dataclass(slots=True)
class Pending:
    stream: ReplayStream
    method: str
    started: float
    deadline: float
    token: RequestId | None = None


@dataclass(slots=True)
class SessionLimits:
    request_timeout: float
    replay_buffer: int


@dataclass(eq=False)
class ProxySession:
    session_id: str
    era: Era
    principal: str | None
    limits: SessionLimits
    metrics: Metrics
    link_options: LinkOptions = field(default_factory=LinkOptions)
    last_seen: float = field(default_factory=time.monotonic)
    pending: dict[RequestId, Pending] = field(default_factory=dict)
    _progress: dict[RequestId, RequestId] = field(default_factory=dict)
    _streams: OrderedDict[str, ReplayStream] = field(default_factory=OrderedDict)
    _stream_counter: int = 0
    _link: BackendLink | None = None
    _scope: anyio.CancelScope | None = None
    listeners: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self.standing = ReplayStream(STANDING_STREAM, self.limits.replay_buffer)

    # --- lifecycle (driven by the registry) ----------------------------------------------------

    async def run(self, backend: Backend, *, task_status: TaskStatus[None]) -> None:
        """Hold the backend link open and pump it until the session is closed."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                async with backend.open_link(self.link_options) as link:
                    self._link = link
                    task_status.started()
                    async for message in link.incoming:
                        self._route(message)
            except Exception as exc:  # a link that fails must not take the registry down
                if self._link is None:
                    raise find_proxy_error(exc) or BackendUnavailable(
                        f"cannot open a backend session: {exc}"
                    ) from exc
                logger.exception("backend link failed", extra={"session_id": self.link_options.session_label})
            finally:
                self._finish()

    def close(self) -> None:
        self.closed = True
        if self._scope is not None:
            self._scope.cancel()

    def _finish(self) -> None:
        self.closed = True
        for rid, pending in self.pending.items():
            pending.stream.append(error_response(rid, -32000, "session closed before the backend answered"))
            pending.stream.close()
        self.pending.clear()
        self.standing.close()

    # --- client → backend ----------------------------------------------------------------------

    def _new_stream(self) -> ReplayStream:
        self._stream_counter += 1
        stream = ReplayStream(f"p{self._stream_counter}", self.limits.replay_buffer)
        self._streams[stream.stream_id] = stream
        while len(self._streams) > KEPT_STREAMS and next(iter(self._streams.values())).closed:
            self._streams.popitem(last=False)
        return stream

    def find_stream(self, stream_id: str) -> ReplayStream | None:
        if stream_id == STANDING_STREAM:
            return self.standing
        return self._streams.get(stream_id)

    async def request(self, message: Message) -> ReplayStream:
        """Send a client request; its response and related messages will arrive on the returned stream."""
        rid = request_id(message)
        assert rid is not None
        self.last_seen = now = time.monotonic()
        stream = self.standing if self.era == "sse" else self._new_stream()
        token = progress_token(message)
        self.pending[rid] = Pending(
            stream, method_of(message) or "", now, now + self.limits.request_timeout, token
        )
        if token is not None:
            self._progress[token] = rid
        await self._send(message)
        return stream

    async def notify(self, message: Message) -> None:
        """Forward a notification or a response to a server request."""
        self.last_seen = time.monotonic()
        if method_of(message) == "notifications/cancelled":
            cancelled = params_of(message).get("requestId")
            if isinstance(cancelled, int | str):
                # The backend will not answer a cancelled request; its stream ends here.
                self._settle(cancelled, None, outcome="cancelled")
        await self._send(message)

    async def _send(self, message: Message) -> None:
        if self._link is None or self.closed:
            raise BackendUnavailable("the backend session is closed")
        await self._link.send(message)

    def listen(self) -> ReplayStream:
        self.last_seen = time.monotonic()
        return self.standing

    def open_backend_listener(self) -> BackendLink:
        if self._link is None:
            raise BackendUnavailable("the backend session is closed")
        return self._link

    # --- backend → client ----------------------------------------------------------------------

    def _route(self, incoming: BackendMessage) -> None:
        message = incoming.message
        self.last_seen = time.monotonic()
        if is_response(message):
            rid = message.get("id")
            if isinstance(rid, int | str) and rid in self.pending:
                self._settle(rid, message, outcome="error" if "error" in message else "ok")
            else:
                self.metrics.dropped_messages.labels(reason="unknown_id").inc()
                logger.info(
                    "dropped a backend response for no pending request", extra={"session_id": self.session_id}
                )
            return
        self._target_for(incoming).append(message)

    def _target_for(self, incoming: BackendMessage) -> ReplayStream:
        if self.era == "sse":
            return self.standing
        related = incoming.related_id
        if related is not None and related in self.pending:
            return self.pending[related].stream
        token = progress_token(incoming.message)
        if token is not None and method_of(incoming.message) == "notifications/progress":
            owner = self._progress.get(token)
            if owner is not None and owner in self.pending:
                return self.pending[owner].stream
        if self.listeners == 0 and len(self.pending) == 1:
            # A wire without stream affinity (stdio): while one request runs, what the server says is
            # almost surely about it (sampling, elicitation, logging during a tool call).
            return next(iter(self.pending.values())).stream
        return self.standing

    def _settle(self, rid: RequestId, response: Message | None, *, outcome: str) -> None:
        pending = self.pending.pop(rid, None)
        if pending is None:
            return
        if pending.token is not None:
            self._progress.pop(pending.token, None)
        if response is not None:
            pending.stream.append(response)
        if pending.stream is not self.standing:
            pending.stream.close()
        self.metrics.request_finished(pending.method, outcome, time.monotonic() - pending.started)

    async def expire(self, now: float) -> int:
        """Answer every request past its deadline with a timeout error, and tell the backend to stop."""
        expired = [rid for rid, pending in self.pending.items() if pending.deadline <= now]
        for rid in expired:
            timeout = self.limits.request_timeout
            self._settle(
                rid,
                error_response(rid, BACKEND_TIMEOUT, f"backend did not answer within {timeout:g} s"),
                outcome="timeout",
            )
            cancel: Message = {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": rid, "reason": "timed out at the proxy"},
            }
            if self._link is not None and not self.closed:
                await self._link.send(cancel)
        return len(expired)

    @property
    def idle(self) -> bool:
        return not self.pending and self.listeners == 0
