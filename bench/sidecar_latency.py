"""Latency, throughput and session set-up of the mcplane sidecar and its peers against a direct connection.

    .venv/bin/python bench/sidecar_latency.py [--calls N] [--sessions 1 --sessions 20 --sessions 100]
        [--duration 3] [--no-peers] [--out bench/results]

The targets, all on 127.0.0.1, all started here as subprocesses and stopped by PID at the end:

- direct:          official Python client -> tests/fixtures/proxy_target.py over Streamable HTTP;
- mcplane (http):  client -> `mcplane-sidecar URL --transport-type http` -> that same proxy_target server;
- bare relay (http): client -> `bench/bare_relay.py URL` -> the same server: uvicorn + aiohttp with none of
                   the sidecar's work, the floor for any proxy on this stack (a yardstick, not a peer);
- fastmcp (http):  client -> fastmcp's proxy (`create_proxy(URL)`, `.venv-bench-fastmcp`) -> the same server;
- mcplane (stdio): client -> `mcplane-sidecar -- python ...` running proxy_target over stdio (the sidecar
                   starts one server process per client session);
- mcp-proxy (stdio): client -> `mcp-proxy --port P -- python ...` (0.13.0, `.venv-bench-mcp-proxy`);
- fastmcp (stdio): client -> fastmcp's proxy with that command as its one configured server.

The peers' venvs come from `bench/peers/setup.sh` (`make bench-peers`); a peer whose venv is missing is
recorded as unavailable. Every proxy process is sampled from /proc (CPU seconds, VmHWM) over the run.

Each target is measured in both eras: `mode="legacy"` (2025 initialize sessions) and the default auto mode
(2026-07-28 stateless when the peer offers it; a target whose auto mode falls back to the handshake is
recorded as "unsupported" with the error a pinned 2026-07-28 client gets). Per target and era:

1. session set-up: median time of entering `Client(...)` (and of leaving it), interleaved across targets;
2. sequential `tools/call echo` on one session after a warm-up: median, p95, p99, interleaved in rounds;
3. throughput at each concurrency level (default 1, 20 and 100 sessions): that many concurrent sessions
   (separate `Client`s) per target, all opened first, then calling `echo` in a loop; the load goes to one
   target at a time in 1 s slices rotating over the targets, until each had the full duration. The proxy
   processes' CPU time over the loaded slices gives CPU per call.

Because the machine is shared and noisy, every sidecar number is also given as a ratio to direct, and
the phases interleave the targets so that background load falls on all of them alike.

Session accounting: around the throughput phase the script reads each sidecar's `/metrics`
(`mcplane_sessions_total`) and counts backend sessions independently at the backend. The HTTP target runs
proxy_target's own app behind a tiny ASGI counter (responses that hand out a new `Mcp-Session-Id`, and
DELETEs; each proxy's backend URL carries `?via=NAME`, so its sessions are told apart from the direct
clients'); the stdio targets run proxy_target's server through `stdio_target.py`, which first appends
its PID to a file of that target. For mcplane one backend session per client session is expected; one
per request would be a defect. The peers' counts are reported as they come.

The internal `--serve-http-target` mode is the HTTP wrapper.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
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
from _interrupt import run_interruptibly  # noqa: E402
from _measure import LatencySummary, cpu_jiffies, error_text, rotated, write_report  # noqa: E402
from mcp import Client  # noqa: E402
from mcp_types.version import LATEST_MODERN_VERSION, MODERN_PROTOCOL_VERSIONS  # noqa: E402

from tests.fixtures.proxy_target import build_app  # noqa: E402
from tests.support.processes import (  # noqa: E402
    LOOPBACK,
    PYTHON,
    ProcessHandle,
    async_running_process,
    free_port,
)

THIS_FILE: Final = Path(__file__).resolve()
SIDECAR_BIN: Final = PYTHON.parent / "mcplane-sidecar"
# The peers, each in its own venv (bench/peers/setup.sh): mcp-proxy 0.13 pins mcp<2, fastmcp brings its own.
MCP_PROXY_BIN: Final = REPO_ROOT / ".venv-bench-mcp-proxy" / "bin" / "mcp-proxy"
FASTMCP_PYTHON: Final = REPO_ROOT / ".venv-bench-fastmcp" / "bin" / "python"
FASTMCP_PROXY: Final = REPO_ROOT / "bench" / "peers" / "fastmcp_proxy.py"
BARE_RELAY: Final = REPO_ROOT / "bench" / "bare_relay.py"
STDIO_TARGET: Final = REPO_ROOT / "bench" / "stdio_target.py"
MCP_PATH: Final = "/mcp"
STATS_PATH: Final = "/bench-stats"
VIA_PARAM: Final = b"via="  # `?via=NAME` on a proxy's backend URL: whose backend sessions these are
ECHO_TEXT: Final = "hello mcplane"
DEFAULT_LEVELS: Final = (1, 20, 100)
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")

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
# Before each target's turn the machine must have settled: at most this share of its CPUs busy over one
# window, waiting at most SETTLE_CPU_LIMIT_S. A peer's work outlives its turn (fastmcp's proxy closing a
# backend session per request, the shared backend closing them), and it must not land on the next target.
SETTLE_CPU_BUSY: Final = 0.25
SETTLE_CPU_WINDOW_S: Final = 0.1
SETTLE_CPU_LIMIT_S: Final = 2.0

EraName = Literal["2025", "2026"]
ERA_MODES: Final[dict[EraName, str]] = {"2025": "legacy", "2026": "auto"}
ProxyName = Literal["none", "mcplane", "bare-relay", "mcp-proxy", "fastmcp"]
BackendKind = Literal["http", "stdio"]
# The sidecar's era label for the one backend session through which it serves 2026-07-28 stateless
# requests to a handshake-only backend (core/bridge.py).
BRIDGE_ERA: Final = "bridge"


def _stdio_default(setting: str) -> int | None:
    """A default of the stdio sidecar's settings, if this sidecar version has that setting."""
    try:
        from mcplane_sidecar.config import StdioBackendConfig  # noqa: PLC0415 (optional, read-only)

        default = StdioBackendConfig.model_fields[setting].default
    except (ImportError, KeyError):
        return None
    return default if isinstance(default, int) else None


