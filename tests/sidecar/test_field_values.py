"""Header values reach the proxy without surrounding whitespace, whatever the HTTP parser kept."""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Receive, Scope, Send

from mcplane_sidecar.front.field_values import TrimmedFieldValues


async def _seen_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["headers"] = scope["headers"]

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {"type": "http", "headers": headers}
    await TrimmedFieldValues(app)(scope, receive, send)
    return list(seen["headers"])


async def test_whitespace_around_values_is_trimmed() -> None:
    headers = [(b"mcp-name", b"  echo \t"), (b"mcp-method", b"tools/call"), (b"x-empty", b"")]
    assert await _seen_headers(headers) == [
        (b"mcp-name", b"echo"),
        (b"mcp-method", b"tools/call"),
        (b"x-empty", b""),
    ]


async def test_inner_whitespace_is_kept() -> None:
    headers = [(b"mcp-param-query", b" two  words ")]
    assert await _seen_headers(headers) == [(b"mcp-param-query", b"two  words")]


async def test_clean_headers_pass_as_they_are() -> None:
    headers = [(b"accept", b"application/json, text/event-stream")]
    assert await _seen_headers(headers) == headers
