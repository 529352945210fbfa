"""Fault: a stdio MCP server that keeps crashing (it exits a fixed time after every start) while clients
call it through the sidecar, then stops crashing.

The sidecar must restart each process with exponential backoff, not in a tight loop (no fork storm):
starts are counted by the server itself (a spawn log) and must stay within what the backoff allows.
Every failed call must be a clean JSON-RPC error with its id, no reply may reach the wrong client, and
once the server is healthy again every client must work, in the session it already had.

    .venv/bin/python -m bench.reliability.faults_stdio_crashloop [--clients 4] [--stateless-clients 1] \
        [--crash-phase 30] [--healthy-phase 15] [--crash-after 1.5] [--initial-delay 0.25] [--max-delay 4]
"""

from __future__ import annotations

import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio

from bench.reliability._common import (
    Era,
    McpClient,
    Report,
    Tally,
    client_loop,
    log_dir_for,
    new_http_client,
    scenario_runner,
    script_main,
    sidecar_config,
    sidecar_process,
)
from tests.support.processes import PYTHON, REPO_ROOT

SCENARIO = "faults_stdio_crashloop"
DEADLINE_S = 600.0
STOP_CLIENTS_TIMEOUT_S = 40.0
POOL_SIZE = 1  # processes serving 2026-07-28 requests


@dataclass
class Options:
    clients: int = 4
    stateless_clients: int = 1
    crash_phase: float = 30.0
    healthy_phase: float = 15.0
    crash_after: float = 1.5
    initial_delay: float = 0.25
    max_delay: float = 4.0
    log_dir: Path | None = None


def max_starts(window: float, initial: float, cap: float) -> int:
    """How many times one supervised process can start within `window` seconds if it died at once every
    time: the first start plus one per backoff delay that fits."""
    starts, elapsed, delay = 1, 0.0, initial
    while elapsed + delay <= window:
        elapsed += delay
        starts += 1
        delay = min(delay * 2, cap)
    return starts


async def scenario(options: Options, report: Report) -> None:
    log_dir = log_dir_for(options.log_dir, SCENARIO)
    report.logs = str(log_dir)
    spawn_log = log_dir / "spawns.log"
    spawn_log.write_text("")
    healthy_flag = log_dir / "healthy"
    healthy_flag.unlink(missing_ok=True)
    stdio = {
        "command": str(PYTHON),
        "args": [
            "-m",
            "bench.reliability._crashy_stdio",
            "--spawn-log",
            str(spawn_log),
            "--crash-after",
            str(options.crash_after),
            "--healthy-flag",
            str(healthy_flag),
        ],
        "env": {"PYTHONPATH": str(REPO_ROOT)},
        "cwd": str(REPO_ROOT),
        "restart_initial_delay": options.initial_delay,
        "restart_max_delay": options.max_delay,
        "stateless_pool_size": POOL_SIZE,
    }
    tally = Tally()
    async with AsyncExitStack() as stack:
        sidecar = await stack.enter_async_context(
            sidecar_process(sidecar_config({"kind": "stdio", "stdio": stdio}, request_timeout=10), log_dir)
        )
        stop = anyio.Event()
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for number in range(options.clients + options.stateless_clients):
                era: Era = "2025" if number < options.clients else "2026"
                http = await stack.enter_async_context(new_http_client())
                client = McpClient(http, sidecar.mcp_url, f"c{number}-{era}", era, tally)
                tg.start_soon(partial(client_loop, client, stop))
            await anyio.sleep(options.crash_phase)
            healthy_flag.touch()
            healthy_at = time.monotonic()
            await anyio.sleep(options.healthy_phase)
            stop.set()
            tg.cancel_scope.deadline = anyio.current_time() + STOP_CLIENTS_TIMEOUT_S
        restarts = await sidecar.metric("mcplane_backend_restarts_total")
        await sidecar.check_alive_and_healthy(report)
    spawns = [float(line.split()[0]) for line in spawn_log.read_text().splitlines() if line.strip()]
    summarize(
        options, report, tally=tally, spawns=spawns, restarts=restarts, started=started, healthy_at=healthy_at
    )


def summarize(
    options: Options,
    report: Report,
    *,
    tally: Tally,
    spawns: list[float],
    restarts: float,
    started: float,
    healthy_at: float,
) -> None:
    report.cases = tally.calls
    report.numbers.update(tally.summary())
    report.numbers["process_starts"] = len(spawns)
    report.numbers["sidecar_restarts_metric"] = restarts
    per_second: dict[int, int] = {}
    for at in spawns:
        per_second[int(at)] = per_second.get(int(at), 0) + 1
    report.numbers["peak_starts_per_second"] = max(per_second.values(), default=0)
    # Every process slot: each session that was ever opened, the stateless pool, one readiness probe.
    opened = sum(1 for r in tally.records if r.what == "initialize")
    slots = opened + POOL_SIZE + 1
    window = options.crash_phase + options.healthy_phase
    bound = slots * max_starts(window, options.initial_delay, options.max_delay)
    report.numbers["session_opens"] = opened
    report.numbers["start_bound_from_backoff"] = bound
    report.check(len(spawns) <= bound, f"{len(spawns)} process starts, the backoff allows {bound}")
    report.check(restarts > 0, "the server never crashed: the scenario did not happen")
    crash_errors = tally.of("error", until=healthy_at)
    report.numbers["failed_calls_while_crashing"] = len(crash_errors)
    recovery = tally.recovery(healthy_at)
    report.numbers["first_ok_after_healthy_s"] = recovery.first_ok_s
    report.check(not recovery.stuck, f"clients that never recovered: {recovery.stuck}")
    report.numbers["all_clients_ok_after_healthy_s"] = recovery.all_ok_s
    report.numbers["failed_calls_after_recovery"] = len(
        tally.of("error", since=recovery.all_ok_at or float("inf"))
    )
    report.numbers["elapsed_s"] = round(time.monotonic() - started, 1)
    tally.report_violations(report)


run = scenario_runner(SCENARIO, scenario)


def main(argv: list[str] | None = None) -> int:
    return script_main(sys.modules[__name__], argv, helps={"crash_after": "server lifetime (s)"})


if __name__ == "__main__":
    sys.exit(main())
