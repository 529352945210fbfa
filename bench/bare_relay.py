"""The least an HTTP relay built on mcplane's stack can do: a yardstick for the sidecar, not a product.

    .venv/bin/python bench/bare_relay.py BACKEND_URL --port P

uvicorn (uvloop, httptools) takes the client's request, one aiohttp pool sends it to the backend with its
headers, and the answer goes back as it came, streamed when it is an event stream. Nothing else: no
origin or token checks, no header or body validation, no session table, no limits or deadlines, no
metrics, no logging. Any proxy written with these libraries pays at least this much per request, so the
benchmark runs it next to the sidecar to show how much of the sidecar's cost is the stack's and how much
is the sidecar's own work (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import aiohttp
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LOOPBACK: Final = "127.0.0.1"
# Connection-level fields are the hop's own; the body is relayed as raw bytes, so it must come unencoded.
NOT_FORWARDED: Final = frozenset(
    {b"host", b"connection", b"content-length", b"transfer-encoding", b"accept-encoding"}
)
RESPONSE_FIELDS: Final = ("content-type", "mcp-session-id")
EVENT_STREAM: Final = "text/event-stream"


class BareRelay:
    """ASGI app: every HTTP request to any path goes to `backend_url`, its answer comes back unchanged."""

    def __init__(self, backend_url: str) -> None:
        self.backend_url = backend_url
        self.pool: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._relay(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.pool is not None, "the pool opens at start-up"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name not in NOT_FORWARDED
        }
        headers["accept-encoding"] = "identity"
        async with self.pool.request(
            scope["method"], self.backend_url, data=body or None, headers=headers, allow_redirects=False
        ) as upstream:
            fields = [
                (name.encode(), upstream.headers[name].encode())
                for name in RESPONSE_FIELDS
                if name in upstream.headers
            ]
            if upstream.content_type != EVENT_STREAM:
                answer = await upstream.read()
                await send({"type": "http.response.start", "status": upstream.status, "headers": fields})
                await send({"type": "http.response.body", "body": answer})
                return
            await send({"type": "http.response.start", "status": upstream.status, "headers": fields})
            # A client that leaves ends the stream; the backend sees its request closed.
            relaying = asyncio.current_task()
            assert relaying is not None

            async def cancel_on_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                relaying.cancel()

            watcher = asyncio.get_running_loop().create_task(cancel_on_disconnect())
            try:
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            except asyncio.CancelledError:
                if not watcher.done():
                    raise
                relaying.uncancel()  # our own cancellation, for the client's leaving: handled here
            finally:
                watcher.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend_url")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(BareRelay(args.backend_url), host=LOOPBACK, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
