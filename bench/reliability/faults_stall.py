"""Fault: a backend that stalls. Two kinds, each behind its own sidecar:

- an MCP server whose tool never answers (`slow` with an hour's delay): waves of concurrent calls, in both
  eras, must each end with a JSON-RPC error carrying the call's id once the proxy's request_timeout fires,
  leave nothing in flight, and leave the sidecar's memory where it was after the first wave;
- a black hole at the TCP level (accepts, reads, never answers): `initialize` must end the same way.

    .venv/bin/python -m bench.reliability.faults_stall [--waves 20] [--concurrency 50] [--timeout 2]
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio

from bench.reliability._common import (
    Era,
    McpClient,
    Report,
    Tally,
    log_dir_for,
    new_http_client,
    proxy_target_http,
    python_env,
    scenario_runner,
    script_main,
    sidecar_config,
    sidecar_process,
)
from tests.support.processes import PYTHON, async_running_process, free_port

SCENARIO = "faults_stall"
DEADLINE_S = 600.0
STALL_SECONDS = 3600  # far beyond any request timeout: only the proxy's deadline can end the call
BACKEND_TIMEOUT = -32004
BACKEND_UNAVAILABLE = -32003
SESSIONS = 10  # 2025-era sessions the stalled calls are spread over
SETTLE_TIMEOUT_S = 30.0
# Allowed RSS growth from after the first wave to the end (the allocator keeps some slack).
MAX_RSS_GROWTH = 0.10


@dataclass
class Options:
    waves: int = 20
    concurrency: int = 50
    timeout: float = 2.0
    blackhole_calls: int = 20
    log_dir: Path | None = None


async def scenario(options: Options, report: Report) -> None:
    log_dir = log_dir_for(options.log_dir, SCENARIO)
    report.logs = str(log_dir)
    tally = Tally()
    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(proxy_target_http(log_dir))
        config = sidecar_config(
            {"kind": "http", "url": f"{backend.base_url}/mcp"}, request_timeout=options.timeout
        )
        sidecar = await stack.enter_async_context(sidecar_process(config, log_dir))
        clients: list[McpClient] = []
        for number in range(SESSIONS):
            era: Era = "2025" if number < SESSIONS - 2 else "2026"
            http = await stack.enter_async_context(new_http_client())
            client = McpClient(http, sidecar.mcp_url, f"s{number}-{era}", era, tally)
            if era == "2025":
                opened = await client.open()
                report.check(opened.kind == "ok", f"{client.name}: initialize failed: {opened.detail}")
            clients.append(client)
        rss: list[int | None] = [sidecar.rss_kib()]
        for wave in range(options.waves):
            async with anyio.create_task_group() as tg:
                for number in range(options.concurrency):
                    client = clients[number % len(clients)]
                    tg.start_soon(client.call, "slow", {"seconds": STALL_SECONDS}, None)
            rss.append(sidecar.rss_kib())
            report.cases += options.concurrency
            if wave == 0:
                report.numbers["rss_kib_after_first_wave"] = rss[-1]
        judge_stalls(report, tally)

        async def settled() -> bool:
            return bool((await sidecar.status())["inflightRequests"] == 0)

        with anyio.move_on_after(SETTLE_TIMEOUT_S):
            while not await settled():  # noqa: ASYNC110 (another process's state: poll under a deadline)
                await anyio.sleep(0.1)
        report.check(await settled(), "requests still in flight after every stalled call ended")
        # A well-behaved call still works on the same sessions.
        for client in clients:
            after = await client.echo()
            report.check(after.kind == "ok", f"{client.name}: echo after the stalls: {after.detail}")
        first, last = report.numbers.get("rss_kib_after_first_wave"), sidecar.rss_kib()
        report.numbers["rss_kib_start_first_wave_end"] = [rss[0], first, last]
        if first and last:
            growth = (last - first) / first
            report.numbers["rss_growth_after_first_wave"] = round(growth, 4)
            report.check(growth < MAX_RSS_GROWTH, f"RSS grew {growth:.1%} after the first wave")
        await sidecar.check_alive_and_healthy(report)
        await blackhole(options, report, stack, log_dir, tally)
    tally.report_violations(report)
    report.numbers.update(
        {f"all_{key}": value for key, value in tally.summary().items() if key != "ok_latency_ms"}
    )


def judge_stalls(report: Report, tally: Tally) -> None:
    """Every stalled call ended with a JSON-RPC error carrying its id: -32004 in a session."""
    stalled = [r for r in tally.records if r.what == "slow"]
    kinds = {r.result.kind for r in stalled}
    codes = sorted({r.result.code for r in stalled if r.result.code is not None})
    report.numbers["stalled_calls"] = len(stalled)
    report.numbers["stalled_calls_ended_with_error_and_id"] = sum(
        1 for r in stalled if r.result.kind == "error"
    )
    report.numbers["stalled_error_codes"] = codes
    report.check(kinds <= {"error"}, f"stalled calls ended as {kinds}")
    report.check(
        all(r.result.code == BACKEND_TIMEOUT for r in stalled if r.client.endswith("2025")),
        "a 2025-era stalled call ended with another code than -32004",
    )
    report.check(set(codes) <= {BACKEND_TIMEOUT, BACKEND_UNAVAILABLE}, f"unexpected error codes {codes}")
    waits = sorted(r.result.latency for r in stalled)
    if waits:
        report.numbers["stalled_call_wait_s_min_max"] = [round(waits[0], 2), round(waits[-1], 2)]


async def blackhole(
    options: Options, report: Report, stack: AsyncExitStack, log_dir: Path, tally: Tally
) -> None:
    """`initialize` against a backend that never says a word ends with -32004 and the request's id."""
    port = free_port()
    await stack.enter_async_context(
        async_running_process(
            [PYTHON, "-m", "bench.reliability._blackhole", "--port", str(port)],
            port=port,
            env=python_env(),
            log_dir=log_dir,
            label="blackhole",
        )
    )
    config = sidecar_config(
        {"kind": "http", "url": f"http://127.0.0.1:{port}/mcp"}, request_timeout=options.timeout
    )
    sidecar = await stack.enter_async_context(sidecar_process(config, log_dir, label="sidecar-blackhole"))
    http = await stack.enter_async_context(new_http_client())
    results = []
    async with anyio.create_task_group() as tg:
        for number in range(options.blackhole_calls):
            client = McpClient(http, sidecar.mcp_url, f"b{number}-2025", "2025", tally)

            async def attempt(c: McpClient = client) -> None:
                results.append(await c.open())

            tg.start_soon(attempt)
    report.cases += len(results)
    codes = sorted({r.code for r in results if r.code is not None})
    report.numbers["blackhole_initialize_calls"] = len(results)
    report.numbers["blackhole_error_codes"] = codes
    report.check(
        all(r.kind == "error" and r.code == BACKEND_TIMEOUT for r in results),
        f"black hole: initialize ended as {[(r.kind, r.status, r.code) for r in results][:5]}",
    )
    await sidecar.check_alive_and_healthy(report)


run = scenario_runner(SCENARIO, scenario)


def main(argv: list[str] | None = None) -> int:
    return script_main(
        sys.modules[__name__],
        argv,
        helps={"concurrency": "stalled calls per wave", "timeout": "the sidecar's request_timeout"},
    )


if __name__ == "__main__":
    sys.exit(main())
