"""A first client for `make demo`: lists what the proxied server offers and calls a tool, in both eras.

python -m mcplane_sidecar.demo_client http://127.0.0.1:8080/mcp
"""

from __future__ import annotations

import sys

import anyio
from mcp import Client
from mcp_types import TextContent


async def tour(url: str) -> None:
    for mode, label in (("legacy", "2025-11-25 session"), ("auto", "2026-07-28 stateless")):
        async with Client(url, mode=mode) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            result = await client.call_tool("echo", {"text": f"hello through mcplane ({label})"})
            text = next((c.text for c in result.content if isinstance(c, TextContent)), "")
            print(f"[{label}] tools: {', '.join(tools)}")
            print(f"[{label}] echo -> {text}")


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/mcp"
    anyio.run(tour, url)


if __name__ == "__main__":
    main()
