"""HTTP field values without their surrounding whitespace, whichever HTTP parser the server runs.

RFC 9110 section 5.5: leading and trailing whitespace is not part of a field value. uvicorn's h11 parser
drops it, its faster httptools parser keeps it. Header checks (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`
against the body) compare exact values, so a client's `Mcp-Name:  echo ` must read as `echo` either way.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

WHITESPACE: Final = (b" ", b"\t")


class TrimmedFieldValues:
    """ASGI middleware: strips whitespace around every request header value (the scope is copied)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            if any(value[:1] in WHITESPACE or value[-1:] in WHITESPACE for _, value in headers):
                scope = {**scope, "headers": [(name, value.strip(b" \t")) for name, value in headers]}
        await self.app(scope, receive, send)
