"""Noticing that an HTTP client went away while the proxy is still waiting on the backend.

In the 2026-07-28 era a closed connection is the cancellation, so a request the client abandons must stop
upstream at once, even before the first byte of the answer exists. Once a StreamingResponse has started,
Starlette watches for the disconnect itself; this covers the wait before that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.requests import Request


@asynccontextmanager
async def cancelled_on_disconnect(request: Request) -> AsyncIterator[anyio.CancelScope]:
    """Run the block; if the client disconnects first, cancel it (check `scope.cancelled_caught`).

    The request body must have been read already: after it, the next ASGI message is the disconnect.
    The watcher is a bare asyncio task rather than a task group: this runs once per relayed request, a
    task group costs several times more, and an exception of the block then leaves as itself, unwrapped.
    """
    with anyio.CancelScope() as scope:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            scope.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        watcher.add_done_callback(_consume_outcome)
        try:
            yield scope
        finally:
            watcher.cancel()  # the block finished: stop watching, Starlette takes over from here


def _consume_outcome(task: asyncio.Task[None]) -> None:
    """A watcher that failed (the server went away mid-receive) changes nothing; do not warn about it."""
    if not task.cancelled():
        task.exception()
