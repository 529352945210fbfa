"""Soak: a steady load through the sidecar for a long time (default 10 minutes), in front of a real MCP
server over Streamable HTTP. 2025-era clients end their session and open a new one every so often
(session churn), 2026-07-28 clients call statelessly; every call is paced, so the load stays steady.

Reports the sidecar's RSS after the warm-up and at the end (growth must stay under 5%), the error count
(must be 0, and no reply may reach the wrong client), and the p99 latency per window with its drift
(last window over first, reported, not judged: the machine is shared).

    .venv/bin/python -m bench.reliability.soak [--duration 600] [--warmup 60] [--clients 10] \
        [--stateless-clients 2] [--interval 0.1] [--window 60]
"""

from __future__ import annotations

import sys
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import anyio

from bench._measure import LatencySummary
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

SCENARIO = "soak"
STOP_CLIENTS_TIMEOUT_S = 40.0
RSS_SAMPLE_S = 5.0
CHURN_EVERY = 200  # calls per 2025-era session before it is ended and a new one opened


@dataclass
class Options:
    duration: float = 600.0
    warmup: float = 60.0
    clients: int = 10
    stateless_clients: int = 2
    interval: float = 0.1
    window: float = 60.0
    max_rss_growth: float = 0.05
    log_dir: Path | None = None


async def scenario(options: Options, report: Report) -> None:
    log_dir = log_dir_for(options.log_dir, SCENARIO)
    report.logs = str(log_dir)
    tally = Tally()
    rss_samples: list[tuple[float, int | None]] = []
    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(proxy_target_http(log_dir))
        config = sidecar_config({"kind": "http", "url": f"{backend.base_url}/mcp"}, request_timeout=30)
        sidecar = await stack.enter_async_context(sidecar_process(config, log_dir))
        report.numbers["rss_kib_idle"] = sidecar.rss_kib()
        stop = anyio.Event()
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for number in range(options.clients + options.stateless_clients):
                era: Era = "2025" if number < options.clients else "2026"
                http = await stack.enter_async_context(new_http_client())
                client = McpClient(http, sidecar.mcp_url, f"c{number}-{era}", era, tally)
                tg.start_soon(
                    partial(client_loop, client, stop, interval=options.interval, churn_every=CHURN_EVERY)
                )
            end = started + options.duration
            while (now := time.monotonic()) < end:
                rss_samples.append((round(now - started, 1), sidecar.rss_kib()))
                if not sidecar.alive():
                    break
                await anyio.sleep(min(RSS_SAMPLE_S, end - now))
            rss_samples.append((round(time.monotonic() - started, 1), sidecar.rss_kib()))
            stop.set()
            tg.cancel_scope.deadline = anyio.current_time() + STOP_CLIENTS_TIMEOUT_S
        await sidecar.check_alive_and_healthy(report)
        status = await sidecar.status()
    summarize(options, report, tally, rss_samples, started)
    report.numbers["sessions_active_at_end"] = status["activeSessions"]


def summarize(
    options: Options,
    report: Report,
    tally: Tally,
    rss_samples: list[tuple[float, int | None]],
    started: float,
) -> None:
    report.cases = tally.calls
    summary = tally.summary()
    report.numbers.update(summary)
    errors = summary["clean_errors"] + summary["violations"]
    report.numbers["errors"] = errors
    report.check(errors == 0, f"{errors} calls failed under a steady load")
    report.numbers["calls_per_s"] = round(tally.calls / max(options.duration, 1e-9), 1)
    warm = [kib for at, kib in rss_samples if at >= options.warmup and kib is not None]
    if warm:
        rss_start, rss_end = warm[0], warm[-1]
        growth = (rss_end - rss_start) / rss_start
        report.numbers["rss_kib_after_warmup"] = rss_start
        report.numbers["rss_kib_end"] = rss_end
        report.numbers["rss_kib_max"] = max(warm)
        report.numbers["rss_growth"] = round(growth, 4)
        report.check(
            growth < options.max_rss_growth,
            f"RSS grew {growth:.1%} from {rss_start} to {rss_end} KiB (limit {options.max_rss_growth:.0%})",
        )
    else:
        report.fail("no RSS sample after the warm-up")
    report.numbers["rss_samples_kib"] = rss_samples
    windows = []
    edge = started + options.warmup
    while edge < started + options.duration:
        latencies = tally.latencies(since=edge, until=edge + options.window)
        if latencies:
            summary_window = LatencySummary.of(latencies)
            windows.append({"from_s": round(edge - started), **asdict(summary_window)})
        edge += options.window
    report.numbers["windows"] = [
        {key: w[key] for key in ("from_s", "count", "median_ms", "p99_ms")} for w in windows
    ]
    if len(windows) >= 2:
        report.numbers["p99_first_last_ms"] = [windows[0]["p99_ms"], windows[-1]["p99_ms"]]
        report.numbers["p99_drift"] = round(windows[-1]["p99_ms"] / windows[0]["p99_ms"], 3)
    tally.report_violations(report)


run = scenario_runner(SCENARIO, scenario)


def deadline_of(options: Options) -> float:
    return options.duration + 120  # the load, plus start-up and shut-down


def main(argv: list[str] | None = None) -> int:
    return script_main(
        sys.modules[__name__],
        argv,
        helps={
            "duration": "seconds of load",
            "warmup": "seconds before the RSS baseline",
            "interval": "seconds between a client's calls",
            "window": "seconds per p99 window",
        },
    )


if __name__ == "__main__":
    sys.exit(main())
