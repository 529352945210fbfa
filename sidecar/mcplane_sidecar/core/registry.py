"""The one owner of client sessions: creation under the limits, lookup, expiry, and drain.

`run()` is entered once from the ASGI lifespan; every session's pump task lives in its task group, so
nothing outlives the app and nothing is fire-and-forget.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup, TaskStatus

from mcplane_sidecar.backends.base import Backend, LinkOptions
from mcplane_sidecar.config import SessionConfig
from mcplane_sidecar.core.session import Era, ProxySession, SessionLimits
from mcplane_sidecar.errors import (
    BackendUnavailable,
    Draining,
    SessionLimitReached,
    SessionNotFound,
    TooManyRequests,
)
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

# 32 random bytes: unguessable, and URL-safe base64 stays within visible ASCII as the spec requires.
SESSION_ID_BYTES = 32
REAPER_INTERVAL = 0.5


def principal_of(token: str | None) -> str | None:
    """A stable fingerprint of a bearer token, so sessions can be bound to it without keeping it."""
    if token is None:
        return None
    return hashlib.sha256(token.encode()).hexdigest()


class SessionRegistry:
    def __init__(self, backend: Backend, config: SessionConfig, metrics: Metrics) -> None:
        self.backend = backend
        self.config = config
        self.metrics = metrics
        self.sessions: dict[str, ProxySession] = {}
        self.draining = False
        self.inflight = 0
        self._opening = 0
        self._tg: TaskGroup | None = None
        metrics.max_sessions.set(config.max_sessions)

    @asynccontextmanager
    async def run(self) -> AsyncIterator[SessionRegistry]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._reap)
            try:
                yield self
            finally:
                for session in list(self.sessions.values()):
                    session.close()
                tg.cancel_scope.cancel()
        self._tg = None

    # --- sessions ---------------------------------------------------------------------------------

    async def open_session(self, era: Era, principal: str | None, options: LinkOptions) -> ProxySession:
        if self.draining:
            self.metrics.session_rejections.labels(reason="draining").inc()
            raise Draining("the proxy is shutting down; connect again to reach another replica")
        if len(self.sessions) + self._opening >= self.config.max_sessions:
            self.metrics.session_rejections.labels(reason="limit").inc()
            raise SessionLimitReached(f"session limit reached ({self.config.max_sessions}); retry later")
        assert self._tg is not None, "registry is not running"
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        options.session_label = session_id[:8]
        session = ProxySession(
            session_id=session_id,
            era=era,
            principal=principal,
            limits=SessionLimits(self.config.request_timeout, self.config.replay_buffer),
            metrics=self.metrics,
            link_options=options,
        )
        self._opening += 1
        try:
            await self._tg.start(self._run_session, session)
        finally:
            self._opening -= 1
        if session.closed:
            raise BackendUnavailable("the backend session ended as soon as it opened")
        self.sessions[session_id] = session
        self.metrics.sessions_active.labels(era=era).inc()
        self.metrics.sessions_total.labels(era=era).inc()
        logger.info("session opened", extra={"session_id": options.session_label})
        return session

    async def _run_session(self, session: ProxySession, *, task_status: TaskStatus[None]) -> None:
        try:
            await session.run(self.backend, task_status=task_status)
        finally:
            self._forget(session)

    def _forget(self, session: ProxySession) -> None:
        """Drop a session from the books at once; its task winds the backend session down after."""
        if self.sessions.pop(session.session_id, None) is not None:
            self.metrics.sessions_active.labels(era=session.era).dec()
            logger.info("session closed", extra={"session_id": session.link_options.session_label})

    def get(self, session_id: str, principal: str | None) -> ProxySession:
        session = self.sessions.get(session_id)
        # A session bound to another principal is reported as unknown: its existence is not disclosed.
        if session is None or session.closed or session.principal != principal:
            self.metrics.session_rejections.labels(reason="unknown_session").inc()
            raise SessionNotFound("unknown or expired session; initialize a new one")
        return session

    def close(self, session: ProxySession) -> None:
        session.close()
        self._forget(session)

    # --- in-flight accounting ---------------------------------------------------------------------

    def acquire_inflight(self) -> None:
        if self.inflight >= self.config.max_inflight:
            self.metrics.session_rejections.labels(reason="inflight").inc()
            raise TooManyRequests(f"too many requests in flight ({self.config.max_inflight}); retry later")
        self.inflight += 1
        self.metrics.inflight.inc()

    def release_inflight(self) -> None:
        self.inflight -= 1
        self.metrics.inflight.dec()

    @asynccontextmanager
    async def inflight_slot(self) -> AsyncIterator[None]:
        self.acquire_inflight()
        try:
            yield
        finally:
            self.release_inflight()

    # --- expiry -----------------------------------------------------------------------------------

    async def _reap(self) -> None:
        while True:
            await anyio.sleep(REAPER_INTERVAL)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.pending:
                    await session.expire(now)
                elif session.idle and now - session.last_seen > self.config.idle_timeout:
                    logger.info("session idle timeout", extra={"session_id": session.session_id[:8]})
                    self.close(session)
