"""The stdio start gate against real processes: a slot is held while a server is busy starting and given
back once it is idle on stdin, has spoken or has exited; the default follows the CPUs and the cgroup quota."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from mcplane_sidecar.backends.stdio_starts import StartGate, _cpu_state, default_start_slots

DEADLINE = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BUSY_SECONDS = 0.4
# Burns BUSY_SECONDS of CPU, as an SDK import does, then blocks on stdin like a server awaiting a message.
BUSY_THEN_READ = (
    "import sys, time\n"
    f"end = time.process_time() + {BUSY_SECONDS}\n"
    "while time.process_time() < end: pass\n"
    "sys.stdin.read()\n"
)

# Never idle: only speaking, exiting or the hold limit can end its hold.
BUSY_FOREVER = "while True: pass\n"


@asynccontextmanager
async def running(script: str) -> AsyncIterator[Process]:
    """The script in a child process, killed on the way out whatever the test did."""
    command = [sys.executable, "-c", script]
    process = await anyio.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def test_a_slot_is_held_while_the_server_starts_and_given_back_once_it_waits_on_stdin() -> None:
    gate = StartGate(1, hold_limit=60.0)  # far beyond the deadline: only the idle check can end the hold
    release = await gate.admit()
    async with running(BUSY_THEN_READ) as process:
        with anyio.fail_after(DEADLINE):
            await gate.hold_until_started(release, process)
        state = _cpu_state(process.pid)
        assert state is not None
        # Not given back before the start-up work was done ...
        assert state[1] / CLOCK_TICKS >= BUSY_SECONDS * 0.9
        # ... and given back: the next start gets the slot at once.
        with anyio.fail_after(1):
            (await gate.admit())()


async def test_a_slot_is_given_back_when_the_server_speaks_or_exits() -> None:
    gate = StartGate(1, hold_limit=60.0, idle_poll=60.0)  # quiet: lets wait_all_tasks_blocked settle
    spoke = anyio.Event()
    async with running(BUSY_FOREVER) as process:
        release = await gate.admit()
        async with anyio.create_task_group() as tg:
            tg.start_soon(gate.hold_until_started, release, process, spoke)
            await anyio.wait_all_tasks_blocked()
            assert gate.free == 0  # held: the process is busy and silent
            spoke.set()  # the first bytes on stdout, which the link reports while the process is still busy
            with anyio.fail_after(DEADLINE):
                (await gate.admit())()
    gate = StartGate(1, hold_limit=60.0)
    async with running("pass") as exited:
        release = await gate.admit()
        assert gate.free == 0
        with anyio.fail_after(DEADLINE):
            await gate.hold_until_started(release, exited)
            (await gate.admit())()


async def test_a_start_waits_for_a_free_slot_and_a_cancelled_hold_gives_its_slot_back() -> None:
    gate = StartGate(1, hold_limit=60.0, idle_poll=60.0)
    release = await gate.admit()
    admitted = anyio.Event()

    async def second() -> None:
        (await gate.admit())()
        admitted.set()

    async with running(BUSY_FOREVER) as process, anyio.create_task_group() as tg:
        tg.start_soon(second)
        async with anyio.create_task_group() as link:  # the link whose process holds the slot
            link.start_soon(gate.hold_until_started, release, process)
            await anyio.wait_all_tasks_blocked()
            assert gate.waiting == 1  # the second start has queued behind the first
            assert not admitted.is_set()
            link.cancel_scope.cancel()  # the link is closed mid-start
        with anyio.fail_after(DEADLINE):
            await admitted.wait()


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", "affinity"),
        ("50000 100000\n", 1),  # half a CPU still starts one at a time
        ("150000 100000\n", 2),
        ("not a quota\n", "affinity"),
        (None, "affinity"),  # no cgroup v2 file
    ],
)
def test_default_start_slots_follow_the_affinity_and_the_cgroup_quota(
    tmp_path: Path, cpu_max: str | None, expected: int | str
) -> None:
    affinity = len(os.sched_getaffinity(0))
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    want = affinity if expected == "affinity" else min(affinity, int(expected))
    assert default_start_slots(path) == want