# The stdio sidecar's warm pool for 2026-07-28 requests, and the processes it starts ahead for new sessions.
STDIO_POOL_SIZE: Final = _stdio_default("stateless_pool_size")
STDIO_WARM_SPARES: Final = _stdio_default("warm_spares")


# --- the backend wrappers (run as subprocesses of this script) -------------------------------------------


class SessionCountingApp:
    """Pure ASGI wrapper counting the MCP sessions a Streamable HTTP server hands out and closes."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # Per caller: a proxy's backend URL carries `?via=NAME`; direct clients come without.
        self.stats: dict[str, dict[str, int]] = {}

    def caller(self, query: bytes) -> dict[str, int]:
        via = "direct"
        for part in query.split(b"&"):
            if part.startswith(VIA_PARAM):
                via = part[len(VIA_PARAM) :].decode(errors="replace")
        return self.stats.setdefault(via, {"posts": 0, "new_sessions": 0, "deletes": 0})

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
        stats = self.caller(scope.get("query_string", b""))
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
    # Unlimited sessions: idle_sessions.py holds 10,050 through one sidecar, past the SDK's default cap.
    app = SessionCountingApp(build_app(max_sessions=None))
    uvicorn.run(app, host=LOOPBACK, port=port, log_level="warning")


# --- statistics ---------------------------------------------------------------------------------------


# --- targets and results ------------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    label: str
    proxy: ProxyName
    backend: BackendKind
    url: str
    metrics_url: str | None  # the sidecar's /metrics; None for direct and the peers
    pid: int | None = None  # the proxy process; None for direct
    via: str = "direct"  # HTTP backend: the tag on this target's backend requests
    pid_file: Path | None = None  # stdio backend: the PIDs of the server processes it started

    @property
    def pooled_stdio(self) -> bool:
        """mcplane's stdio sidecar keeps a warm pool of processes for 2026-07-28 requests."""
        return self.proxy == "mcplane" and self.backend == "stdio"


