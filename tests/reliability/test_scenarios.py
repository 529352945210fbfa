"""The reliability scenarios (bench/reliability) at small sizes: the same code `make reliability` runs
for minutes, here for seconds. Each asserts behaviour only (no timings): no 500 and no 5xx but the
proxy's designed 502/503/504, every error a JSON-RPC error carrying its request's id, no reply delivered
to the wrong client, the sidecar alive with /healthz 200 at the end, and recovery after each fault."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from bench.reliability import (
    faults_backend_restart,
    faults_sqs_outage,
    faults_stall,
    faults_stdio_crashloop,
    fuzz_http,
    soak,
)
from bench.reliability._common import Report

pytestmark = pytest.mark.e2e
DEADLINE = 120  # per scenario; each one's own phases add up to far less


def passed(report: Report) -> bool:
    print(report.markdown())  # shown by pytest when the test fails
    return report.passed


async def test_the_backend_killed_and_restarted_under_load(tmp_path: Path) -> None:
    options = faults_backend_restart.Options(
        clients=3, stateless_clients=1, before=1.5, down=1.0, after=2.5, kills=1, log_dir=tmp_path
    )
    with anyio.fail_after(DEADLINE):
        report = await faults_backend_restart.run(options)
    assert passed(report)
    assert report.numbers["violations"] == 0
    assert report.numbers["clean_errors"] > 0  # the kill was felt, and answered cleanly
    assert report.numbers["sessions_reopened_by_clients"] == 0  # the proxy re-initialized for them


async def test_a_stdio_server_crashing_again_and_again(tmp_path: Path) -> None:
    options = faults_stdio_crashloop.Options(
        clients=2, stateless_clients=1, crash_phase=5.0, healthy_phase=4.0, max_delay=1.0, log_dir=tmp_path
    )
    with anyio.fail_after(DEADLINE):
        report = await faults_stdio_crashloop.run(options)
    assert passed(report)
    assert report.numbers["process_starts"] <= report.numbers["start_bound_from_backoff"]
    assert report.numbers["sidecar_restarts_metric"] > 0


async def test_the_sqs_endpoint_down_for_a_while(tmp_path: Path) -> None:
    options = faults_sqs_outage.Options(
        clients=3,
        stateless_clients=1,
        before=2.0,
        outage=3.0,
        after=6.0,
        request_timeout=3.0,
        log_dir=tmp_path,
    )
    with anyio.fail_after(DEADLINE):
        report = await faults_sqs_outage.run(options)
    assert passed(report)
    assert report.numbers["violations"] == 0  # nothing delivered to the wrong session


async def test_a_stalled_backend_times_out_with_the_request_id(tmp_path: Path) -> None:
    options = faults_stall.Options(waves=2, concurrency=15, timeout=1.0, blackhole_calls=3, log_dir=tmp_path)
    with anyio.fail_after(DEADLINE):
        report = await faults_stall.run(options)
    assert passed(report)
    assert report.numbers["stalled_calls_ended_with_error_and_id"] == report.numbers["stalled_calls"] == 30
    assert report.numbers["blackhole_error_codes"] == [-32004]


async def test_fuzzing_the_http_front_with_a_good_client_in_parallel(tmp_path: Path) -> None:
    options = fuzz_http.Options(examples=250, log_dir=tmp_path)
    with anyio.fail_after(DEADLINE):
        report = await fuzz_http.run(options)
    assert passed(report)
    assert report.numbers["cases_tried"] == 250
    assert report.numbers["good_client_calls"] > 0
    assert report.numbers["good_client_failures"] == 0


async def test_a_short_soak(tmp_path: Path) -> None:
    # RSS is still settling seconds after start: the 5% limit is for the 10-minute run, after its warm-up.
    options = soak.Options(duration=8.0, warmup=3.0, window=2.5, max_rss_growth=0.5, log_dir=tmp_path)
    with anyio.fail_after(DEADLINE):
        report = await soak.run(options)
    assert passed(report)
    assert report.numbers["errors"] == 0
