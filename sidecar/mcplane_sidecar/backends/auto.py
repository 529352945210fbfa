"""Auto-detection of a remote server's transport, as the spec's backwards-compatibility section says:
POST an `initialize`; a success means Streamable HTTP, a 4xx means a legacy HTTP+SSE server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, Final

import anyio
import httpx2

from mcplane_sidecar.backends.base import Backend, BackendLink, LinkOptions
from mcplane_sidecar.backends.http import ACCEPT_BOTH, MCP_SESSION_ID, HttpBackend
from mcplane_sidecar.errors import BackendUnavailable

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


async def detect_transport(url: str, http: httpx2.AsyncClient, headers: dict[str, str]) -> str:
    """'http' or 'sse'; raises BackendUnavailable when nothing answers."""
    try:
        response = await http.post(
            url,
            json=PROBE_INITIALIZE,
            headers={**headers, "accept": ACCEPT_BOTH, "content-type": "application/json"},
        )
    except httpx2.HTTPError as exc:
        raise BackendUnavailable(f"backend {url} unreachable: {type(exc).__name__}") from None
    if response.is_success:
        session_id = response.headers.get(MCP_SESSION_ID)
        if session_id:
            # The probe opened a real session; do not leave it behind.
            try:
                await http.delete(url, headers={**headers, MCP_SESSION_ID: session_id})
            except httpx2.HTTPError:
                logger.debug("probe session DELETE failed", exc_info=True)
        return "http"
    if 400 <= response.status_code < 500:
        return "sse"
    raise BackendUnavailable(f"backend {url} answered HTTP {response.status_code} to initialize")


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
                kind = await detect_transport(self.url, self._http.http, self._http.headers)
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
        return nullcontext()

    async def check_ready(self) -> str | None:
        try:
            backend = await self.resolve()
        except BackendUnavailable as exc:
            return exc.message
        return await backend.check_ready()

    async def aclose(self) -> None:
        return None
