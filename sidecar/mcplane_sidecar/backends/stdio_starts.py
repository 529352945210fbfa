"""How many stdio server processes may be starting at once.

Starting an MCP server is CPU-bound: a Python or Node server spends about a second importing its SDK. When
a burst of handshake-era sessions arrives, each wants its own process; started all at once they share the
CPUs, every one of them is slow, and a hundred `initialize` requests time out together. Through this gate
only a few start at a time and the rest wait their turn, so sessions become ready in order and the ones
at the front are served within their deadline. Restarts after crashes pass through it too.

A process holds its slot until it shows it has started: it wrote to stdout, it went idle (its CPU time
stopped growing while it sleeps, which is a server blocked reading stdin), it exited, or `hold_limit`
passed. The idle check reads /proc and is skipped where there is none; the other signals still apply.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

import anyio
from anyio.abc import Process

# A server slower to start than this gives its slot back anyway: the gate paces starts, it never stalls them.
HOLD_LIMIT: Final = 10.0
# How often a starting process's CPU time is sampled; it counts as idle after one unchanged interval.
IDLE_POLL: Final = 0.1
CGROUP_CPU_MAX: Final = Path("/sys/fs/cgroup/cpu.max")


def default_start_slots(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: its affinity, lowered to its cgroup's CPU quota when it has one."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to read: the affinity stands
    return max(1, cpus)


def _cpu_state(pid: int) -> tuple[str, int] | None:
    """The process's scheduler state letter and its user + system CPU ticks, or None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; the fields after its last ")" do not.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[11]) + int(fields[12])
    except (IndexError, ValueError):
        return None


class StartGate:
    """A fixed number of start slots, taken before a server process is spawned."""

    def __init__(self, slots: int, *, hold_limit: float = HOLD_LIMIT, idle_poll: float = IDLE_POLL) -> None:
        self._free = anyio.Semaphore(slots)
        self._hold_limit = hold_limit
        self._idle_poll = idle_poll

    @property
    def free(self) -> int:
        """Slots free right now."""
        return self._free.value

    @property
    def waiting(self) -> int:
        """Starts queued for a slot right now."""
        return self._free.statistics().tasks_waiting

    async def admit(self) -> Callable[[], None]:
        """Wait for a free slot; returns the function that gives it back (calling it again does nothing)."""
        await self._free.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._free.release()

        return release

    async def hold_until_started(
        self, release: Callable[[], None], process: Process, spoke: anyio.Event | None = None
    ) -> None:
        """Give the slot back once `process` has started (see the module docstring), or on cancellation."""
        spoke = spoke or anyio.Event()  # a spare's stdout is not read until a session takes it
        try:
            with anyio.move_on_after(self._hold_limit):
                before = _cpu_state(process.pid)
                while process.returncode is None and not spoke.is_set():
                    with anyio.move_on_after(self._idle_poll):
                        await spoke.wait()
                    now = _cpu_state(process.pid)
                    # Sleeping ("S", not runnable or in disk wait) and no CPU used since the last look.
                    if now is not None and before is not None and now[0] == "S" and now[1] == before[1]:
                        break
                    before = now
        finally:
            release()
