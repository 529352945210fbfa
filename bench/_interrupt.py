"""Running a benchmark so that Ctrl-C or SIGTERM ends it cleanly.

The benchmark's own `finally` blocks stop every process it started (by PID) as the cancellation lands;
this only turns the signal into that cancellation, and the result into exit status 130.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

R = TypeVar("R")


def run_interruptibly(run: Callable[..., Awaitable[R]], *args: Any) -> R:
    """`anyio.run(run, *args)`; on SIGINT/SIGTERM it is cancelled and the process exits 130."""
    signalled: list[str] = []

    async def main() -> R | None:
        result: R | None = None
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        signalled.append(signal.Signals(signum).name)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            result = await run(*args)
            tg.cancel_scope.cancel()
        return result

    try:
        report = anyio.run(main)
    except BaseException:
        # Cancelled by a signal, the SDK client may surface another error while it is torn down.
        if not signalled:
            raise
        report = None
    if report is None:
        print(f"interrupted ({', '.join(signalled)}); started processes were stopped", file=sys.stderr)
        raise SystemExit(130)
    return report
