"""Latency, throughput and session set-up of the mcplane sidecar against a direct connection, side by side.

    .venv/bin/python bench/sidecar_latency.py [--calls N] [--sessions 20] [--duration 5] [--out bench/results]

Three targets, all on 127.0.0.1, all started here as subprocesses and stopped by PID at the end:

- direct:          official Python client -> tests/fixtures/proxy_target.py over Streamable HTTP;
- mcplane (http):  client -> `mcplane-sidecar URL --transport-type http` -> that same proxy_target server;
- mcplane (stdio): client -> `mcplane-sidecar -- python ...` running proxy_target over stdio (the sidecar
                   starts one server process per client session).

Each target is measured in both eras: `mode="legacy"` (2025 initialize sessions) and the default auto mode
(2026-07-28 stateless when the peer offers it; a target whose auto mode falls back to the handshake is
recorded as "unsupported" with the error a pinned 2026-07-28 client gets). Per target and era:

1. session set-up: median time of entering `Client(...)` (and of leaving it), interleaved across targets;
2. sequential `tools/call echo` on one session after a warm-up: median, p95, p99, interleaved in rounds;
3. throughput: N concurrent sessions (separate `Client`s) per target, all opened first, then calling `echo`
   in a loop; the load goes to one target at a time in 1 s slices rotating over the targets, until each
   had the full duration.

Because the machine is shared and noisy, every sidecar number is also given as a ratio to direct, and
the phases interleave the targets so that background load falls on all of them alike.

Session accounting: around the throughput phase the script reads each sidecar's `/metrics`
(`mcplane_sessions_total`) and counts backend sessions independently at the backend. The HTTP target runs
proxy_target's own app behind a tiny ASGI counter (responses that hand out a new `Mcp-Session-Id`, and
DELETEs; the HTTP sidecar's backend URL carries `?via=mcplane`, so its sessions are told apart from the
direct clients'); the stdio target is proxy_target's server started through this file, which first
appends its PID to a file. One backend session per client session is expected; one per request would be
a defect.

The internal `--serve-http-target` and `--serve-stdio-target` modes are those two wrappers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # for tests.fixtures / tests.support, when run as a script

import anyio  # noqa: E402
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from _measure import LatencySummary, error_text, rotated  # noqa: E402
from mcp import Client  # noqa: E402
from mcp_types.version import LATEST_MODERN_VERSION, MODERN_PROTOCOL_VERSIONS  # noqa: E402

from tests.fixtures.proxy_target import build_app, build_server  # noqa: E402
from tests.support.processes import (  # noqa: E402
    LOOPBACK,
    PYTHON,
    ProcessHandle,
    async_running_process,
    free_port,
)

THIS_FILE: Final = Path(__file__).resolve()
SIDECAR_BIN: Final = PYTHON.parent / "mcplane-sidecar"
MCP_PATH: Final = "/mcp"
STATS_PATH: Final = "/bench-stats"
VIA_MCPLANE: Final = b"via=mcplane"
ECHO_TEXT: Final = "hello mcplane"

CLIENT_READ_TIMEOUT_S: Final = 30.0  # no single request may hang the run
PHASE_TIMEOUT_S: Final = 120.0  # hard cap of any one phase (set-up, sequential, throughput)
SETTLE_TIMEOUT_S: Final = 5.0  # how long to wait for backend sessions to be closed after a phase
SETTLE_POLL_S: Final = 0.1
MAX_ERRORS_PER_WORKER: Final = 20  # a broken target must not spin a worker in a tight error loop
WORKER_WARMUP_CALLS: Final = 3
SLICE_S: Final = 1.0  # throughput load is applied to one target at a time, in slices this long
# SIGTERM grace before SIGKILL: a sidecar interrupted mid-run drains in-flight requests, then stops one
# stdio server per session; killed early, it would orphan them (the run kills leftovers by PID anyway).
PROCESS_STOP_TIMEOUT_S: Final = 15.0

EraName = Literal["2025", "2026"]
ERA_MODES: Final[dict[EraName, str]] = {"2025": "legacy", "2026": "auto"}
TargetKind = Literal["direct", "http", "stdio"]
# The sidecar's era label for the one backend session through which it serves 2026-07-28 stateless
# requests to a handshake-only backend (core/bridge.py).
BRIDGE_ERA: Final = "bridge"


def _stdio_pool_size() -> int | None:
    """The stdio sidecar's default warm pool for 2026-07-28 requests, if this sidecar version has one."""
    try:
        from mcplane_sidecar.config import StdioBackendConfig  # noqa: PLC0415 (optional, read-only)

        default = StdioBackendConfig.model_fields["stateless_pool_size"].default
    except (ImportError, KeyError):
        return None
    return default if isinstance(default, int) else None


STDIO_POOL_SIZE: Final = _stdio_pool_size()


# --- the backend wrappers (run as subprocesses of this script) -------------------------------------------


