"""The proxy's own exception tree.

Lower layers (httpx2, subprocess, botocore) are mapped into these at the backend boundary; the front
turns each into an HTTP status and a JSON-RPC error carrying the request's id. Nothing below leaks out.
"""

from __future__ import annotations

from typing import Any

# Implementation-defined JSON-RPC codes (-32000..-32019 are ours to allocate).
BACKEND_UNAVAILABLE = -32003
BACKEND_TIMEOUT = -32004
SESSION_LIMIT = -32005
PROXY_DRAINING = -32006
BACKEND_SESSION_LOST = -32007
REQUEST_TOO_LARGE = -32008
UNAUTHORIZED = -32009
FORBIDDEN = -32010
SESSION_NOT_FOUND = -32011
TOO_MANY_REQUESTS = -32012


class ProxyError(Exception):
    """An error the proxy reports to a client: JSON-RPC code, HTTP status and optional data."""

    code: int = -32603
    http_status: int = 500
    retry_after: int | None = None

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class BackendUnavailable(ProxyError):
    """The backend cannot be reached (connection refused, process not running, endpoint down)."""

    code = BACKEND_UNAVAILABLE
    http_status = 503
    retry_after = 1


class BackendProtocolError(ProxyError):
    """The backend answered with something that is not MCP (bad status, bad body)."""

    code = BACKEND_UNAVAILABLE
    http_status = 502


class BackendTimeout(ProxyError):
    code = BACKEND_TIMEOUT
    http_status = 504


class SessionLost(ProxyError):
    """The backend forgot the session and could not be re-initialized."""

    code = BACKEND_SESSION_LOST
    http_status = 502


class SessionLimitReached(ProxyError):
    code = SESSION_LIMIT
    http_status = 503
    retry_after = 5


class TooManyRequests(ProxyError):
    code = TOO_MANY_REQUESTS
    http_status = 503
    retry_after = 1


class Draining(ProxyError):
    code = PROXY_DRAINING
    http_status = 503
    retry_after = 1


class SessionNotFound(ProxyError):
    code = SESSION_NOT_FOUND
    http_status = 404


class BackendClosed(Exception):
    """Raised inside the proxy when a backend link is gone; never shown to a client as such."""


def find_proxy_error(exc: BaseException) -> ProxyError | None:
    """The ProxyError inside `exc`, looking through the exception groups task groups wrap errors in."""
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_proxy_error(inner)
            if found is not None:
                return found
    return None