@dataclass
class Usage:
    """One process's CPU time and memory, from /proc."""

    cpu_s: float
    rss_kib: int
    hwm_kib: int  # VmHWM: the peak resident set so far


def proc_usage(pid: int | None) -> Usage | None:
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

    def kib(name: str) -> int:
        return int(fields.get(name, "0 kB").split()[0])

    # After the ")" of the command: state is field 3 of stat(5), utime and stime fields 14 and 15.
    cpu = (int(stat[11]) + int(stat[12])) / CLOCK_TICKS
    return Usage(cpu_s=round(cpu, 2), rss_kib=kib("VmRSS"), hwm_kib=kib("VmHWM"))


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
    # The proxy process's CPU time from the first loaded slice to the last, over this target's calls.
    proxy_cpu_s: float | None = None
    proxy_cpu_ms_per_call: float | None = None
    # The same for the benchmark client (this process) and, HTTP backend only, proxy_target, taken around
    # this target's own slices: on a shared machine a proxy also costs its neighbours CPU (contention).
    client_cpu_ms_per_call: float | None = None
    backend_cpu_ms_per_call: float | None = None
    ratio_calls_per_s: float | None = None  # to direct, same era and concurrency
    ratio_median: float | None = None
    ratio_p95: float | None = None


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
    throughput: list[ThroughputResult] = field(default_factory=list)  # one per concurrency level
    session_checks: list[SessionCheck] = field(default_factory=list)  # around each level
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
    def __init__(self, http: httpx.AsyncClient, target_stats_url: str) -> None:
        self.http = http
        self.target_stats_url = target_stats_url

    async def sidecar_metrics(self, target: Target) -> dict[str, float] | None:
        if target.metrics_url is None:
            return None
        response = await self.http.get(target.metrics_url)
        response.raise_for_status()
        return parse_prometheus(response.text)

    async def read(self, target: Target) -> Counters:
        sidecar = await self.sidecar_metrics(target)
        if target.pid_file is not None:
            pids = frozenset(read_pids(target.pid_file))
            live = frozenset(pid for pid in pids if pid_alive(pid))
            return Counters(sidecar, len(pids), len(pids) - len(live), len(live), pids, live)
        response = await self.http.get(self.target_stats_url)
        response.raise_for_status()
        stats = response.json().get(target.via, {})
        opened, closed = int(stats.get("new_sessions", 0)), int(stats.get("deletes", 0))
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


class MachineSettling:
    """Waits for the CPUs to go quiet between targets, and keeps count of how long that took."""

    def __init__(self) -> None:
        self.waits = 0
        self.waited_s = 0.0
        self.gave_up = 0  # waits that hit SETTLE_CPU_LIMIT_S with the machine still busy

    async def settle(self) -> None:
        started = time.perf_counter()
        before = cpu_jiffies()
        settled = before is None  # nothing to measure with: do not wait
        while not settled and time.perf_counter() - started < SETTLE_CPU_LIMIT_S:
            await anyio.sleep(SETTLE_CPU_WINDOW_S)
            now = cpu_jiffies()
            if now is None or before is None:
                break
            busy, total = now[0] - before[0], now[1] - before[1]
            settled = total > 0 and busy / total <= SETTLE_CPU_BUSY
            before = now
        self.gave_up += not settled
        self.waits += 1
        self.waited_s += time.perf_counter() - started

    def summary(self) -> dict[str, float]:
        return {
            "waits": self.waits,
            "waited_s": round(self.waited_s, 1),
            "gave_up": self.gave_up,
            "limit_s": SETTLE_CPU_LIMIT_S,
        }