class SessionCountingApp:
    """Pure ASGI wrapper counting the MCP sessions a Streamable HTTP server hands out and closes."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # Per caller: the HTTP sidecar's backend URL carries `?via=mcplane`; direct clients come without.
        self.stats = {via: {"posts": 0, "new_sessions": 0, "deletes": 0} for via in ("direct", "mcplane")}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == STATS_PATH:
            body = json.dumps(self.stats).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        method = scope["method"]
        had_session = any(name == b"mcp-session-id" for name, _ in scope["headers"])
        stats = self.stats["mcplane" if VIA_MCPLANE in scope.get("query_string", b"") else "direct"]
        if method == "POST":
            stats["posts"] += 1

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] < 300:
                gives_session = any(
                    name.lower() == b"mcp-session-id" for name, _ in message.get("headers", ())
                )
                if method == "POST" and not had_session and gives_session:
                    stats["new_sessions"] += 1
                elif method == "DELETE":
                    stats["deletes"] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


def serve_http_target(port: int) -> None:
    uvicorn.run(SessionCountingApp(build_app()), host=LOOPBACK, port=port, log_level="warning")


def serve_stdio_target(pid_file: Path) -> None:
    with pid_file.open("a") as out:  # one line per started backend process = per backend session
        out.write(f"{os.getpid()}\n")
    build_server().run("stdio")


# --- statistics ---------------------------------------------------------------------------------------


# --- targets and results ------------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    label: str
    kind: TargetKind
    url: str
    metrics_url: str | None  # the sidecar's /metrics; None for direct


@dataclass
class SessionCheck:
    client_sessions: int
    calls: int
    sidecar_sessions_total_delta: float | None
    sidecar_sessions_total_delta_by_era: dict[str, float]
    backend_sessions_delta: int | None
    backend_sessions_closed_delta: int | None
    sidecar_sessions_active_after: dict[str, float]
    other_sidecar_counter_deltas: dict[str, float]
    verdict: str


@dataclass
class ThroughputResult:
    sessions: int
    duration_s: float
    calls: int
    errors: int
    calls_per_s: float
    latency: LatencySummary | None
    concurrent_setup: LatencySummary | None
    first_error: str | None


@dataclass
class Leg:
    target: str
    era: EraName
    mode: str
    status: Literal["ok", "unsupported", "error"] = "ok"
    protocol_version: str | None = None
    detail: str | None = None
    setup: LatencySummary | None = None
    teardown: LatencySummary | None = None
    sequential: LatencySummary | None = None
    throughput: ThroughputResult | None = None
    session_check: SessionCheck | None = None
    phase_errors: dict[str, str] = field(default_factory=dict)
    ratios_to_direct: dict[str, float | None] = field(default_factory=dict)


# --- counters: the sidecar's /metrics and the backends' own counts ---------------------------------------


def parse_prometheus(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample line."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples


def metric_sum(samples: dict[str, float], name: str) -> float:
    return sum(value for key, value in samples.items() if key == name or key.startswith(name + "{"))


def metric_by_label(samples: dict[str, float], name: str) -> dict[str, float]:
    """Samples of a metric with one label, keyed by that label's value (`era="2025"` -> "2025")."""
    values: dict[str, float] = {}
    for key, value in samples.items():
        if key.startswith(name + "{"):
            label = key[len(name) + 1 : -1].partition("=")[2].strip('"')
            values[label] = values.get(label, 0.0) + value
    return values


WATCHED_COUNTERS: Final = (
    "mcplane_backend_errors_total",
    "mcplane_backend_restarts_total",
    "mcplane_dropped_messages_total",
    "mcplane_session_rejections_total",
)


@dataclass
class Counters:
    sidecar: dict[str, float] | None
    backend_opened: int | None
    backend_closed: int | None
    backend_alive: int | None
    # stdio only: every backend process started so far, and those still running.
    pids: frozenset[int] = frozenset()
    live_pids: frozenset[int] = frozenset()


class CounterReader:
    def __init__(self, http: httpx.AsyncClient, target_stats_url: str, stdio_pid_file: Path) -> None:
        self.http = http
        self.target_stats_url = target_stats_url
        self.stdio_pid_file = stdio_pid_file

    async def sidecar_metrics(self, target: Target) -> dict[str, float] | None:
        if target.metrics_url is None:
            return None
        response = await self.http.get(target.metrics_url)
        response.raise_for_status()
        return parse_prometheus(response.text)

    async def read(self, target: Target) -> Counters:
        sidecar = await self.sidecar_metrics(target)
        if target.kind == "stdio":
            pids = frozenset(read_pids(self.stdio_pid_file))
            live = frozenset(pid for pid in pids if pid_alive(pid))
            return Counters(sidecar, len(pids), len(pids) - len(live), len(live), pids, live)
        response = await self.http.get(self.target_stats_url)
        response.raise_for_status()
        stats = response.json()["direct" if target.kind == "direct" else "mcplane"]
        opened, closed = int(stats["new_sessions"]), int(stats["deletes"])
        return Counters(sidecar, opened, closed, opened - closed)


def read_pids(pid_file: Path) -> list[int]:
    if not pid_file.exists():
        return []
    return [int(line) for line in pid_file.read_text().split() if line.strip()]


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs and is not a zombie (children of the sidecar are reaped by it, not by us)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


# --- measurements -------------------------------------------------------------------------------------


