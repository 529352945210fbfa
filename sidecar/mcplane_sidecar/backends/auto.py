"""Auto-detection of a remote server's transport, as the spec's backwards-compatibility section says:
POST an `initialize`; a success means Streamable HTTP, a 4xx means a legacy HTTP+SSE server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import anyio

from mcplane_sidecar.backends.base import Backend, BackendLink, LinkOptions
from mcplane_sidecar.backends.http import ACCEPT_BOTH, MCP_SESSION_ID, HttpBackend
from mcplane_sidecar.backends.upstream import UPSTREAM_ERRORS, describe
from mcplane_sidecar.errors import BackendUnavailable
from mcplane_sidecar.jsonrpc import dumps

logger = logging.getLogger(__name__)

PROBE_INITIALIZE: Final[dict[str, Any]] = {
    "jsonrpc": "2.0",
    "id": "mcplane-probe",
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "mcplane-probe", "version": "0"},
    },
}


async def detect_transport(http: HttpBackend) -> str:
    """'http' or 'sse'; raises BackendUnavailable when nothing answers."""
    headers = http.headers
    try:
        response = await http.upstream.request(
            "POST",
            {**headers, "accept": ACCEPT_BOTH, "content-type": "application/json"},
            dumps(PROBE_INITIALIZE).encode(),
        )
        response.close()
    except UPSTREAM_ERRORS as exc:
        raise BackendUnavailable(f"backend {http.url} unreachable: {describe(exc)}") from None
    if 200 <= response.status < 300:
        session_id = response.headers.get(MCP_SESSION_ID)
        if session_id:
            # The probe opened a real session; do not leave it behind.
            try:
                (await http.upstream.request("DELETE", {**headers, MCP_SESSION_ID: session_id})).close()
            except UPSTREAM_ERRORS:
                logger.debug("probe session DELETE failed", exc_info=True)
        return "http"
    if 400 <= response.status < 500:
        return "sse"
    raise BackendUnavailable(f"backend {http.url} answered HTTP {response.status} to initialize")


class AutoBackend:
    """Decides between Streamable HTTP and SSE on first use, then behaves as the one found."""

    kind = "auto"

    def __init__(self, url: str, http_backend: HttpBackend, sse_backend: Backend) -> None:
        self.url = url
        self._http = http_backend
        self._sse = sse_backend
        self._chosen: Backend | None = None
        self._lock = anyio.Lock()

    @property
    def chosen(self) -> Backend | None:
        return self._chosen

    async def resolve(self) -> Backend:
        async with self._lock:
            if self._chosen is None:
                kind = await detect_transport(self._http)
                self._chosen = self._http if kind == "http" else self._sse
                logger.info(
                    "backend %s speaks %s", self.url, "Streamable HTTP" if kind == "http" else "legacy SSE"
                )
            return self._chosen

    def open_link(self, options: LinkOptions) -> AbstractAsyncContextManager[BackendLink]:
        return self._open(options)

    @asynccontextmanager
    async def _open(self, options: LinkOptions) -> AsyncIterator[BackendLink]:
        backend = await self.resolve()
        async with backend.open_link(options) as link:
            yield link

    def running(self) -> AbstractAsyncContextManager[None]:
        return self._http.running()  # the probe goes over the HTTP backend's pool

    async def check_ready(self) -> str | None:
        try:
            backend = await self.resolve()
        except BackendUnavailable as exc:
            return exc.message
        return await backend.check_ready()

    async def aclose(self) -> None:
        return None