SETTLING: Final = MachineSettling()


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
                await SETTLING.settle()
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
    legs: Sequence[Leg],
    targets: dict[str, Target],
    reader: CounterReader,
    sessions: int,
    duration: float,
    *,
    backend_pid: int | None,
) -> None:
    """Open `sessions` clients per target (one target after the other), then load them in rotating slices.

    Counters are read before the first session opens and after the last one closed, for the session check.
    `backend_pid`: the HTTP backend (proxy_target); its CPU is counted per slice for the targets it serves.
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
            cpu_before = {leg.target: proc_usage(targets[leg.target].pid) for leg in legs}
            client_cpu = dict.fromkeys(runs, 0.0)
            backend_cpu = dict.fromkeys(runs, 0.0)
            for round_no in range(rounds):
                for leg in rotated(legs, round_no):
                    await SETTLING.settle()
                    client_before, backend_before = time.process_time(), proc_usage(backend_pid)
                    await runs[leg.target].run_slice(duration / rounds)
                    client_cpu[leg.target] += time.process_time() - client_before
                    backend_after = proc_usage(backend_pid)
                    if backend_before is not None and backend_after is not None:
                        backend_cpu[leg.target] += backend_after.cpu_s - backend_before.cpu_s
            cpu_after = {leg.target: proc_usage(targets[leg.target].pid) for leg in legs}
            for run in runs.values():
                run.close()
    for leg in legs:
        target = targets[leg.target]
        result = runs[leg.target].result()
        used_before, used_after = cpu_before[leg.target], cpu_after[leg.target]
        if used_before is not None and used_after is not None:
            result.proxy_cpu_s = round(used_after.cpu_s - used_before.cpu_s, 2)
            if result.calls:
                result.proxy_cpu_ms_per_call = round(1000 * result.proxy_cpu_s / result.calls, 3)
        if result.calls:
            result.client_cpu_ms_per_call = round(1000 * client_cpu[leg.target] / result.calls, 3)
            if target.backend == "http":
                result.backend_cpu_ms_per_call = round(1000 * backend_cpu[leg.target] / result.calls, 3)
        leg.throughput.append(result)
        after = await settled(reader, target, before[leg.target], pool_allowance(target, leg.era))
        leg.session_checks.append(session_check(target, leg.era, before[leg.target], after, result))


async def quiesced(reader: CounterReader, target: Target) -> Counters:
    """Counters once no backend session is open beyond what may stay (bounded wait)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        now = await reader.read(target)
        if target.proxy not in ("none", "mcplane"):
            return now  # the peers keep backend processes or sessions of their own; nothing to wait for
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
        if target.proxy not in ("none", "mcplane"):
            return now
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
    """Backend processes the stdio sidecar may keep: its warm spares, and its pool for 2026-07-28 requests
    (era None: any era)."""
    if not target.pooled_stdio:
        return 0
    pool = (STDIO_POOL_SIZE or 0) if era in ("2026", None) else 0
    return pool + (STDIO_WARM_SPARES or 0)


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
    if target.pid_file is not None:  # only the processes this phase started (earlier ones may be exiting)
        closed = len((after.pids - before.pids) - after.live_pids)
    if target.proxy not in ("none", "mcplane"):
        return peer_check(target, after, tp, opened, closed)
    by_era, active, others = sidecar_deltas(before.sidecar, after.sidecar)
    expected = tp.sessions if era == "2025" else 0  # 2026-07-28 is stateless: no client sessions
    all_eras = dict(by_era)
    bridge_opened = int(by_era.pop(BRIDGE_ERA, 0.0))
    client_delta = sum(by_era.values())
    pooled = target.pooled_stdio and era == "2026"
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


def peer_check(
    target: Target, after: Counters, tp: ThroughputResult, opened: int | None, closed: int | None
) -> SessionCheck:
    """A peer's backend sessions (HTTP) or backend processes (stdio), reported as they are, not judged."""
    calls = tp.calls + tp.sessions * WORKER_WARMUP_CALLS
    what = "backend processes started" if target.backend == "stdio" else "backend sessions opened"
    verdict = f"{opened if opened is not None else '?'} {what} for {tp.sessions} client sessions"
    if opened is not None and target.backend == "http" and opened >= calls > 0:
        verdict += " (one per request)"
    if target.backend == "stdio":
        verdict += f"; {len(after.live_pids)} running"
    return SessionCheck(
        client_sessions=tp.sessions,
        calls=calls,
        sidecar_sessions_total_delta=None,
        sidecar_sessions_total_delta_by_era={},
        backend_sessions_delta=opened,
        backend_sessions_closed_delta=closed,
        sidecar_sessions_active_after={},
        other_sidecar_counter_deltas={},
        verdict=verdict,
    )


