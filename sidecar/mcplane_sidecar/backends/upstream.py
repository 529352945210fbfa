"""The HTTP client a Streamable HTTP backend is reached with: one aiohttp connection pool per sidecar.

This is the proxy's hot path, so it is aiohttp rather than httpx2: per relayed request aiohttp spends about
a quarter of the CPU, and its pool hands out an idle connection without polling every open one (each
session's GET stream holds one). The settings below keep httpx's behaviour where it mattered.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import aiohttp
import anyio
from yarl import URL

from mcplane_sidecar.backends.event_stream import EventStreamError

# What a failed exchange with the backend can raise, besides cancellation. A request's `total` timeout
# expires as a plain TimeoutError, not as one of aiohttp's own errors.
UPSTREAM_ERRORS: Final = (aiohttp.ClientError, EventStreamError, TimeoutError)


@dataclass(frozen=True)
class Proxy:
    """An HTTP(S)_PROXY from the environment, resolved once for the backend's URL."""

    url: URL | None = None
    auth: aiohttp.BasicAuth | None = None


def environment_proxy(backend_url: str) -> Proxy:
    """HTTP_PROXY / HTTPS_PROXY / NO_PROXY, as httpx applied them. Read once here: aiohttp's `trust_env`
    would read them (and ~/.netrc) on every request, in a worker thread."""
    url = URL(backend_url)
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return Proxy()
    raw = urllib.request.getproxies().get(url.scheme)
    if not raw:
        return Proxy()
    proxy = URL(raw if "://" in raw else f"http://{raw}")
    return Proxy(proxy.with_user(None), aiohttp.BasicAuth.from_url(proxy))


def new_upstream_session(connect_timeout: float) -> aiohttp.ClientSession:
    """Create inside the running event loop; close with `await session.close()`."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),  # the session limit bounds connections, not the pool
        # No read timeout: SSE streams idle legitimately; the proxy enforces request deadlines itself.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        # One pool serves every client session: a cookie set for one must never reach another.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class Upstream:
    """One backend URL and the connection pool to it, open while `running()`."""

    def __init__(self, url: str, *, connect_timeout: float) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._proxy = environment_proxy(url)
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        if self._session is not None:
            yield  # already open (an auto backend also runs the one it chose)
            return
        self._session = new_upstream_session(self.connect_timeout)
        try:
            yield
        finally:
            session, self._session = self._session, None
            with anyio.CancelScope(shield=True):
                await session.close()

    async def request(
        self,
        method: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        socket_timeouts: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request; the caller reads the body, then closes the response (or uses `async with`).

        `socket_timeouts` replaces the pool's (connect only) for this request."""
        if self._session is None:
            raise RuntimeError(f"{self.url} is used outside running()")
        return await self._session.request(
            method,
            self.url,
            data=body,
            headers=headers,
            allow_redirects=False,
            proxy=self._proxy.url,
            proxy_auth=self._proxy.auth,
            timeout=socket_timeouts or self._session.timeout,
        )


def describe(exc: BaseException) -> str:
    """A short human cause for a failed exchange ("connection refused or host unreachable")."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused or host unreachable"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, EventStreamError):
        return str(exc)
    return type(exc).__name__
