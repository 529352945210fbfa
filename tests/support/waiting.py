"""Waiting on state that has no event to await (another process, a registry): polling under a deadline."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import anyio

POLL_INTERVAL = 0.02


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], *, within: float = 30.0, what: str = "condition"
) -> None:
    """Return as soon as `condition()` holds (it may be async); fail naming `what` after `within` seconds."""

    async def holds() -> bool:
        verdict = condition()
        return bool(await verdict) if inspect.isawaitable(verdict) else bool(verdict)

    try:
        with anyio.fail_after(within):
            # The one deliberate poll: the state lives where no event can be awaited.
            while not await holds():  # noqa: ASYNC110
                await anyio.sleep(POLL_INTERVAL)
    except TimeoutError:
        raise AssertionError(f"timed out after {within:g} s waiting for {what}") from None