def whole_run_totals(
    targets: Sequence[Target], initial: dict[str, Counters], final: dict[str, Counters]
) -> dict[str, dict[str, Any]]:
    """Over the whole run, per sidecar: client sessions opened, sessions_total, backend sessions opened."""
    totals: dict[str, dict[str, Any]] = {}
    for t in targets:
        if t.proxy != "mcplane":
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
        seq, base_seq = leg.sequential, base.sequential
        leg.ratios_to_direct = {
            "setup_median": ratio(
                leg.setup.median_ms if leg.setup else None, base.setup.median_ms if base.setup else None
            ),
            "sequential_median": ratio(
                seq.median_ms if seq else None, base_seq.median_ms if base_seq else None
            ),
            "sequential_p95": ratio(seq.p95_ms if seq else None, base_seq.p95_ms if base_seq else None),
            "sequential_p99": ratio(seq.p99_ms if seq else None, base_seq.p99_ms if base_seq else None),
        }
        base_levels = {tp.sessions: tp for tp in base.throughput}
        for tp in leg.throughput:
            base_tp = base_levels.get(tp.sessions)
            if base_tp is None:
                continue
            tp.ratio_calls_per_s = ratio(tp.calls_per_s, base_tp.calls_per_s)
            tp.ratio_median = ratio(
                tp.latency.median_ms if tp.latency else None,
                base_tp.latency.median_ms if base_tp.latency else None,
            )
            tp.ratio_p95 = ratio(
                tp.latency.p95_ms if tp.latency else None, base_tp.latency.p95_ms if base_tp.latency else None
            )


def cell(value: float | None, ratio_value: float | None = None, digits: int = 2) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text} (x{ratio_value:.2f})" if ratio_value is not None else text