# Handshake-era sessions this run opened, per URL: what the sidecars' sessions_total should add up to.
SESSIONS_OPENED: dict[str, int] = {}


def new_client(url: str, mode: str) -> Client:
    return Client(url, mode=mode, read_timeout_seconds=CLIENT_READ_TIMEOUT_S)


def tally(client: Client, url: str) -> None:
    """Count a client that just entered, if it holds a session (2026-07-28 clients hold none)."""
    if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        SESSIONS_OPENED[url] = SESSIONS_OPENED.get(url, 0) + 1


async def echo(client: Client) -> None:
    result = await client.call_tool("echo", {"text": ECHO_TEXT})
    if result.is_error:
        raise RuntimeError(f"echo answered an error: {result.content}")


async def check_support(target: Target, era: EraName) -> tuple[str | None, str | None]:
    """(protocol version, None) when the era works on this target, else (version or None, why not)."""
    mode = ERA_MODES[era]
    try:
        with anyio.fail_after(PHASE_TIMEOUT_S):
            async with new_client(target.url, mode) as client:
                tally(client, target.url)
                result = await client.call_tool("echo", {"text": ECHO_TEXT})
                text = getattr(result.content[0], "text", None) if result.content else None
                if result.is_error or text != ECHO_TEXT:
                    return client.protocol_version, f"echo answered {result.content!r}"
                version = client.protocol_version
    except Exception as exc:
        return None, error_text(exc)
    if era == "2026" and version not in MODERN_PROTOCOL_VERSIONS:
        # Auto mode fell back to the handshake: ask with a pinned 2026-07-28 client for the server's words.
        why = f"auto mode negotiated {version}, not {LATEST_MODERN_VERSION}"
        try:
            with anyio.fail_after(PHASE_TIMEOUT_S):
                async with new_client(target.url, LATEST_MODERN_VERSION) as client:
                    tally(client, target.url)
                    await echo(client)
            why += "; a pinned 2026-07-28 client nevertheless succeeded"
        except Exception as exc:
            why += f"; a pinned {LATEST_MODERN_VERSION} client gets: {error_text(exc)}"
        return version, why
    return version, None


async def measure_setup(legs: Sequence[Leg], urls: dict[str, str], rounds: int) -> None:
    """Enter and leave a fresh `Client` `rounds` times per target, the targets interleaved."""
    enter: dict[str, list[float]] = {leg.target: [] for leg in legs}
    leave: dict[str, list[float]] = {leg.target: [] for leg in legs}
    for round_no in range(rounds):
        for leg in rotated(legs, round_no):
            if "setup" in leg.phase_errors:
                continue
            try:
                with anyio.fail_after(PHASE_TIMEOUT_S):
                    client = new_client(urls[leg.target], leg.mode)
                    started = time.perf_counter()
                    await client.__aenter__()
                    entered = time.perf_counter()
                    tally(client, urls[leg.target])
                    try:
                        await echo(client)  # a session that did something, as in real use
                    finally:
                        leaving = time.perf_counter()
                        await client.__aexit__(None, None, None)
                        left = time.perf_counter()
                enter[leg.target].append(entered - started)
                leave[leg.target].append(left - leaving)
            except Exception as exc:
                leg.phase_errors["setup"] = error_text(exc)
    for leg in legs:
        if enter[leg.target]:
            leg.setup = LatencySummary.of(enter[leg.target])
            leg.teardown = LatencySummary.of(leave[leg.target])


