"""Fault: the HTTP backend is killed (SIGKILL) and restarted on the same port while clients call through
the sidecar. The proxy must not crash, every failed call must be a clean JSON-RPC error with its id, no
reply may reach the wrong client, and every client must work again after the restart (the proxy replays
the handshake when the restarted backend forgets the session).

    .venv/bin/python -m bench.reliability.faults_backend_restart [--clients 8] [--stateless-clients 2] \
        [--before 5] [--down 3] [--after 10] [--kills 3]

Reports the failed calls, and per kill the recovery time: from the backend listening again to the first
successful call, and to the moment every client had one.
"""

from __future__ import annotations

import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from bench.reliability._common import (
    Era,
    McpClient,
    Report,
    Tally,
    client_loop,
    log_dir_for,
    new_http_client,
    proxy_target_http,
    scenario_runner,
    script_main,
    sidecar_config,
    sidecar_process,
)
from tests.support.processes import free_port

SCENARIO = "faults_backend_restart"
DEADLINE_S = 600.0
STOP_CLIENTS_TIMEOUT_S = 40.0  # clients finish their current call (bounded by the client timeout)


@dataclass
class Options:
    clients: int = 8
    stateless_clients: int = 2
    before: float = 5.0
    down: float = 3.0
    after: float = 10.0
    kills: int = 3
    request_timeout: float = 10.0
    log_dir: Path | None = None


async def scenario(options: Options, report: Report) -> None:
    log_dir = log_dir_for(options.log_dir, SCENARIO)
    report.logs = str(log_dir)
    port = free_port()
    backend_url = f"http://127.0.0.1:{port}/mcp"
    tally = Tally()
    cycles: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(proxy_target_http(log_dir, port))
        config = sidecar_config({"kind": "http", "url": backend_url}, request_timeout=options.request_timeout)
        sidecar = await stack.enter_async_context(sidecar_process(config, log_dir))
        rss_start = sidecar.rss_kib()
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for number in range(options.clients + options.stateless_clients):
                era: Era = "2025" if number < options.clients else "2026"
                http = await stack.enter_async_context(new_http_client())
                client = McpClient(http, sidecar.mcp_url, f"c{number}-{era}", era, tally)
                tg.start_soon(partial(client_loop, client, stop))
            await anyio.sleep(options.before)
            for kill in range(options.kills):
                killed_at = time.monotonic()
                backend.process.kill()  # SIGKILL: no goodbye to anyone
                await anyio.to_thread.run_sync(backend.process.wait)
                await anyio.sleep(options.down)
                backend = await stack.enter_async_context(proxy_target_http(log_dir, port))
                restarted_at = time.monotonic()
                await anyio.sleep(options.after)
                cycles.append({"kill": kill + 1, "killed_at": killed_at, "restarted_at": restarted_at})
            stop.set()
            # The clients finish their current call; one that hangs past this is cut off.
            tg.cancel_scope.deadline = anyio.current_time() + STOP_CLIENTS_TIMEOUT_S
        rss_end = sidecar.rss_kib()
        await sidecar.check_alive_and_healthy(report)
        status = await sidecar.status()
        report.check(status["inflightRequests"] == 0, f"in-flight requests left: {status}")
    summarize(report, tally, cycles, rss_start, rss_end)


def summarize(
    report: Report, tally: Tally, cycles: list[dict[str, Any]], rss_start: int | None, rss_end: int | None
) -> None:
    report.cases = tally.calls
    report.numbers.update(tally.summary())
    clients = tally.clients()
    recoveries = []
    for cycle in cycles:
        restarted = cycle["restarted_at"]
        until = cycles[cycle["kill"]]["killed_at"] if cycle["kill"] < len(cycles) else float("inf")
        recovery = tally.recovery(restarted, until=until)
        report.check(not recovery.stuck, f"kill {cycle['kill']}: clients never recovered: {recovery.stuck}")
        failed = len(tally.of("error", since=cycle["killed_at"], until=until))
        recoveries.append(
            {
                "kill": cycle["kill"],
                "down_s": round(restarted - cycle["killed_at"], 2),
                "failed_calls": failed,
                "first_ok_after_restart_s": recovery.first_ok_s,
                "all_clients_ok_after_restart_s": recovery.all_ok_s,
            }
        )
    report.numbers["recoveries"] = recoveries
    opened = sum(1 for r in tally.records if r.what == "initialize" and r.result.kind == "ok")
    sessions = sum(1 for name in clients if name.endswith("-2025"))
    # The proxy re-initializes a restarted backend itself: a client should never need a new session.
    report.numbers["sessions_reopened_by_clients"] = opened - sessions
    report.numbers["sidecar_rss_kib_start_end"] = [rss_start, rss_end]
    tally.report_violations(report)


run = scenario_runner(SCENARIO, scenario)


def main(argv: list[str] | None = None) -> int:
    return script_main(
        sys.modules[__name__],
        argv,
        helps={
            "clients": "2025-era sessions",
            "before": "load before the first kill",
            "down": "seconds the backend stays down",
            "after": "load after each restart",
        },
    )


if __name__ == "__main__":
    sys.exit(main())