def markdown(report: dict[str, Any], legs: Sequence[Leg], labels: dict[str, str]) -> str:
    params = report["parameters"]
    env = report["environment"]
    settling = env["settling"]
    levels: list[int] = params["sessions"]
    lines = [
        "# mcplane sidecar and peers: latency, throughput, set-up, CPU and memory",
        "",
        f"{report['started_at']}, {env['cpus']} CPUs, load average {env['loadavg_start']} at start and "
        f"{env['loadavg_end']} at the end; Python {env['python']}, mcp {env['mcp']}; peers: "
        f"{', '.join(f'{k} {v}' for k, v in env['peers'].items()) or 'none'}; "
        f"{params['calls']} sequential calls after {params['warmup']} warm-up, "
        f"{', '.join(map(str, levels))} concurrent sessions x {params['duration']} s per target for "
        f"throughput (in {SLICE_S:g} s slices rotating over the targets), "
        f"{params['setups']} set-ups; total {report['runtime_s']} s.",
        "",
        f"Before each target's turn (sequential rounds, throughput slices) the run waited for the CPUs to "
        f"settle (at most {SETTLE_CPU_BUSY:.0%} busy over {SETTLE_CPU_WINDOW_S:g} s, for up to "
        f"{SETTLE_CPU_LIMIT_S:g} s): {settling['waits']} waits, {settling['waited_s']} s in all, "
        f"{settling['gave_up']} still busy at the limit.",
        "",
        "Times in ms; (xn) is the ratio to direct in the same era (and at the same concurrency).",
        "",
        "| era | target | protocol | set-up p50 | seq p50 | seq p95 | seq p99 | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for leg in legs:
        name = labels[leg.target]
        if leg.status != "ok":
            lines.append(f"| {leg.era} | {name} | {leg.status} | {md_escape(leg.detail or '')} | | | | |")
            continue
        r = leg.ratios_to_direct
        seq = leg.sequential
        err_parts = [f"{k}: {md_escape(v)}" for k, v in leg.phase_errors.items()]
        for tp in leg.throughput:
            if tp.errors:
                err_parts.append(
                    f"{tp.errors} calls failed at {tp.sessions}: {md_escape(tp.first_error or '')}"
                )
        cells = [
            leg.era,
            name,
            leg.protocol_version or "?",
            cell(leg.setup.median_ms if leg.setup else None, r.get("setup_median"), 1),
            cell(seq.median_ms if seq else None, r.get("sequential_median")),
            cell(seq.p95_ms if seq else None, r.get("sequential_p95")),
            cell(seq.p99_ms if seq else None, r.get("sequential_p99")),
            "; ".join(err_parts) or "0",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Throughput: calls/s across all sessions, and the median / p95 latency of a call under that load "
        "(ms). Proxy CPU: the proxy process's CPU time per call over the loaded slices (ms).",
        "",
        "| era | target | "
        + " | ".join(f"{n} sess calls/s | {n} sess p50 | {n} sess p95 | {n} sess CPU/call" for n in levels)
        + " |",
        "|---|---|" + "---|---|---|---|" * len(levels),
    ]
    for leg in legs:
        if leg.status != "ok":
            continue
        by_level = {tp.sessions: tp for tp in leg.throughput}
        parts: list[str] = []
        for n in levels:
            level = by_level.get(n)
            if level is None:
                parts += ["-"] * 4
                continue
            lat = level.latency
            parts += [
                cell(level.calls_per_s, level.ratio_calls_per_s, 0),
                cell(lat.median_ms if lat else None, level.ratio_median),
                cell(lat.p95_ms if lat else None, level.ratio_p95),
                cell(level.proxy_cpu_ms_per_call, None, 3),
            ]
        lines.append(f"| {leg.era} | {labels[leg.target]} | " + " | ".join(parts) + " |")
    lines += [
        "",
        "Proxy processes over the whole run (both eras): CPU seconds (user + system) and peak RSS (VmHWM); "
        "the stdio backends they start are separate processes and not included.",
        "",
        "| target | pid | CPU s | peak RSS MiB | RSS at end MiB |",
        "|---|---|---|---|---|",
    ]
    for key, usage in report["process_usage"].items():
        if usage is None:
            continue
        lines.append(
            f"| {labels.get(key, key)} | {usage['pid']} | {usage['cpu_s']:.1f} | "
            f"{usage['hwm_kib'] / 1024:.1f} | {usage['rss_kib'] / 1024:.1f} |"
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
        for check in leg.session_checks:
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
                f" (includes the warm pool of up to {STDIO_POOL_SIZE} processes for 2026-07-28, and the"
                f" {STDIO_WARM_SPARES or 0} started ahead for new sessions)."
                if key == "mcplane-stdio" and STDIO_POOL_SIZE
                else "."
            )
        )
    lines += [
        "",
        "Set-up / teardown detail (ms, median of sequential set-ups; concurrent = the sessions of the "
        f"largest throughput level, {max(levels)}, opened at once):",
        "",
        "| era | target | enter p50 | enter p95 | exit p50 | concurrent enter p50 | concurrent enter max |",
        "|---|---|---|---|---|---|---|",
    ]
    for leg in legs:
        if leg.status != "ok":
            continue
        largest = max(leg.throughput, key=lambda tp: tp.sessions, default=None)
        conc = largest.concurrent_setup if largest else None
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
    sessions: list[int]
    duration: float
    setups: int
    out: Path
    eras: list[EraName]
    peers: bool


