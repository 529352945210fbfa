"""Waiting on state that has no event to await (another process, a registry): polling under a deadline."""

from __future__ import annotations

from collections.abc import Callable

import anyio

POLL_INTERVAL = 0.02


async def eventually(condition: Callable[[], bool], *, within: float = 30.0, what: str = "condition") -> None:
    """Return as soon as `condition()` holds; fail naming `what` after `within` seconds."""
    try:
        with anyio.fail_after(within):
            # The one deliberate poll: the state lives where no event can be awaited.
            while not condition():  # noqa: ASYNC110
                await anyio.sleep(POLL_INTERVAL)
    except TimeoutError:
        raise AssertionError(f"timed out after {within:g} s waiting for {what}") from None