async def measure_sequential(legs: Sequence[Leg], urls: dict[str, str], calls: int, warmup: int) -> None:
    """One session per target; after `warmup` calls each, `calls` timed calls in interleaved rounds."""
    rounds = max(1, min(10, calls // 50))
    samples: dict[str, list[float]] = {leg.target: [] for leg in legs}
    async with AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        for leg in legs:
            try:
                # Entered outside the deadline's cancel scope: the session outlives it (the client's own
                # read timeout bounds its handshake).
                client = await stack.enter_async_context(new_client(urls[leg.target], leg.mode))
                tally(client, urls[leg.target])
                with anyio.fail_after(PHASE_TIMEOUT_S):
                    for _ in range(warmup):
                        await echo(client)
                clients[leg.target] = client
            except Exception as exc:
                leg.phase_errors["sequential"] = error_text(exc)
        active = [leg for leg in legs if leg.target in clients]
        for round_no in range(rounds):
            per_round = calls // rounds + (1 if round_no < calls % rounds else 0)
            for leg in rotated(active, round_no) if active else []:
                if "sequential" in leg.phase_errors:
                    continue
                client = clients[leg.target]
                bucket = samples[leg.target]
                try:
                    with anyio.fail_after(PHASE_TIMEOUT_S):
                        for _ in range(per_round):
                            started = time.perf_counter()
                            await echo(client)
                            bucket.append(time.perf_counter() - started)
                except Exception as exc:
                    leg.phase_errors["sequential"] = error_text(exc)
    for leg in legs:
        if samples[leg.target]:
            leg.sequential = LatencySummary.of(samples[leg.target])


class LoadRun:
    """`sessions` concurrent `Client`s of one target, all opened first, then driven in time slices.

    Between slices the sessions stay open and idle; `ThroughputPhase` rotates the slices over the targets,
    so every target sees the same share of the machine's background noise.
    """

    def __init__(self, url: str, mode: str, sessions: int) -> None:
        self.url = url
        self.mode = mode
        self.sessions = sessions
        self.latencies: list[float] = []
        self.setups: list[float] = []
        self.errors = 0
        self.first_error: str | None = None
        self.ready = 0
        self.all_ready = anyio.Event()
        self.alive = 0  # workers holding an open session
        # Slices: `generation` bumps and `changed` fires to start one (or, with `closing`, to end).
        self.generation = 0
        self.changed = anyio.Event()
        self.closing = False
        self.deadline = 0.0
        self.last = 0.0
        self.in_slice = 0
        self.slice_done = anyio.Event()
        self.loaded_time = 0.0

    def note_error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = error_text(exc)

    def mark_ready(self) -> None:
        self.ready += 1
        if self.ready == self.sessions:
            self.all_ready.set()

    def left_slice(self) -> None:
        self.in_slice -= 1
        if self.in_slice <= 0:
            self.slice_done.set()

    def bump(self) -> None:
        self.generation += 1
        fired, self.changed = self.changed, anyio.Event()
        fired.set()

    async def worker(self) -> None:
        counted = False
        seen = 0
        try:
            started = time.perf_counter()
            async with new_client(self.url, self.mode) as client:
                self.setups.append(time.perf_counter() - started)
                tally(client, self.url)
                for _ in range(WORKER_WARMUP_CALLS):
                    await echo(client)
                self.alive += 1
                counted = True
                self.mark_ready()
                try:
                    while True:
                        while self.generation == seen:
                            await self.changed.wait()
                        seen = self.generation
                        if self.closing:
                            return
                        try:
                            await self.loop(client)
                        finally:
                            self.left_slice()
                finally:
                    self.alive -= 1
        except Exception as exc:
            self.note_error(exc)
            if not counted:  # a worker that could not start must not hold the others back
                self.mark_ready()

    async def loop(self, client: Client) -> None:
        own_errors = 0
        while time.perf_counter() < self.deadline:
            call_started = time.perf_counter()
            try:
                await echo(client)
            except Exception as exc:
                self.note_error(exc)
                own_errors += 1
                if own_errors >= MAX_ERRORS_PER_WORKER:
                    raise
                continue
            finished = time.perf_counter()
            self.latencies.append(finished - call_started)
            self.last = max(self.last, finished)

    async def run_slice(self, seconds: float) -> None:
        if self.alive == 0:
            return
        self.in_slice = self.alive
        self.slice_done = anyio.Event()
        start = self.last = time.perf_counter()
        self.deadline = start + seconds
        self.bump()
        await self.slice_done.wait()
        self.loaded_time += self.last - start  # until the last call that finished, slightly past the end

    def close(self) -> None:
        self.closing = True
        self.bump()

    def result(self) -> ThroughputResult:
        calls = len(self.latencies)
        return ThroughputResult(
            sessions=self.sessions,
            duration_s=round(self.loaded_time, 3),
            calls=calls,
            errors=self.errors,
            calls_per_s=round(calls / self.loaded_time, 1) if self.loaded_time > 0 else 0.0,
            latency=LatencySummary.of(self.latencies) if self.latencies else None,
            concurrent_setup=LatencySummary.of(self.setups) if self.setups else None,
            first_error=self.first_error,
        )


async def measure_throughput(
    legs: Sequence[Leg], targets: dict[str, Target], reader: CounterReader, sessions: int, duration: float
) -> None:
    """Open `sessions` clients per target (one target after the other), then load them in rotating slices.

    Counters are read before the first session opens and after the last one closed, for the session check.
    """
    rounds = max(1, round(duration / SLICE_S))
    runs = {leg.target: LoadRun(targets[leg.target].url, leg.mode, sessions) for leg in legs}
    # Sessions of the earlier phases may still be winding down (a stdio server gets seconds to exit).
    before = {leg.target: await quiesced(reader, targets[leg.target]) for leg in legs}
    with anyio.fail_after(PHASE_TIMEOUT_S * len(legs) + 2 * duration * len(legs)):
        async with anyio.create_task_group() as tg:
            for leg in legs:
                run = runs[leg.target]
                for _ in range(sessions):
                    tg.start_soon(run.worker)
                await run.all_ready.wait()
            for round_no in range(rounds):
                for leg in rotated(legs, round_no):
                    await runs[leg.target].run_slice(duration / rounds)
            for run in runs.values():
                run.close()
    for leg in legs:
        target = targets[leg.target]
        leg.throughput = runs[leg.target].result()
        after = await settled(reader, target, before[leg.target], pool_allowance(target, leg.era))
        leg.session_check = session_check(target, leg.era, before[leg.target], after, leg.throughput)


async def quiesced(reader: CounterReader, target: Target) -> Counters:
    """Counters once no backend session is open beyond what may stay (bounded wait)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        now = await reader.read(target)
        if now.backend_alive is None or now.backend_alive <= pool_allowance(target, None):
            return now
        if time.monotonic() >= deadline:
            return now
        await anyio.sleep(SETTLE_POLL_S)


async def settled(reader: CounterReader, target: Target, before: Counters, allowance: int = 0) -> Counters:
    """Counters once the backend sessions opened since `before` have been closed (or the wait ran out).

    `allowance`: backend processes that may stay (the stdio sidecar's warm pool for 2026-07-28 requests).
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        now = await reader.read(target)
        if (
            now.backend_alive is None
            or before.backend_alive is None
            or now.backend_alive <= before.backend_alive + allowance
        ):
            return now
        if time.monotonic() >= deadline:
            return now
        await anyio.sleep(SETTLE_POLL_S)


def delta(after: int | None, before: int | None) -> int | None:
    return after - before if after is not None and before is not None else None


def sidecar_deltas(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """sessions_total growth by era, sessions_active by era afterwards, and watched counters that moved."""
    if after is None or before is None:
        return {}, {}, {}
    totals_before = metric_by_label(before, "mcplane_sessions_total")
    grown = {
        k: v - totals_before.get(k, 0.0) for k, v in metric_by_label(after, "mcplane_sessions_total").items()
    }
    active = {k: v for k, v in metric_by_label(after, "mcplane_sessions_active").items() if v}
    moved = {name: metric_sum(after, name) - metric_sum(before, name) for name in WATCHED_COUNTERS}
    return {k: v for k, v in grown.items() if v}, active, {k: v for k, v in moved.items() if v}


def pool_allowance(target: Target, era: EraName | None) -> int:
    """Backend processes the stdio sidecar may keep warm for 2026-07-28 requests (None: any era)."""
    return (STDIO_POOL_SIZE or 0) if target.kind == "stdio" and era in ("2026", None) else 0


def session_check(
    target: Target, era: EraName, before: Counters, after: Counters, tp: ThroughputResult
) -> SessionCheck:
    """Judge one throughput phase's session counts.

    Expected: in the 2025 era one sidecar session and one backend session per client session, all closed
    when the clients leave. In the 2026-07-28 era no session per client; a sidecar may still serve such
    requests to a handshake-only backend through a shared "bridge" session, and the stdio sidecar through
    a warm pool of at most `stateless_pool_size` processes that stay up between requests.
    """
    opened = delta(after.backend_opened, before.backend_opened)
    closed = delta(after.backend_closed, before.backend_closed)
    if target.kind == "stdio":  # only the processes this phase started (earlier ones may still be exiting)
        closed = len((after.pids - before.pids) - after.live_pids)
    by_era, active, others = sidecar_deltas(before.sidecar, after.sidecar)
    expected = tp.sessions if era == "2025" else 0  # 2026-07-28 is stateless: no client sessions
    all_eras = dict(by_era)
    bridge_opened = int(by_era.pop(BRIDGE_ERA, 0.0))
    client_delta = sum(by_era.values())
    pooled = target.kind == "stdio" and era == "2026"
    pool_cap = pool_allowance(target, era) or (tp.sessions if pooled else 0)
    problems: list[str] = []
    notes: list[str] = []
    if opened is not None:
        extra = opened - expected - bridge_opened
        if extra > pool_cap or extra < 0:
            per_request = opened >= tp.calls > 0
            problems.append(
                f"{opened} backend sessions for {tp.sessions} client sessions"
                + (" (one per request!)" if per_request else "")
            )
        elif pooled:
            notes.append(f"{extra} pooled stdio processes started, pool size {STDIO_POOL_SIZE or '?'}")
    if before.sidecar is not None and client_delta != expected:
        problems.append(f"sessions_total grew by {client_delta:g}, expected {expected}")
    if opened is not None and closed is not None:
        lingering = opened - closed - bridge_opened
        if lingering > pool_cap:
            problems.append(f"{lingering} backend sessions still open after the clients left")
    still_active = sum(v for k, v in active.items() if k != BRIDGE_ERA)
    if still_active:
        problems.append(f"sidecar still reports {still_active:g} active client sessions")
    if active.get(BRIDGE_ERA) and era == "2026":
        notes.append(f"{active[BRIDGE_ERA]:g} shared bridge session open")
    if bridge_opened:
        notes.append(f"{bridge_opened} bridge session opened")
    if others:
        problems.append("counters moved: " + ", ".join(f"{k} +{v:g}" for k, v in others.items()))
    if problems:
        verdict = "; ".join(problems)
    elif era == "2025":
        verdict = "one backend session per client session"
    else:
        verdict = "stateless: no per-client sessions"
    if notes:
        verdict += " (" + "; ".join(notes) + ")"
    return SessionCheck(
        client_sessions=tp.sessions,
        calls=tp.calls + tp.sessions * WORKER_WARMUP_CALLS,
        sidecar_sessions_total_delta=sum(all_eras.values()) if before.sidecar is not None else None,
        sidecar_sessions_total_delta_by_era=all_eras,
        backend_sessions_delta=opened,
        backend_sessions_closed_delta=closed,
        sidecar_sessions_active_after=active,
        other_sidecar_counter_deltas=others,
        verdict=verdict,
    )


def whole_run_totals(
    targets: Sequence[Target], initial: dict[str, Counters], final: dict[str, Counters]
) -> dict[str, dict[str, Any]]:
    """Over the whole run, per sidecar: client sessions opened, sessions_total, backend sessions opened."""
    totals: dict[str, dict[str, Any]] = {}
    for t in targets:
        if t.kind == "direct":
            continue
        opened_at_backend = delta(final[t.key].backend_opened, initial[t.key].backend_opened)
        sidecar_end = final[t.key].sidecar
        totals[t.key] = {
            "client_sessions_opened": SESSIONS_OPENED.get(t.url, 0),
            "sidecar_sessions_total": (
                metric_sum(sidecar_end, "mcplane_sessions_total") if sidecar_end is not None else None
            ),
            "sidecar_sessions_total_by_era": (
                metric_by_label(sidecar_end, "mcplane_sessions_total") if sidecar_end is not None else {}
            ),
            "backend_sessions_opened": opened_at_backend,
        }
    return totals


# --- ratios and reports -------------------------------------------------------------------------------


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return round(value / base, 2)


def fill_ratios(legs: Sequence[Leg]) -> None:
    direct = {leg.era: leg for leg in legs if leg.target == "direct" and leg.status == "ok"}
    for leg in legs:
        base = direct.get(leg.era)
        if leg.target == "direct" or base is None or leg.status != "ok":
            continue
        leg.ratios_to_direct = {
            "setup_median": ratio(
                leg.setup.median_ms if leg.setup else None, base.setup.median_ms if base.setup else None
            ),
            "sequential_median": ratio(
                leg.sequential.median_ms if leg.sequential else None,
                base.sequential.median_ms if base.sequential else None,
            ),
            "sequential_p95": ratio(
                leg.sequential.p95_ms if leg.sequential else None,
                base.sequential.p95_ms if base.sequential else None,
            ),
            "sequential_p99": ratio(
                leg.sequential.p99_ms if leg.sequential else None,
                base.sequential.p99_ms if base.sequential else None,
            ),
            "throughput_calls_per_s": ratio(
                leg.throughput.calls_per_s if leg.throughput else None,
                base.throughput.calls_per_s if base.throughput else None,
            ),
            "throughput_median_latency": ratio(
                leg.throughput.latency.median_ms if leg.throughput and leg.throughput.latency else None,
                base.throughput.latency.median_ms if base.throughput and base.throughput.latency else None,
            ),
        }


def cell(value: float | None, ratio_value: float | None = None, digits: int = 2) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text} (x{ratio_value:.2f})" if ratio_value is not None else text


def markdown(report: dict[str, Any], legs: Sequence[Leg], labels: dict[str, str]) -> str:
    params = report["parameters"]
    env = report["environment"]
    lines = [
        "# mcplane sidecar latency",
        "",
        f"{report['started_at']}, {env['cpus']} CPUs, load average {env['loadavg_start']} at start and "
        f"{env['loadavg_end']} at the end; Python {env['python']}, mcp {env['mcp']}; "
        f"{params['calls']} sequential calls after {params['warmup']} warm-up, "
        f"{params['sessions']} sessions x {params['duration']} s per target for throughput "
        f"(in {SLICE_S:g} s slices rotating over the targets), "
        f"{params['setups']} set-ups; total {report['runtime_s']} s.",
        "",
        "Times in ms; (xn) is the ratio to direct in the same era. Throughput: calls/s across all sessions.",
        "",
        "| era | target | protocol | set-up p50 | seq p50 | seq p95 | seq p99 | calls/s "
        "| p50 under load | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for leg in legs:
        name = labels[leg.target]
        if leg.status != "ok":
            lines.append(f"| {leg.era} | {name} | {leg.status} | {md_escape(leg.detail or '')} | | | | | | |")
            continue
        r = leg.ratios_to_direct
        seq, tp = leg.sequential, leg.throughput
        err_parts = [f"{k}: {md_escape(v)}" for k, v in leg.phase_errors.items()]
        if tp and tp.errors:
            err_parts.append(f"{tp.errors} calls failed: {md_escape(tp.first_error or '')}")
        lines.append(
            "| "
            + " | ".join(
                [
                    leg.era,
                    name,
                    leg.protocol_version or "?",
                    cell(leg.setup.median_ms if leg.setup else None, r.get("setup_median"), 1),
                    cell(seq.median_ms if seq else None, r.get("sequential_median")),
                    cell(seq.p95_ms if seq else None, r.get("sequential_p95")),
                    cell(seq.p99_ms if seq else None, r.get("sequential_p99")),
                    cell(tp.calls_per_s if tp else None, r.get("throughput_calls_per_s"), 0),
                    cell(
                        tp.latency.median_ms if tp and tp.latency else None,
                        r.get("throughput_median_latency"),
                    ),
                    "; ".join(err_parts) or "0",
                ]
            )
            + " |"
        )
    lines += [
        "",
        "Session accounting around each throughput phase (backend sessions counted at the backend: new "
        "`Mcp-Session-Id`s handed out by proxy_target, or stdio server processes started):",
        "",
        "| era | target | client sessions | calls | sidecar sessions_total Δ | backend sessions Δ | "
        "backend closed Δ | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for leg in legs:
        check = leg.session_check
        if check is None:
            continue
        lines.append(
            f"| {leg.era} | {labels[leg.target]} | {check.client_sessions} | {check.calls} | "
            f"{fmt_opt(check.sidecar_sessions_total_delta)} | {fmt_opt(check.backend_sessions_delta)} | "
            f"{fmt_opt(check.backend_sessions_closed_delta)} | {md_escape(check.verdict)} |"
        )
    lines.append("")
    for key, totals in report["run_totals"].items():
        split = ", ".join(f"{era}: {n:g}" for era, n in totals["sidecar_sessions_total_by_era"].items())
        lines.append(
            f"Whole run, {labels[key]}: {fmt_opt(totals['client_sessions_opened'])} handshake-era client "
            f"sessions opened; sidecar sessions_total {fmt_opt(totals['sidecar_sessions_total'])}"
            + (f" ({split})" if split else "")
            + f"; backend sessions opened {fmt_opt(totals['backend_sessions_opened'])}"
            + (
                f" (includes the warm pool of up to {STDIO_POOL_SIZE} processes for 2026-07-28)."
                if key == "mcplane-stdio" and STDIO_POOL_SIZE
                else "."
            )
        )
    lines += [
        "",
        "Set-up / teardown detail (ms, median of sequential set-ups; concurrent = the throughput phase's "
        f"{params['sessions']} sessions opened at once):",
        "",
        "| era | target | enter p50 | enter p95 | exit p50 | concurrent enter p50 | concurrent enter max |",
        "|---|---|---|---|---|---|---|",
    ]
    for leg in legs:
        if leg.status != "ok":
            continue
        conc = leg.throughput.concurrent_setup if leg.throughput else None
        values = [
            leg.setup.median_ms if leg.setup else None,
            leg.setup.p95_ms if leg.setup else None,
            leg.teardown.median_ms if leg.teardown else None,
            conc.median_ms if conc else None,
            conc.max_ms if conc else None,
        ]
        row = " | ".join(cell(value, None, 1) for value in values)
        lines.append(f"| {leg.era} | {labels[leg.target]} | {row} |")
    lines.append("")
    return "\n".join(lines)


def fmt_opt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- orchestration ------------------------------------------------------------------------------------


@dataclass
class Options:
    calls: int
    warmup: int
    sessions: int
    duration: float
    setups: int
    out: Path
    eras: list[EraName]


@asynccontextmanager
async def started_targets(log_dir: Path, pid_file: Path) -> AsyncIterator[tuple[list[Target], str]]:
    """Start proxy_target (HTTP), a sidecar in front of it and a stdio-backed sidecar; stop them on exit."""
    target_port, http_port, stdio_port = free_port(), free_port(), free_port()
    target_url = f"http://{LOOPBACK}:{target_port}{MCP_PATH}"
    async with AsyncExitStack() as stack:

        async def start(argv: list[str | os.PathLike[str]], port: int, label: str) -> ProcessHandle:
            return await stack.enter_async_context(
                async_running_process(
                    argv, port=port, log_dir=log_dir, label=label, stop_timeout=PROCESS_STOP_TIMEOUT_S
                )
            )

        target = await start(
            [PYTHON, THIS_FILE, "--serve-http-target", str(target_port)], target_port, "proxy_target-http"
        )
        http_sidecar = await start(
            [
                SIDECAR_BIN,
                f"{target_url}?{VIA_MCPLANE.decode()}",
                "--transport",
                "http",
                "--port",
                str(http_port),
                "--transport-type",
                "http",
            ],
            http_port,
            "sidecar-http",
        )
        stdio_sidecar = await start(
            [
                SIDECAR_BIN,
                "--transport",
                "http",
                "--port",
                str(stdio_port),
                "--",
                str(PYTHON),
                str(THIS_FILE),
                "--serve-stdio-target",
                str(pid_file),
            ],
            stdio_port,
            "sidecar-stdio",
        )
        print(
            f"started proxy_target pid {target.pid}, sidecar (http backend) pid {http_sidecar.pid}, "
            f"sidecar (stdio backend) pid {stdio_sidecar.pid}; logs in {log_dir}",
            file=sys.stderr,
        )
        targets = [
            Target("direct", "direct", "direct", target_url, None),
            Target(
                "mcplane-http",
                "mcplane (http backend)",
                "http",
                f"{http_sidecar.base_url}{MCP_PATH}",
                f"{http_sidecar.base_url}/metrics",
            ),
            Target(
                "mcplane-stdio",
                "mcplane (stdio backend)",
                "stdio",
                f"{stdio_sidecar.base_url}{MCP_PATH}",
                f"{stdio_sidecar.base_url}/metrics",
            ),
        ]
        yield targets, f"http://{LOOPBACK}:{target_port}{STATS_PATH}"


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


async def timed(label: str, action: Callable[[], Awaitable[None]]) -> None:
    started = time.perf_counter()
    await action()
    print(f"  {label}: {time.perf_counter() - started:.1f} s", file=sys.stderr)


async def run(options: Options) -> dict[str, Any]:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    run_started = time.perf_counter()
    load_start = loadavg()
    legs: list[Leg] = []
    log_dir = Path(tempfile.mkdtemp(prefix="mcplane-bench-"))
    pid_file = log_dir / "stdio-backend-pids.txt"
    labels: dict[str, str] = {}
    run_totals: dict[str, dict[str, Any]] = {}
    try:
        async with (
            started_targets(log_dir, pid_file) as (targets, stats_url),
            httpx.AsyncClient(timeout=10) as http,
        ):
            reader = CounterReader(http, stats_url, pid_file)
            labels = {t.key: t.label for t in targets}
            urls = {t.key: t.url for t in targets}
            by_key = {t.key: t for t in targets}
            initial = {t.key: await reader.read(t) for t in targets}
            for era in options.eras:
                print(f"era {era} (mode={ERA_MODES[era]!r})", file=sys.stderr)
                era_legs = [Leg(target=t.key, era=era, mode=ERA_MODES[era]) for t in targets]
                legs += era_legs
                for leg in era_legs:
                    version, why = await check_support(by_key[leg.target], era)
                    leg.protocol_version = version
                    if why is not None:
                        leg.status = "unsupported"
                        leg.detail = why
                        print(f"  {leg.target}: unsupported: {why}", file=sys.stderr)
                ok = [leg for leg in era_legs if leg.status == "ok"]
                if not ok:
                    continue
                await timed("set-up", partial(measure_setup, ok, urls, options.setups))
                await timed(
                    "sequential", partial(measure_sequential, ok, urls, options.calls, options.warmup)
                )
                throughput = partial(
                    measure_throughput, ok, by_key, reader, options.sessions, options.duration
                )
                try:
                    await timed("throughput", throughput)
                except Exception as exc:
                    for leg in ok:
                        leg.phase_errors["throughput"] = error_text(exc)
            finals = {
                t.key: await settled(
                    reader, t, initial[t.key], STDIO_POOL_SIZE or 0 if t.kind == "stdio" else 0
                )
                for t in targets
            }
            run_totals = whole_run_totals(targets, initial, finals)
    finally:
        leftovers = [pid for pid in read_pids(pid_file) if pid_alive(pid)]
        for pid in leftovers:  # stdio backends this run started that outlived their sidecar
            os.kill(pid, signal.SIGKILL)
        if leftovers:
            print(f"killed {len(leftovers)} leftover stdio backend processes: {leftovers}", file=sys.stderr)
    fill_ratios(legs)
    report: dict[str, Any] = {
        "started_at": started_at,
        "runtime_s": round(time.perf_counter() - run_started, 1),
        "parameters": {
            "calls": options.calls,
            "warmup": options.warmup,
            "sessions": options.sessions,
            "duration": options.duration,
            "setups": options.setups,
            "eras": options.eras,
        },
        "environment": {
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            "python": platform.python_version(),
            "mcp": metadata.version("mcp"),
            "platform": platform.platform(),
            "logs": str(log_dir),
        },
        "targets": labels,
        "legs": [asdict(leg) for leg in legs],
        "run_totals": run_totals,
        "leftover_stdio_backends_killed": leftovers,
    }
    report["markdown"] = markdown(report, legs, labels)
    return report


SIGNALLED: list[str] = []


async def run_until_signal(options: Options) -> dict[str, Any] | None:
    """`run()`, cancelled cleanly by Ctrl-C or SIGTERM (its finally blocks then stop every process by PID)."""
    report: dict[str, Any] | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    SIGNALLED.append(signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        report = await run(options)
        tg.cancel_scope.cancel()
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1000, help="timed sequential calls per target and era")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls before the sequential run")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions for throughput")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of the throughput phase")
    parser.add_argument("--setups", type=int, default=10, help="session set-ups timed per target and era")
    parser.add_argument(
        "--era", choices=["2025", "2026"], action="append", help="limit to an era (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="results directory")
    parser.add_argument("--serve-http-target", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-stdio-target", type=Path, metavar="PID_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("calls", "sessions", "setups"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0 or not 0 < args.duration <= 60:
        parser.error("--warmup must be >= 0 and --duration in (0, 60]")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_http_target is not None:
        serve_http_target(args.serve_http_target)
        return
    if args.serve_stdio_target is not None:
        serve_stdio_target(args.serve_stdio_target)
        return
    options = Options(
        calls=args.calls,
        warmup=args.warmup,
        sessions=args.sessions,
        duration=args.duration,
        setups=args.setups,
        out=args.out,
        eras=args.era or ["2025", "2026"],
    )
    try:
        report = anyio.run(run_until_signal, options)
    except BaseException:
        # Cancelled by a signal, the SDK client may surface another error while it is torn down.
        if not SIGNALLED:
            raise
        report = None
    if report is None:
        print(f"interrupted ({', '.join(SIGNALLED)}); started processes were stopped", file=sys.stderr)
        raise SystemExit(130)
    options.out.mkdir(parents=True, exist_ok=True)
    json_path = options.out / "sidecar_latency.json"
    md_path = options.out / "sidecar_latency.md"
    json_path.write_text(json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=2) + "\n")
    md_path.write_text(report["markdown"])
    print(report["markdown"])
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