def peer_versions() -> dict[str, str]:
    """The installed peers (their venvs' metadata); a peer without its venv is left out."""
    found: dict[str, str] = {}
    for name, python in (
        ("mcp-proxy", MCP_PROXY_BIN.parent / "python"),
        ("fastmcp", FASTMCP_PYTHON),
    ):
        if not python.exists():
            continue
        code = f"import importlib.metadata as m; print(m.version({name!r}), m.version('mcp'))"
        try:
            out = subprocess.run(
                [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True
            ).stdout.split()
            found[name] = f"{out[0]} (mcp {out[1]})"
        except (OSError, subprocess.SubprocessError, IndexError):
            continue
    return found


@asynccontextmanager
async def started_targets(
    log_dir: Path, peers: dict[str, str]
) -> AsyncIterator[tuple[list[Target], str, dict[str, int]]]:
    """Start proxy_target (HTTP) and every proxy in front of it or of a stdio proxy_target; stop them on exit.

    Yields the targets, the backend's stats URL and the PIDs of the processes to sample (proxies, backend).
    """
    target_port = free_port()
    target_url = f"http://{LOOPBACK}:{target_port}{MCP_PATH}"

    def stdio_command(key: str) -> tuple[list[str], Path]:
        pid_file = log_dir / f"{key}-backend-pids.txt"
        return [str(PYTHON), str(STDIO_TARGET), str(pid_file)], pid_file

    async with AsyncExitStack() as stack:

        async def start(argv: Sequence[str | os.PathLike[str]], port: int, label: str) -> ProcessHandle:
            return await stack.enter_async_context(
                async_running_process(
                    argv, port=port, log_dir=log_dir, label=label, stop_timeout=PROCESS_STOP_TIMEOUT_S
                )
            )

        backend = await start(
            [PYTHON, THIS_FILE, "--serve-http-target", str(target_port)], target_port, "proxy_target-http"
        )
        targets = [Target("direct", "direct", "none", "http", target_url, None)]

        async def add(
            key: str, label: str, proxy: ProxyName, argv: list[str | os.PathLike[str]], port: int, **more: Any
        ) -> None:
            handle = await start(argv, port, key)
            metrics = f"{handle.base_url}/metrics" if proxy == "mcplane" else None
            url = f"{handle.base_url}{MCP_PATH}"
            targets.append(Target(key, label, proxy, url=url, metrics_url=metrics, pid=handle.pid, **more))

        port = free_port()
        await add(
            "mcplane-http",
            "mcplane (http backend)",
            "mcplane",
            [
                SIDECAR_BIN,
                f"{target_url}?via=mcplane",
                "--transport",
                "http",
                "--port",
                str(port),
                "--transport-type",
                "http",
            ],
            port,
            backend="http",
            via="mcplane",
        )
        port = free_port()
        await add(
            "bare-relay-http",
            "bare relay (uvicorn + aiohttp, no checks)",
            "bare-relay",
            [PYTHON, BARE_RELAY, f"{target_url}?via=bare-relay", "--port", str(port)],
            port,
            backend="http",
            via="bare-relay",
        )
        if "fastmcp" in peers:
            port = free_port()
            await add(
                "fastmcp-http",
                "fastmcp proxy (http backend)",
                "fastmcp",
                [FASTMCP_PYTHON, FASTMCP_PROXY, "--port", str(port), "--url", f"{target_url}?via=fastmcp"],
                port,
                backend="http",
                via="fastmcp",
            )
        command, pid_file = stdio_command("mcplane-stdio")
        port = free_port()
        await add(
            "mcplane-stdio",
            "mcplane (stdio backend)",
            "mcplane",
            [SIDECAR_BIN, "--transport", "http", "--port", str(port), "--", *command],
            port,
            backend="stdio",
            pid_file=pid_file,
        )
        if "mcp-proxy" in peers:
            command, pid_file = stdio_command("mcp-proxy-stdio")
            port = free_port()
            await add(
                "mcp-proxy-stdio",
                "mcp-proxy 0.13 (stdio backend)",
                "mcp-proxy",
                [MCP_PROXY_BIN, "--port", str(port), "--host", LOOPBACK, "--", *command],
                port,
                backend="stdio",
                pid_file=pid_file,
            )
        if "fastmcp" in peers:
            command, pid_file = stdio_command("fastmcp-stdio")
            port = free_port()
            await add(
                "fastmcp-stdio",
                "fastmcp proxy (stdio backend)",
                "fastmcp",
                [FASTMCP_PYTHON, FASTMCP_PROXY, "--port", str(port), "--", *command],
                port,
                backend="stdio",
                pid_file=pid_file,
            )
        print(
            f"started proxy_target pid {backend.pid}; "
            + ", ".join(f"{t.key} pid {t.pid}" for t in targets if t.pid is not None)
            + f"; logs in {log_dir}",
            file=sys.stderr,
        )
        pids = {t.key: t.pid for t in targets if t.pid is not None} | {"backend-http": backend.pid}
        yield targets, f"http://{LOOPBACK}:{target_port}{STATS_PATH}", pids


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
    peers = peer_versions() if options.peers else {}
    labels: dict[str, str] = {}
    run_totals: dict[str, dict[str, Any]] = {}
    usage: dict[str, dict[str, Any] | None] = {}
    pid_files: list[Path] = []
    try:
        async with (
            started_targets(log_dir, peers) as (targets, stats_url, pids),
            httpx.AsyncClient(timeout=10) as http,
        ):
            pid_files = [t.pid_file for t in targets if t.pid_file is not None]
            reader = CounterReader(http, stats_url)
            labels = {t.key: t.label for t in targets} | {"backend-http": "proxy_target (http backend)"}
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
                for level in options.sessions:
                    throughput = partial(
                        measure_throughput,
                        ok,
                        by_key,
                        reader,
                        level,
                        options.duration,
                        backend_pid=pids["backend-http"],
                    )
                    try:
                        await timed(f"throughput, {level} sessions", throughput)
                    except Exception as exc:
                        for leg in ok:
                            leg.phase_errors[f"throughput {level}"] = error_text(exc)
            finals = {
                t.key: await settled(reader, t, initial[t.key], pool_allowance(t, None)) for t in targets
            }
            run_totals = whole_run_totals(targets, initial, finals)
            for key, pid in pids.items():
                sample = proc_usage(pid)
                usage[key] = {"pid": pid, **asdict(sample)} if sample else None
    finally:
        leftovers = [pid for pid_file in pid_files for pid in read_pids(pid_file) if pid_alive(pid)]
        for pid in leftovers:  # stdio backends this run started that outlived their proxy
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
            "peers": peers,
            "platform": platform.platform(),
            "logs": str(log_dir),
            "settling": SETTLING.summary(),
        },
        "targets": labels,
        "legs": [asdict(leg) for leg in legs],
        "process_usage": usage,
        "run_totals": run_totals,
        "leftover_stdio_backends_killed": leftovers,
    }
    report["markdown"] = markdown(report, legs, labels)
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1000, help="timed sequential calls per target and era")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls before the sequential run")
    parser.add_argument(
        "--sessions",
        type=int,
        action="append",
        help="a concurrency level for throughput (repeatable; default "
        + ", ".join(map(str, DEFAULT_LEVELS))
        + ")",
    )
    parser.add_argument(
        "--duration", type=float, default=3.0, help="seconds of load per target at each concurrency level"
    )
    parser.add_argument("--no-peers", action="store_true", help="only direct and mcplane, no peers")
    parser.add_argument("--setups", type=int, default=10, help="session set-ups timed per target and era")
    parser.add_argument(
        "--era", choices=["2025", "2026"], action="append", help="limit to an era (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="results directory")
    parser.add_argument("--serve-http-target", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("calls", "setups"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if any(level < 1 for level in args.sessions or ()):
        parser.error("--sessions must be at least 1")
    if args.warmup < 0 or not 0 < args.duration <= 60:
        parser.error("--warmup must be >= 0 and --duration in (0, 60]")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_http_target is not None:
        serve_http_target(args.serve_http_target)
        return
    options = Options(
        calls=args.calls,
        warmup=args.warmup,
        sessions=sorted(set(args.sessions or DEFAULT_LEVELS)),
        duration=args.duration,
        setups=args.setups,
        out=args.out,
        eras=args.era or ["2025", "2026"],
        peers=not args.no_peers,
    )
    report = run_interruptibly(run, options)
    write_report(options.out, "sidecar_latency", report)


if __name__ == "__main__":
    main()
