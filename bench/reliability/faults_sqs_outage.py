"""Fault: the SQS endpoint (moto in server mode) goes down for a while under load, then comes back empty,
as a restarted endpoint would (the server's request queue is made again; the sidecar must remake its own
reply queue). The backend is a real asyncmcp 0.2.1 SQS server, run from .venv-asyncmcp.

During the outage every call must end with a clean JSON-RPC error carrying its id; afterwards every
client must work again (a session asyncmcp lost is replaced after a few errors); no reply may ever be
delivered to the wrong session (each client checks each echo is its own text).

    .venv/bin/python -m bench.reliability.faults_sqs_outage [--clients 10] [--stateless-clients 2] \
        [--before 10] [--outage 10] [--after 20]
"""

from __future__ import annotations

import sys
import time
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

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
    scenario_runner,
    script_main,
    sidecar_config,
    sidecar_process,
)
from tests.support.aws import DUMMY_AWS_ENV, asyncmcp_server, create_queue, moto_server
from tests.support.processes import free_port

SCENARIO = "faults_sqs_outage"
DEADLINE_S = 600.0
STOP_CLIENTS_TIMEOUT_S = 40.0
REQUEST_QUEUE = "mcplane-reliability-requests"
# asyncmcp 0.2.1 may consume a request during the outage and never answer it: after this many errors in
# a row a client starts a new session, as a real client would after timeouts.
REOPEN_AFTER_ERRORS = 3


@dataclass
class Options:
    clients: int = 10
    stateless_clients: int = 2
    before: float = 10.0
    outage: float = 10.0
    after: float = 20.0
    request_timeout: float = 5.0
    log_dir: Path | None = None


async def scenario(options: Options, report: Report) -> None:
    log_dir = log_dir_for(options.log_dir, SCENARIO)
    report.logs = str(log_dir)
    port = free_port()
    tally = Tally()
    with ExitStack() as sync_stack:
        moto_stack = ExitStack()
        sync_stack.callback(moto_stack.close)
        moto = await anyio.to_thread.run_sync(
            moto_stack.enter_context, moto_server(port=port, log_dir=log_dir / "moto-1")
        )
        requests = await anyio.to_thread.run_sync(lambda: create_queue(moto.url, name=REQUEST_QUEUE))
        await anyio.to_thread.run_sync(
            sync_stack.enter_context,
            asyncmcp_server("sqs", endpoint_url=moto.url, request_queue_url=requests.url, log_dir=log_dir),
        )
        backend = {
            "kind": "sqs",
            "aws": {"endpoint_url": moto.url},
            "sqs": {"request_queue_url": requests.url, "wait_time_seconds": 1},
        }
        config = sidecar_config(backend, request_timeout=options.request_timeout)
        async with AsyncExitStack() as stack:
            sidecar = await stack.enter_async_context(sidecar_process(config, log_dir, env=DUMMY_AWS_ENV))
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                for number in range(options.clients + options.stateless_clients):
                    era: Era = "2025" if number < options.clients else "2026"
                    http = await stack.enter_async_context(new_http_client())
                    client = McpClient(http, sidecar.mcp_url, f"c{number}-{era}", era, tally)
                    tg.start_soon(partial(client_loop, client, stop, reopen_after_errors=REOPEN_AFTER_ERRORS))
                await anyio.sleep(options.before)
                down_at = time.monotonic()
                await anyio.to_thread.run_sync(moto_stack.close)
                await anyio.sleep(options.outage)
                moto_stack = ExitStack()
                sync_stack.callback(moto_stack.close)
                await anyio.to_thread.run_sync(
                    moto_stack.enter_context, moto_server(port=port, log_dir=log_dir / "moto-2")
                )
                await anyio.to_thread.run_sync(lambda: create_queue(moto.url, name=REQUEST_QUEUE))
                back_at = time.monotonic()
                await anyio.sleep(options.after)
                stop.set()
                tg.cancel_scope.deadline = anyio.current_time() + STOP_CLIENTS_TIMEOUT_S
            await sidecar.check_alive_and_healthy(report)
            report.numbers["unknown_session_replies_dropped"] = await sidecar.metric(
                "mcplane_async_unknown_session_replies_total"
            )
    summarize(report, tally, down_at, back_at)


def summarize(report: Report, tally: Tally, down_at: float, back_at: float) -> None:
    report.cases = tally.calls
    report.numbers.update(tally.summary())
    report.numbers["outage_s"] = round(back_at - down_at, 2)
    report.numbers["failed_calls_during_outage"] = len(tally.of("error", since=down_at, until=back_at))
    report.numbers["ok_calls_during_outage"] = len(tally.of("ok", since=down_at + 1, until=back_at))
    recovery = tally.recovery(back_at)
    report.numbers["first_ok_after_endpoint_back_s"] = recovery.first_ok_s
    report.check(not recovery.stuck, f"clients that never recovered: {recovery.stuck}")
    report.numbers["all_clients_ok_after_endpoint_back_s"] = recovery.all_ok_s
    report.numbers["failed_calls_after_all_recovered"] = len(
        tally.of("error", since=recovery.all_ok_at or float("inf"))
    )
    report.numbers["sessions_opened"] = sum(
        1 for r in tally.records if r.what == "initialize" and r.result.kind == "ok"
    )
    tally.report_violations(report)


run = scenario_runner(SCENARIO, scenario)


def main(argv: list[str] | None = None) -> int:
    return script_main(sys.modules[__name__], argv, helps={"outage": "seconds the endpoint is down"})


if __name__ == "__main__":
    sys.exit(main())
