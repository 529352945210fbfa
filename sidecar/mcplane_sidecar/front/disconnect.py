"""Noticing that an HTTP client went away while the proxy is still waiting on the backend.

In the 2026-07-28 era a closed connection is the cancellation, so a request the client abandons must stop
upstream at once, even before the first byte of the answer exists. Once a StreamingResponse has started,
Starlette watches for the disconnect itself; this covers the wait before that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.requests import Request


@asynccontextmanager
async def cancelled_on_disconnect(request: Request) -> AsyncIterator[anyio.CancelScope]:
    """Run the block; if the client disconnects first, cancel it (check `scope.cancelled_caught`).

    The request body must have been read already: after it, the next ASGI message is the disconnect.
    An exception of the block leaves as itself, not wrapped in the watcher's ExceptionGroup, so callers'
    `except httpx2.HTTPError` / `except ProxyError` still see it.
    """
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            yield tg.cancel_scope
        except Exception as exc:  # re-raised below, outside the task group
            failure = exc
        finally:
            tg.cancel_scope.cancel()  # the block finished: stop watching, Starlette takes over from here
    if failure is not None:
        raise failure
