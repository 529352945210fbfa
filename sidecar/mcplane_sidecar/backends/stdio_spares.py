"""Started stdio server processes kept ready, so a new session does not wait for one to start.

A Python or Node MCP server takes about a second to import its SDK; a handshake-era client pays that on
every `initialize` unless a process is already running. The backend keeps `count` spares: a new link
takes one, and a fresh one is started behind it. A spare that dies before it is taken is reaped and
replaced after a backoff, so a server that cannot start does not turn into a fork storm. Spares are
started through the same gate as every other server process (backends/stdio_starts.py).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup

from mcplane_sidecar.backends.stdio_starts import StartGate

logger = logging.getLogger(__name__)


class WarmSpares:
    def __init__(
        self,
        spawn: Callable[[], Awaitable[Process]],
        stop: Callable[[Process], Coroutine[Any, Any, None]],
        *,
        gate: StartGate,
        count: int,
        initial_delay: float,
        max_delay: float,
    ) -> None:
        self._spawn = spawn
        self._stop = stop
        self._gate = gate
        self._count = count
        self._initial_delay = initial_delay
        self._max_delay = max_delay
        self._delay = initial_delay
        self._ready: deque[Process] = deque()
        self._wanted = anyio.Event()
        self._tg: TaskGroup | None = None
        self._spare_died = False  # since the last refill: the next one waits out a backoff

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Keep the spares filled while the sidecar runs; stop the untaken ones when it stops."""
        if self._count == 0:
            yield
            return
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._fill, tg)
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    while self._ready:
                        await self._stop(self._ready.popleft())

    def take(self) -> Process | None:
        """A running spare for a new session, or None (none ready, or the pool is off)."""
        while self._ready:
            process = self._ready.popleft()
            if process.returncode is None:
                self._delay = self._initial_delay  # a spare lived until it was needed: the server starts fine
                self._wanted.set()
                return process
            self._spare_died = True
            logger.warning("a spare backend process exited before use (code %s)", process.returncode)
            if self._tg is not None:
                self._tg.start_soon(self._stop, process)
        self._wanted.set()
        return None

    async def _fill(self, tg: TaskGroup) -> None:
        while True:
            while len(self._ready) < self._count:
                release = await self._gate.admit()
                try:
                    process = await self._spawn()
                except BaseException as exc:
                    release()
                    if not isinstance(exc, (OSError, ValueError)):
                        raise  # cancelled: the sidecar is stopping
                    logger.warning("cannot start a spare backend process: %s", exc)
                    await self._back_off()
                    continue
                tg.start_soon(self._gate.hold_until_started, release, process)
                self._ready.append(process)
            self._wanted = anyio.Event()
            await self._wanted.wait()
            if self._spare_died:
                self._spare_died = False
                await self._back_off()  # a server that dies on its own is not restarted at full speed

    async def _back_off(self) -> None:
        await anyio.sleep(self._delay)
        self._delay = min(self._delay * 2, self._max_delay)
