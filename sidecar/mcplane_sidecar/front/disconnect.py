"""Noticing that an HTTP client went away while the proxy is still waiting on the backend.

In the 2026-07-28 era a closed connection is the cancellation, so a request the client abandons must stop
upstream, even before the first byte of the answer exists. A client that leaves after the request has run
for WATCH_AFTER_SECONDS is noticed at once; one that leaves sooner, at that mark. Once a StreamingResponse
has started, Starlette watches for the disconnect itself; this covers the wait before that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio
from starlette.requests import Request

# How long a request runs before anyone watches for its client leaving. Most answers come sooner, and for
# them the watcher was pure cost: a task started and cancelled per request, about 35 us of the sidecar's
# 0.6 ms of CPU per relayed call at 20 sessions (docs/performance.md). A client that leaves earlier is
# still noticed, at this point, before a long-running request gets far.
WATCH_AFTER_SECONDS: Final = 0.25


@asynccontextmanager
async def cancelled_on_disconnect(request: Request) -> AsyncIterator[anyio.CancelScope]:
    """Run the block; if the client disconnects first, cancel it (check `scope.cancelled_caught`).

    The request body must have been read already: after it, the next ASGI message is the disconnect.
    The watcher is a bare asyncio task rather than a task group: this runs once per relayed request, a
    task group costs several times more, and an exception of the block then leaves as itself, unwrapped.
    It starts only once the block has run for WATCH_AFTER_SECONDS.
    """
    with anyio.CancelScope() as scope:
        loop = asyncio.get_running_loop()
        watcher: asyncio.Task[None] | None = None

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            scope.cancel()

        def start_watching() -> None:
            nonlocal watcher
            watcher = loop.create_task(watch())
            watcher.add_done_callback(_consume_outcome)

        timer = loop.call_later(WATCH_AFTER_SECONDS, start_watching)
        try:
            yield scope
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()  # the block finished: stop watching, Starlette takes over from here


def _consume_outcome(task: asyncio.Task[None]) -> None:
    """A watcher that failed (the server went away mid-receive) changes nothing; do not warn about it."""
    if not task.cancelled():
        task.exception()
