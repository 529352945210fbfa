"""Latency and throughput over asyncmcp's async transports: no proxy, mcplane, and asyncmcp's own proxy.

    .venv/bin/python bench/async_latency.py [--calls N] [--sessions 50] [--transport sqs ...] [--out DIR]

Everything runs on 127.0.0.1 in one run on one machine: moto (started here), and per transport (SQS, SNS+SQS,
Webhook) one REAL asyncmcp 0.2.1 fixture server (`tests/fixtures/asyncmcp_server.py`) per target, so that no
target's sessions load another target's server. The targets:

- no proxy:        asyncmcp's own client (`tests/fixtures/asyncmcp_client.py`: mcp 1.30 `ClientSession` over
                   asyncmcp's client transport, in `.venv-asyncmcp`) -> the asyncmcp server;
- mcplane legacy:  the official mcp 2.x client (`mode="legacy"`, 2025 sessions) -> `mcplane-sidecar --config`
                   (front Streamable HTTP) -> the asyncmcp server;
- mcplane auto:    the same client in its default auto mode (2026-07-28 stateless requests, which the sidecar
                   bridges onto one handshake session of the asyncmcp server);
- asyncmcp proxy:  the official client (`mode="legacy"`) -> `asyncmcp.proxy.create_proxy_server(...)`, run in
                   `.venv-asyncmcp` -> the asyncmcp server.

Per transport and target:

1. session set-up: the time to open a session (no proxy: the client script's `initialize_ms`; otherwise the
   time to enter `Client(...)`);
2. sequential `tools/call echo` on one session after a warm-up: median, p95, p99. The no-proxy figures are the
   client script's own (`--calls N`; it times each `call_tool` with `perf_counter`); the script runs once per
   round, and its first calls in each process are dropped as warm-up. Rounds rotate over the targets;
3. throughput: `--sessions` concurrent sessions, each its own client, all opened first, then each making
   `--tp-calls` sequential calls that echo its own unique text: correct replies per second, median latency
   under that load, and how many replies were WRONG (another text than the one sent), failed, or never made.
   The no-proxy case runs that many asyncmcp clients in one `.venv-asyncmcp` process, each with its own reply
   channel, as asyncmcp's client needs (SQS: its own queue; SNS+SQS: its own topic and queue; Webhook: its own
   callback server).

Every figure is also given as a ratio to the no-proxy client of the same transport; mcplane's target is a
sequential median within 10% of it. asyncmcp's proxy runs as shipped, except that its backend transport's long
poll is tuned like the fixture client's (1 s wait, 0.05 s pause after an empty receive, instead of 20 s and
5 s); whatever fails through it is recorded with the error text, not fatal.

The internal `--asyncmcp-side proxy|load SPEC` modes run in `.venv-asyncmcp` (asyncmcp 0.2.1, mcp 1.30): they
are dispatched before this file imports anything of the project's own venv, and load asyncmcp and mcp 1.x
with importlib.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

import anyio  # in both venvs
from _interrupt import run_interruptibly
from _measure import LatencySummary, error_text, rotated, write_report  # stdlib only: both venvs too

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # for tests.fixtures / tests.support, when run as a script

THIS_FILE: Final = Path(__file__).resolve()
LOOPBACK: Final = "127.0.0.1"
ASYNCMCP_SIDE: Final = "--asyncmcp-side"
CALL_TIMEOUT_S: Final = 10.0  # no single request may hang the run (asyncmcp's proxy itself waits 300 s)
MAX_ERRORS_PER_SESSION: Final = 3  # a broken target must not spend the run on timeouts
THROUGHPUT_TIMEOUT_S: Final = 60.0  # hard cap of one target's throughput leg (set-up, calls)
BACKEND_WAIT_S: Final = 1  # asyncmcp's long poll: its servers here, and its client transport in the proxy
BACKEND_POLL_S: Final = 0.05  # asyncmcp's pause after an empty receive (its default is 5 s)

# (reply text, is_error) of one `echo` call
EchoFn = Callable[[str], Awaitable[tuple[str, bool]]]


# --- shared by both sides: driving N concurrent sessions ----------------------------------------------------


class LoadTally:
    """Counts of one throughput leg: every session opens, warms up, waits for the common start, then calls."""

    def __init__(self, sessions: int, calls: int) -> None:
        self.sessions = sessions
        self.calls = calls
        self.latencies: list[float] = []
        self.setups: list[float] = []
        self.ok = 0
        self.wrong = 0
        self.failed_calls = 0  # error results, and calls that raised (timeouts, transport errors)
        self.raised = 0
        self.failed_sessions = 0
        self.teardown_errors = 0
        self.first_error: str | None = None
        self.wrong_examples: list[str] = []
        self.ready = 0
        self.all_ready = anyio.Event()
        self.start = anyio.Event()
        self.started_at = 0.0
        self.last = 0.0
        self.timed_out = False

    def mark_ready(self) -> None:
        self.ready += 1
        if self.ready >= self.sessions:
            self.all_ready.set()

    def begin(self) -> None:
        self.started_at = self.last = time.perf_counter()
        self.start.set()

    def note_error(self, text: str) -> None:
        if self.first_error is None:
            self.first_error = text

    def note_wrong(self, expected: str, got: str) -> None:
        self.wrong += 1
        if len(self.wrong_examples) < 3:
            self.wrong_examples.append(f"sent {expected!r}, got {got[:80]!r}")

    def record(self, elapsed: float, expected: str, got: str, is_error: bool) -> None:
        self.last = max(self.last, time.perf_counter())
        self.latencies.append(elapsed)
        if is_error:
            self.failed_calls += 1
            self.note_error(f"error result: {got[:200]}")
        elif got != expected:
            self.note_wrong(expected, got)
        else:
            self.ok += 1

    def raw(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "calls_per_session": self.calls,
            "failed_sessions": self.failed_sessions,
            "latencies": self.latencies,
            "setups": self.setups,
            "ok": self.ok,
            "wrong": self.wrong,
            "failed_calls": self.failed_calls,
            "not_done": self.sessions * self.calls - len(self.latencies) - self.raised,
            "teardown_errors": self.teardown_errors,
            "wall_s": max(0.0, self.last - self.started_at) if self.started_at else 0.0,
            "first_error": self.first_error,
            "wrong_examples": self.wrong_examples,
            "timed_out": self.timed_out,
        }


async def drive_session(load: LoadTally, number: int, session: AbstractAsyncContextManager[EchoFn]) -> None:
    """Open `session`, warm it up, wait for the common start, make `load.calls` calls with unique texts."""
    ready = False
    try:
        began = time.perf_counter()
        async with session as echo:
            load.setups.append(time.perf_counter() - began)
            warm = f"warm-{number}"
            got, is_error = await echo(warm)
            if is_error:
                load.note_error(f"warm-up error result: {got[:200]}")
            elif got != warm:
                load.note_wrong(warm, got)
            ready = True
            load.mark_ready()
            await load.start.wait()
            own_errors = 0
            for call in range(load.calls):
                expected = f"s{number}-c{call}"
                began = time.perf_counter()
                try:
                    got, is_error = await echo(expected)
                except Exception as exc:
                    load.failed_calls += 1
                    load.raised += 1
                    load.note_error(error_text(exc))
                    own_errors += 1
                    if own_errors >= MAX_ERRORS_PER_SESSION:
                        return
                    continue
                load.record(time.perf_counter() - began, expected, got, is_error)
    except Exception as exc:
        load.note_error(error_text(exc))
        if ready:
            load.teardown_errors += 1
        else:
            load.failed_sessions += 1
            load.mark_ready()


async def run_load(
    load: LoadTally, sessions: Sequence[AbstractAsyncContextManager[EchoFn]], limit: float
) -> None:
    """All sessions at once; the calls start when every session is open (or failed); bounded by `limit`."""
    with anyio.move_on_after(limit) as scope:
        async with anyio.create_task_group() as tg:
            for number, session in enumerate(sessions):
                tg.start_soon(drive_session, load, number, session)
            await load.all_ready.wait()
            load.begin()
    load.timed_out = scope.cancelled_caught


# --- the asyncmcp side (runs in .venv-asyncmcp: asyncmcp 0.2.1 and mcp 1.30, loaded with importlib) ---------


def serve_asyncmcp_proxy(spec: dict[str, Any]) -> None:
    """asyncmcp's own proxy as its README shows it: `create_proxy_server(...)`, then `run()`."""
    asyncmcp = importlib.import_module("asyncmcp")
    boto3 = importlib.import_module("boto3")

    def aws(service: str) -> Any:
        return boto3.client(service, endpoint_url=spec["endpoint_url"], region_name=spec["region"])

    tuning = {"wait_time_seconds": BACKEND_WAIT_S, "poll_interval_seconds": BACKEND_POLL_S}
    transport = spec["transport"]
    if transport == "sqs":
        backend = "sqs"
        config = asyncmcp.SqsClientConfig(
            read_queue_url=spec["request_queue_url"], response_queue_url=spec["response_queue_url"], **tuning
        )
        clients = {"sqs_client": aws("sqs")}
    elif transport == "sns-sqs":
        backend = "sns_sqs"
        config = asyncmcp.SnsSqsClientConfig(
            sqs_queue_url=spec["response_queue_url"], sns_topic_arn=spec["request_topic_arn"], **tuning
        )
        clients = {"sqs_client": aws("sqs"), "sns_client": aws("sns")}
    else:
        backend = "webhook"
        config = asyncmcp.WebhookClientConfig(server_url=spec["server_url"])
        clients = {}
    proxy = asyncmcp.create_proxy_server(
        backend_transport=backend,
        backend_config=config,
        backend_clients=clients,
        host=LOOPBACK,
        port=int(spec["port"]),
    )
    asyncio.run(proxy.run())


async def asyncmcp_load(spec: dict[str, Any]) -> dict[str, Any]:
    """`len(spec["clients"])` asyncmcp clients at once, each with its own session and reply channel.

    Each is asyncmcp's client transport exactly as `tests/fixtures/asyncmcp_client.py` opens it (its
    `open_streams`, from that script's own arguments) under an mcp 1.x `ClientSession`.
    """
    mcp = importlib.import_module("mcp")
    mcp_types = importlib.import_module("mcp.types")
    fixture = importlib.import_module("tests.fixtures.asyncmcp_client")
    client_argvs: list[list[str]] = spec["clients"]
    timeout = timedelta(seconds=float(spec["call_timeout"]))
    # asyncmcp's clients run boto3 in worker threads, a long poll each: room for all of them and their sends.
    anyio.to_thread.current_default_thread_limiter().total_tokens = 4 * len(client_argvs) + 10

    def text_of(result: Any) -> str:
        return "".join(b.text for b in result.content if isinstance(b, mcp_types.TextContent))

    @asynccontextmanager
    async def session(argv: list[str]) -> AsyncIterator[EchoFn]:
        args = fixture.parse_args(argv)
        info = mcp_types.Implementation(name=args.client_name, version="1")
        async with (
            fixture.open_streams(args) as (read, write),
            mcp.ClientSession(read, write, timeout, client_info=info) as client,
        ):
            await client.initialize()

            async def echo(text: str) -> tuple[str, bool]:
                result = await client.call_tool("echo", {"text": text})
                return text_of(result), bool(result.isError)

            yield echo

    load = LoadTally(len(client_argvs), int(spec["calls"]))
    cpu = time.process_time()
    await run_load(load, [session(argv) for argv in client_argvs], float(spec["phase_timeout"]))
    return {**load.raw(), "cpu_s": time.process_time() - cpu}


def asyncmcp_side_main(argv: Sequence[str]) -> int:
    role, raw_spec = argv
    spec: dict[str, Any] = json.loads(raw_spec)
    if role == "proxy":
        serve_asyncmcp_proxy(spec)
        return 0
    result = anyio.run(asyncmcp_load, spec)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__" and sys.argv[1:2] == [ASYNCMCP_SIDE]:
    sys.exit(asyncmcp_side_main(sys.argv[2:]))


# --- the project's side (.venv: mcp 2.x, the sidecar, moto) -------------------------------------------------

import httpx  # noqa: E402
import yaml  # noqa: E402
from mcp import Client  # noqa: E402
from mcp_types import Implementation, TextContent  # noqa: E402

from tests.support.aws import (  # noqa: E402
    ASYNCMCP_PYTHON,
    DUMMY_AWS_ENV,
    REGION,
    MotoServer,
    Queue,
    SnsSqsLayout,
    SqsLayout,
    asyncmcp_client_argv,
    asyncmcp_server,
    create_queue,
    create_topic,
    moto_server,
    require_asyncmcp_venv,
    sns_sqs_layout,
    subscribe_queue,
    unique_name,
)
from tests.support.processes import (  # noqa: E402
    PYTHON,
    ProcessHandle,
    async_running_process,
    free_port,
)

SIDECAR_BIN: Final = PYTHON.parent / "mcplane-sidecar"
Transport = Literal["sqs", "sns-sqs", "webhook"]
TRANSPORTS: Final[tuple[Transport, ...]] = ("sqs", "sns-sqs", "webhook")
TRANSPORT_LABELS: Final[dict[str, str]] = {"sqs": "SQS", "sns-sqs": "SNS+SQS", "webhook": "Webhook"}
TargetKey = Literal["no-proxy", "mcplane-legacy", "mcplane-auto", "asyncmcp-proxy"]
TARGET_LABELS: Final[dict[str, str]] = {
    "no-proxy": "no proxy (asyncmcp client)",
    "mcplane-legacy": "mcplane, legacy client",
    "mcplane-auto": "mcplane, auto client",
    "asyncmcp-proxy": "asyncmcp proxy, legacy client",
}
CLIENT_MODES: Final[dict[str, str]] = {
    "mcplane-legacy": "legacy",
    "mcplane-auto": "auto",
    "asyncmcp-proxy": "legacy",
}
NO_PROXY_DISCARD: Final = 5  # first timed calls of each no-proxy client process, dropped as warm-up
READY_TIMEOUT_S: Final = 30.0
PROCESS_STOP_TIMEOUT_S: Final = 10.0
# asyncmcp's proxy keeps a request that never got its answer for its hard-coded 300 s, and uvicorn waits
# for it on SIGTERM ("Waiting for background tasks to complete"): a short grace, then SIGKILL.
PROXY_STOP_TIMEOUT_S: Final = 3.0
CLIENT_PROCESS_SLACK_S: Final = 60.0  # beyond the leg's own limit, before a client process counts as hung
WATCHED_COUNTERS: Final = (
    "mcplane_backend_errors_total",
    "mcplane_dropped_messages_total",
    "mcplane_session_rejections_total",
    "mcplane_async_receive_errors_total",
    "mcplane_async_unknown_session_replies_total",
)


# --- statistics and results ---------------------------------------------------------------------------------


@dataclass
class ThroughputResult:
    sessions: int
    calls_per_session: int
    failed_sessions: int
    calls_ok: int
    wrong: int
    failed_calls: int
    not_done: int
    teardown_errors: int
    wall_s: float
    calls_per_s: float
    latency: LatencySummary | None
    setup: LatencySummary | None
    timed_out: bool
    first_error: str | None
    wrong_examples: list[str]
    # CPU time per correct reply over the whole leg (set-up, calls, teardown): the clients' process, and the
    # proxy's (mcplane's sidecar or asyncmcp's proxy; none without a proxy)
    client_cpu_ms_per_call: float | None = None
    proxy_cpu_ms_per_call: float | None = None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> ThroughputResult:
        wall = float(raw["wall_s"])
        return cls(
            sessions=int(raw["sessions"]),
            calls_per_session=int(raw["calls_per_session"]),
            failed_sessions=int(raw["failed_sessions"]),
            calls_ok=int(raw["ok"]),
            wrong=int(raw["wrong"]),
            failed_calls=int(raw["failed_calls"]),
            not_done=int(raw["not_done"]),
            teardown_errors=int(raw["teardown_errors"]),
            wall_s=round(wall, 3),
            calls_per_s=round(raw["ok"] / wall, 1) if wall > 0 else 0.0,
            latency=LatencySummary.maybe(raw["latencies"]),
            setup=LatencySummary.maybe(raw["setups"]),
            timed_out=bool(raw["timed_out"]),
            first_error=raw["first_error"],
            wrong_examples=list(raw["wrong_examples"]),
            client_cpu_ms_per_call=per_call(raw.get("cpu_s"), int(raw["ok"])),
        )


@dataclass
class Leg:
    transport: Transport
    target: TargetKey
    status: Literal["ok", "error"] = "ok"
    detail: str | None = None
    protocol_version: str | None = None
    setup: LatencySummary | None = None
    sequential: LatencySummary | None = None
    sequential_wrong: int = 0
    sequential_failed: int = 0
    throughput: ThroughputResult | None = None
    phase_errors: dict[str, str] = field(default_factory=dict)
    ratios_to_no_proxy: dict[str, float | None] = field(default_factory=dict)
    # raw samples, seconds (not written to JSON)
    setup_samples: list[float] = field(default_factory=list, repr=False)
    sequential_samples: list[float] = field(default_factory=list, repr=False)


# --- processes ----------------------------------------------------------------------------------------------


def process_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **DUMMY_AWS_ENV}


PROCESS_COUNTER: list[int] = [0]


async def run_asyncmcp_process(
    argv: Sequence[str], log_dir: Path, label: str, limit: float
) -> dict[str, Any]:
    """Run a `.venv-asyncmcp` script to completion (stopped by PID if it overruns or we are cancelled); the
    JSON object on its last stdout line."""
    PROCESS_COUNTER[0] += 1
    stem = log_dir / f"{label}-{PROCESS_COUNTER[0]}"
    out_path, err_path = stem.with_suffix(".out"), stem.with_suffix(".err")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = await anyio.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=process_env(),
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    try:
        with anyio.fail_after(limit):
            await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(2):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
    if process.returncode != 0:
        tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{label} exited with {process.returncode}: {' / '.join(tail)}")
    lines = out_path.read_text(errors="replace").strip().splitlines()
    if not lines:
        raise RuntimeError(f"{label} printed nothing; see {err_path}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@dataclass
class Rig:
    """One transport's running targets: three asyncmcp servers, the sidecar and asyncmcp's proxy."""

    transport: Transport
    moto: MotoServer
    no_proxy_client_args: Callable[[str], list[str]]  # client name -> fixture client arguments (no python)
    no_proxy_load_args: Callable[[int], list[list[str]]]  # n -> n clients' arguments, own reply channels
    sidecar: ProcessHandle
    proxy: ProcessHandle

    @property
    def urls(self) -> dict[str, str]:
        mcplane = f"{self.sidecar.base_url}/mcp"
        return {
            "mcplane-legacy": mcplane,
            "mcplane-auto": mcplane,
            "asyncmcp-proxy": f"{self.proxy.base_url}/mcp",
        }


@dataclass(frozen=True)
class RigParts:
    """What a transport's layout gives the rig: the no-proxy client's arguments, the sidecar's backend
    section, and the settings of asyncmcp's proxy."""

    client_args: Callable[[str], list[str]]
    load_args: Callable[[int], list[list[str]]]
    backend: dict[str, Any]
    proxy_spec: dict[str, Any]


def fixture_args(argv: list[str]) -> list[str]:
    """`asyncmcp_client_argv(...)` without the interpreter and the script."""
    return argv[2:]


def sqs_rig_parts(moto: MotoServer, stack: ExitStack, log_dir: Path) -> RigParts:
    url = moto.url
    no_proxy = SqsLayout(requests=create_queue(url), responses=create_queue(url))
    stack.enter_context(
        asyncmcp_server("sqs", endpoint_url=url, request_queue_url=no_proxy.requests.url, log_dir=log_dir)
    )
    mcplane_requests = create_queue(url)
    stack.enter_context(
        asyncmcp_server("sqs", endpoint_url=url, request_queue_url=mcplane_requests.url, log_dir=log_dir)
    )
    proxy_layout = SqsLayout(requests=create_queue(url), responses=create_queue(url))
    stack.enter_context(
        asyncmcp_server("sqs", endpoint_url=url, request_queue_url=proxy_layout.requests.url, log_dir=log_dir)
    )

    def client_args(name: str) -> list[str]:
        return fixture_args(asyncmcp_client_argv("sqs", endpoint_url=url, sqs=no_proxy, client_name=name))

    def load_args(n: int) -> list[list[str]]:
        replies = [create_queue(url, unique_name("bench-replies")) for _ in range(n)]
        return [
            fixture_args(
                asyncmcp_client_argv(
                    "sqs", endpoint_url=url, sqs=no_proxy, response_queue=queue, client_name=f"bench-{i}"
                )
            )
            for i, queue in enumerate(replies)
        ]

    backend = {
        "kind": "sqs",
        "aws": {"endpoint_url": url},
        "sqs": {"request_queue_url": mcplane_requests.url},
    }
    proxy_spec = {
        "request_queue_url": proxy_layout.requests.url,
        "response_queue_url": proxy_layout.responses.url,
    }
    return RigParts(client_args, load_args, backend, proxy_spec)


def sns_rig_parts(moto: MotoServer, stack: ExitStack, log_dir: Path) -> RigParts:
    url = moto.url
    layouts = [sns_sqs_layout(url, raw=False) for _ in range(3)]  # envelope delivery, asyncmcp's default
    for layout in layouts:
        stack.enter_context(
            asyncmcp_server(
                "sns-sqs",
                endpoint_url=url,
                request_queue_url=layout.server_queue.url,
                request_topic_arn=layout.request_topic,
                log_dir=log_dir,
            )
        )
    no_proxy, mcplane, proxy_layout = layouts

    def client_args(name: str) -> list[str]:
        argv = asyncmcp_client_argv("sns-sqs", endpoint_url=url, sns_sqs=no_proxy, client_name=name)
        return fixture_args(argv)

    def load_args(n: int) -> list[list[str]]:
        args: list[list[str]] = []
        for i in range(n):
            topic = create_topic(url, unique_name("bench-response"))
            queue: Queue = create_queue(url, unique_name("bench-consumer"))
            subscribe_queue(url, topic, queue, raw=False)
            own = SnsSqsLayout(no_proxy.request_topic, no_proxy.server_queue, topic, queue, raw=False)
            argv = asyncmcp_client_argv("sns-sqs", endpoint_url=url, sns_sqs=own, client_name=f"bench-{i}")
            args.append(fixture_args(argv))
        return args

    backend = {
        "kind": "sns-sqs",
        "aws": {"endpoint_url": url},
        "sqs": {"reply_queue_url": mcplane.client_queue.url},
        "sns": {
            "request_topic_arn": mcplane.request_topic,
            "reply_topic_arn": mcplane.response_topic,
            "subscribe_reply_queue": False,  # the layout subscribed it, as an operator would
        },
    }
    proxy_spec = {
        "request_topic_arn": proxy_layout.request_topic,
        "response_queue_url": proxy_layout.client_queue.url,
    }
    return RigParts(client_args, load_args, backend, proxy_spec)


def webhook_rig_parts(moto: MotoServer, stack: ExitStack, log_dir: Path, sidecar_port: int) -> RigParts:
    servers = [stack.enter_context(asyncmcp_server("webhook", log_dir=log_dir)) for _ in range(3)]
    no_proxy, mcplane, proxy_server = servers

    def client_args(name: str) -> list[str]:
        argv = asyncmcp_client_argv("webhook", server_url=no_proxy.webhook_url, client_name=name)
        return fixture_args(argv)

    def load_args(n: int) -> list[list[str]]:
        return [client_args(f"bench-{i}") for i in range(n)]

    backend = {
        "kind": "webhook",
        # the sidecar hosts the callbacks on its own front server
        "webhook": {
            "server_url": mcplane.webhook_url,
            "public_base_url": f"http://{LOOPBACK}:{sidecar_port}",
        },
    }
    return RigParts(client_args, load_args, backend, {"server_url": proxy_server.webhook_url})


@asynccontextmanager
async def started_rig(transport: Transport, moto: MotoServer, log_dir: Path) -> AsyncIterator[Rig]:
    sidecar_port, proxy_port = free_port(), free_port()
    with ExitStack() as sync_stack:
        if transport == "sqs":
            parts = sqs_rig_parts(moto, sync_stack, log_dir)
        elif transport == "sns-sqs":
            parts = sns_rig_parts(moto, sync_stack, log_dir)
        else:
            parts = webhook_rig_parts(moto, sync_stack, log_dir, sidecar_port)
        config = {
            "name": f"bench-{transport}",
            "server": {"host": LOOPBACK, "port": sidecar_port, "transport": "http"},
            "backend": parts.backend,
            "logging": {"level": "warning", "json": True},
        }
        config_path = log_dir / f"sidecar-{transport}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        spec = {
            "transport": transport,
            "endpoint_url": moto.url,
            "region": REGION,
            "port": proxy_port,
            **parts.proxy_spec,
        }
        async with AsyncExitStack() as stack:
            sidecar = await stack.enter_async_context(
                async_running_process(
                    [SIDECAR_BIN, "--config", config_path],
                    port=sidecar_port,
                    env=DUMMY_AWS_ENV,
                    log_dir=log_dir,
                    label=f"sidecar-{transport}",
                    stop_timeout=PROCESS_STOP_TIMEOUT_S,
                )
            )
            proxy = await stack.enter_async_context(
                async_running_process(
                    [ASYNCMCP_PYTHON, THIS_FILE, ASYNCMCP_SIDE, "proxy", json.dumps(spec)],
                    port=proxy_port,
                    env=DUMMY_AWS_ENV,
                    log_dir=log_dir,
                    label=f"asyncmcp-proxy-{transport}",
                    stop_timeout=PROXY_STOP_TIMEOUT_S,
                )
            )
            await wait_ready(f"{sidecar.base_url}/readyz")
            print(
                f"{transport}: sidecar pid {sidecar.pid} on :{sidecar_port}, "
                f"asyncmcp proxy pid {proxy.pid} on :{proxy_port}",
                file=sys.stderr,
            )
            yield Rig(transport, moto, parts.client_args, parts.load_args, sidecar, proxy)


async def wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                response = await http.get(url)
                if response.status_code == 200:
                    return
                why = f"{response.status_code} {response.text[:300]}"
            except httpx.HTTPError as exc:
                why = error_text(exc)
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{url} not ready after {READY_TIMEOUT_S}s: {why}")
            await anyio.sleep(0.1)


async def sidecar_counters(rig: Rig) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{rig.sidecar.base_url}/metrics")
        response.raise_for_status()
    totals: dict[str, float] = {}
    for line in response.text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        base = name.partition("{")[0]
        if base in WATCHED_COUNTERS:
            key = name if "{" in name else base
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


# --- measurements -------------------------------------------------------------------------------------------


def text_of(result: Any) -> str:
    return "".join(item.text for item in result.content if isinstance(item, TextContent))


def new_client(url: str, mode: str, name: str = "bench") -> Client:
    return Client(
        url,
        mode=mode,
        read_timeout_seconds=CALL_TIMEOUT_S,
        client_info=Implementation(name=name, version="1"),
    )


async def echo_on(client: Client, text: str) -> tuple[str, bool]:
    result = await client.call_tool("echo", {"text": text})
    return text_of(result), bool(result.is_error)


@asynccontextmanager
async def client_session(url: str, mode: str, name: str) -> AsyncIterator[EchoFn]:
    async with new_client(url, mode, name) as client:

        async def echo(text: str) -> tuple[str, bool]:
            return await echo_on(client, text)

        yield echo


async def check_leg(leg: Leg, url: str) -> None:
    """One session and one echo; a target that cannot do that is recorded as an error and skipped."""
    try:
        with anyio.fail_after(CALL_TIMEOUT_S * 3):
            async with new_client(url, CLIENT_MODES[leg.target], "bench-check") as client:
                leg.protocol_version = client.protocol_version
                got, is_error = await echo_on(client, "check")
    except Exception as exc:
        leg.status = "error"
        leg.detail = error_text(exc)
    else:
        if is_error or got != "check":
            leg.status = "error"
            leg.detail = f"echo 'check' answered {got!r} (error result: {is_error})"
    if leg.detail:
        print(f"  {leg.target}: {leg.detail}", file=sys.stderr)


async def measure_setup(legs: Sequence[Leg], urls: dict[str, str], rounds: int) -> None:
    """Enter a fresh `Client` (one echo, then leave) `rounds` times per in-process target, interleaved."""
    for round_no in range(rounds):
        for leg in rotated(legs, round_no):
            if "setup" in leg.phase_errors:
                continue
            try:
                with anyio.fail_after(CALL_TIMEOUT_S * 3):
                    client = new_client(urls[leg.target], CLIENT_MODES[leg.target], f"bench-setup-{round_no}")
                    started = time.perf_counter()
                    await client.__aenter__()
                    entered = time.perf_counter()
                    try:
                        await echo_on(client, "setup")
                    finally:
                        await client.__aexit__(None, None, None)
                leg.setup_samples.append(entered - started)
            except Exception as exc:
                leg.phase_errors["setup"] = error_text(exc)


async def sequential_no_proxy(rig: Rig, leg: Leg, calls: int, log_dir: Path) -> None:
    argv = [
        str(require_asyncmcp_venv()),
        str(REPO_ROOT / "tests" / "fixtures" / "asyncmcp_client.py"),
        *rig.no_proxy_client_args("bench-sequential"),
        "--calls",
        str(calls + NO_PROXY_DISCARD),
        "--slow-seconds",
        "0",
        "--timeout",
        str(CALL_TIMEOUT_S + calls * CALL_TIMEOUT_S / 10),
    ]
    result = await run_asyncmcp_process(
        argv, log_dir, f"asyncmcp-client-{rig.transport}", CALL_TIMEOUT_S * 3 + calls
    )
    leg.protocol_version = str(result["protocol_version"])
    leg.setup_samples.append(float(result["initialize_ms"]) / 1000)
    leg.sequential_samples += [value / 1000 for value in result["latencies_ms"][NO_PROXY_DISCARD:]]


async def measure_sequential(rig: Rig, legs: Sequence[Leg], calls: int, warmup: int, log_dir: Path) -> None:
    """One session per in-process target (warmed up), the no-proxy client as one process per round; `calls`
    timed calls per target in rounds that rotate over the targets."""
    rounds = max(1, min(4, calls // 50))
    urls = rig.urls
    async with AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        for leg in legs:
            if leg.target == "no-proxy":
                continue
            try:
                # Entered outside the deadline's scope: the session outlives it (the read timeout bounds it).
                client = await stack.enter_async_context(
                    new_client(urls[leg.target], CLIENT_MODES[leg.target], "bench-sequential")
                )
                with anyio.fail_after(CALL_TIMEOUT_S + warmup * CALL_TIMEOUT_S):
                    for number in range(warmup):
                        await echo_on(client, f"warm-{number}")
                clients[leg.target] = client
            except Exception as exc:
                leg.phase_errors["sequential"] = error_text(exc)
        counter = 0
        for round_no in range(rounds):
            per_round = calls // rounds + (1 if round_no < calls % rounds else 0)
            for leg in rotated(legs, round_no):
                if "sequential" in leg.phase_errors:
                    continue
                try:
                    if leg.target == "no-proxy":
                        await sequential_no_proxy(rig, leg, per_round, log_dir)
                        continue
                    client = clients[leg.target]
                    failures = 0
                    for _ in range(per_round):
                        counter += 1
                        text = f"seq-{counter}"
                        started = time.perf_counter()
                        try:
                            got, is_error = await echo_on(client, text)
                        except Exception as exc:
                            leg.sequential_failed += 1
                            failures += 1
                            if failures >= MAX_ERRORS_PER_SESSION:
                                raise
                            leg.phase_errors.setdefault("sequential (first failed call)", error_text(exc))
                            continue
                        leg.sequential_samples.append(time.perf_counter() - started)
                        if is_error:
                            leg.sequential_failed += 1
                        elif got != text:
                            leg.sequential_wrong += 1
                except Exception as exc:
                    leg.phase_errors["sequential"] = error_text(exc)


async def throughput_no_proxy(rig: Rig, sessions: int, calls: int, log_dir: Path) -> ThroughputResult:
    spec = {
        "clients": rig.no_proxy_load_args(sessions),
        "calls": calls,
        "call_timeout": CALL_TIMEOUT_S,
        "phase_timeout": THROUGHPUT_TIMEOUT_S,
    }
    argv = [str(require_asyncmcp_venv()), str(THIS_FILE), ASYNCMCP_SIDE, "load", json.dumps(spec)]
    raw = await run_asyncmcp_process(
        argv, log_dir, f"asyncmcp-load-{rig.transport}", THROUGHPUT_TIMEOUT_S + CLIENT_PROCESS_SLACK_S
    )
    return ThroughputResult.of(raw)


async def throughput_in_process(url: str, mode: str, sessions: int, calls: int) -> ThroughputResult:
    load = LoadTally(sessions, calls)
    clients = [client_session(url, mode, f"bench-{number}") for number in range(sessions)]
    cpu = time.process_time()
    await run_load(load, clients, THROUGHPUT_TIMEOUT_S)
    return ThroughputResult.of({**load.raw(), "cpu_s": time.process_time() - cpu})


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a running process (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def per_call(cpu_s: float | None, calls: int) -> float | None:
    return round(cpu_s * 1000 / calls, 3) if cpu_s is not None and calls > 0 else None


async def measure_throughput(rig: Rig, legs: Sequence[Leg], sessions: int, calls: int, log_dir: Path) -> None:
    """One target after the other (asyncmcp's proxy last: it may leave broken sessions polling behind)."""
    for leg in legs:
        started = time.perf_counter()
        proxy_pid = rig.proxy.pid if leg.target == "asyncmcp-proxy" else rig.sidecar.pid
        proxy_cpu = cpu_seconds(proxy_pid)
        try:
            if leg.target == "no-proxy":
                leg.throughput = await throughput_no_proxy(rig, sessions, calls, log_dir)
            else:
                url = rig.urls[leg.target]
                leg.throughput = await throughput_in_process(url, CLIENT_MODES[leg.target], sessions, calls)
                proxy_cpu_after = cpu_seconds(proxy_pid)
                if proxy_cpu is not None and proxy_cpu_after is not None:
                    used = proxy_cpu_after - proxy_cpu
                    leg.throughput.proxy_cpu_ms_per_call = per_call(used, leg.throughput.calls_ok)
        except Exception as exc:
            leg.phase_errors["throughput"] = error_text(exc)
        tp = leg.throughput
        summary = (
            f"{tp.calls_ok} ok, {tp.wrong} wrong, {tp.failed_calls} failed, {tp.not_done} not done"
            if tp
            else leg.phase_errors.get("throughput", "")
        )
        print(f"  throughput {leg.target}: {time.perf_counter() - started:.1f} s; {summary}", file=sys.stderr)


# --- ratios and reports -------------------------------------------------------------------------------------


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return round(value / base, 2)


def finish_leg(leg: Leg) -> None:
    leg.setup = LatencySummary.maybe(leg.setup_samples)
    leg.sequential = LatencySummary.maybe(leg.sequential_samples)


def fill_ratios(legs: Sequence[Leg]) -> None:
    base_of = {leg.transport: leg for leg in legs if leg.target == "no-proxy"}
    for leg in legs:
        base = base_of.get(leg.transport)
        if leg.target == "no-proxy" or base is None:
            continue
        seq, base_seq = leg.sequential, base.sequential
        tp, base_tp = leg.throughput, base.throughput
        leg.ratios_to_no_proxy = {
            "setup_median": ratio(
                leg.setup.median_ms if leg.setup else None, base.setup.median_ms if base.setup else None
            ),
            "sequential_median": ratio(
                seq.median_ms if seq else None, base_seq.median_ms if base_seq else None
            ),
            "sequential_p95": ratio(seq.p95_ms if seq else None, base_seq.p95_ms if base_seq else None),
            "sequential_p99": ratio(seq.p99_ms if seq else None, base_seq.p99_ms if base_seq else None),
            "throughput_calls_per_s": ratio(
                tp.calls_per_s if tp else None, base_tp.calls_per_s if base_tp else None
            ),
            "throughput_median_latency": ratio(
                tp.latency.median_ms if tp and tp.latency else None,
                base_tp.latency.median_ms if base_tp and base_tp.latency else None,
            ),
        }


def cell(value: float | None, ratio_value: float | None = None, digits: int = 2) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text} (x{ratio_value:.2f})" if ratio_value is not None else text


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdict(leg: Leg) -> str:
    r = leg.ratios_to_no_proxy.get("sequential_median")
    if leg.status != "ok" or r is None:
        return "no sequential median to compare"
    within = "within" if r <= 1.10 else "NOT within"
    return f"sequential median x{r:.2f} of no proxy: {within} the 10% target"


def markdown(report: dict[str, Any], legs: Sequence[Leg]) -> str:
    params = report["parameters"]
    env = report["environment"]
    lines = [
        "# Async transports: no proxy, mcplane, asyncmcp's proxy",
        "",
        f"{report['started_at']}, {env['cpus']} CPUs, load average {env['loadavg_start']} at start and "
        f"{env['loadavg_end']} at the end; Python {env['python']}, mcp {env['mcp']} (asyncmcp side: "
        f"asyncmcp {env['asyncmcp']}, mcp {env['asyncmcp_mcp']}), moto {env['moto']}; "
        f"{params['calls']} sequential calls after {params['warmup']} warm-up, {params['setups']} set-ups, "
        f"{params['sessions']} concurrent sessions x {params['tp_calls']} calls for throughput; "
        f"total {report['runtime_s']} s.",
        "",
        "Times in ms; (xn) is the ratio to the no-proxy asyncmcp client over the same transport. "
        "Set-up: no proxy = asyncmcp's `initialize()` alone; the others = entering the official "
        "`Client(...)`, the whole client start. Throughput (the last five columns): calls/s counts "
        "correct replies only; "
        "wrong = a reply with another text than the one sent (each session's warm-up call included); "
        f"failed = an error or no reply within {CALL_TIMEOUT_S:g} s; not done = calls never made (session "
        f"failed to open, {MAX_ERRORS_PER_SESSION} failures in one session, or the "
        f"{THROUGHPUT_TIMEOUT_S:g} s cap).",
        "",
        "| transport | target | protocol | set-up p50 | seq p50 | seq p95 | seq p99 | seq wrong / failed "
        "| calls/s | p50 under load | wrong | failed | not done |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for leg in legs:
        name = TARGET_LABELS[leg.target]
        transport = TRANSPORT_LABELS[leg.transport]
        if leg.status != "ok":
            detail = md_escape(leg.detail or "")
            lines.append(f"| {transport} | {name} | error: {detail} | | | | | | | | | | |")
            continue
        r = leg.ratios_to_no_proxy
        seq, tp = leg.sequential, leg.throughput
        tp_cells = (
            [
                cell(tp.calls_per_s, r.get("throughput_calls_per_s"), 1),
                cell(tp.latency.median_ms if tp.latency else None, r.get("throughput_median_latency")),
                str(tp.wrong),
                str(tp.failed_calls)
                + (f" + {tp.failed_sessions} sessions not opened" if tp.failed_sessions else ""),
                str(tp.not_done) + (" (cap hit)" if tp.timed_out else ""),
            ]
            if tp
            else ["-", "-", "-", "-", "-"]
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    transport,
                    name,
                    leg.protocol_version or "?",
                    cell(leg.setup.median_ms if leg.setup else None, r.get("setup_median"), 1),
                    cell(seq.median_ms if seq else None, r.get("sequential_median")),
                    cell(seq.p95_ms if seq else None, r.get("sequential_p95")),
                    cell(seq.p99_ms if seq else None, r.get("sequential_p99")),
                    f"{leg.sequential_wrong} / {leg.sequential_failed}",
                    *tp_cells,
                ]
            )
            + " |"
        )
    lines += ["", "Against the target (mcplane's sequential median within 10% of the no-proxy client's):", ""]
    for leg in legs:
        if leg.target.startswith("mcplane"):
            lines.append(f"- {TRANSPORT_LABELS[leg.transport]}, {TARGET_LABELS[leg.target]}: {verdict(leg)}")
    notes: list[str] = []
    for leg in legs:
        where = f"{TRANSPORT_LABELS[leg.transport]}, {TARGET_LABELS[leg.target]}"
        for phase, text in leg.phase_errors.items():
            notes.append(f"- {where}, {phase}: {md_escape(text)}")
        tp = leg.throughput
        if tp and tp.first_error:
            notes.append(f"- {where}, throughput, first error: {md_escape(tp.first_error)}")
        if tp and tp.wrong_examples:
            notes.append(
                f"- {where}, throughput, wrong replies e.g.: {md_escape('; '.join(tp.wrong_examples))}"
            )
        if tp and tp.teardown_errors:
            notes.append(f"- {where}, throughput: {tp.teardown_errors} sessions failed on close")
    for transport, moved in report["sidecar_counters"].items():
        if moved:
            listed = ", ".join(f"{k} +{v:g}" for k, v in moved.items())
            notes.append(f"- {TRANSPORT_LABELS[transport]}, sidecar counters that moved: {md_escape(listed)}")
    if notes:
        lines += ["", "Errors and anomalies:", "", *notes]
    lines += [
        "",
        "Session set-up (ms; concurrent = the throughput phase's sessions, opened all at once) and CPU time "
        "per correct reply over each throughput leg (the clients' process; the sidecar or asyncmcp's proxy):",
        "",
        "| transport | target | set-up p50 | set-up max | concurrent p50 | concurrent max "
        "| client CPU ms/call | proxy CPU ms/call |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for leg in legs:
        if leg.status != "ok":
            continue
        conc = leg.throughput.setup if leg.throughput else None
        values = [
            leg.setup.median_ms if leg.setup else None,
            leg.setup.max_ms if leg.setup else None,
            conc.median_ms if conc else None,
            conc.max_ms if conc else None,
        ]
        tp = leg.throughput
        cpu = [tp.client_cpu_ms_per_call if tp else None, tp.proxy_cpu_ms_per_call if tp else None]
        row = " | ".join([*(cell(value, None, 1) for value in values), *(cell(value) for value in cpu)])
        lines.append(f"| {TRANSPORT_LABELS[leg.transport]} | {TARGET_LABELS[leg.target]} | {row} |")
    lines.append("")
    return "\n".join(lines)


# --- orchestration ------------------------------------------------------------------------------------------


@dataclass
class Options:
    calls: int
    warmup: int
    setups: int
    sessions: int
    tp_calls: int
    transports: list[Transport]
    out: Path


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def asyncmcp_versions() -> dict[str, str]:
    code = "import importlib.metadata as m; print(m.version('asyncmcp'), m.version('mcp'))"
    try:
        out = subprocess.run(
            [str(require_asyncmcp_venv()), "-c", code], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
        return {"asyncmcp": out[0], "asyncmcp_mcp": out[1]}
    except (OSError, subprocess.SubprocessError, IndexError):
        return {"asyncmcp": "?", "asyncmcp_mcp": "?"}


async def run_transport(
    transport: Transport, moto: MotoServer, options: Options, log_dir: Path
) -> tuple[list[Leg], dict[str, float]]:
    targets: list[TargetKey] = ["no-proxy", "mcplane-legacy", "mcplane-auto", "asyncmcp-proxy"]
    legs = [Leg(transport=transport, target=target) for target in targets]
    moved: dict[str, float] = {}
    print(
        f"{transport}: starting moto queues, 3 asyncmcp servers, the sidecar, asyncmcp's proxy",
        file=sys.stderr,
    )
    rig_started = time.perf_counter()
    async with started_rig(transport, moto, log_dir) as rig:
        print(f"  processes started: {time.perf_counter() - rig_started:.1f} s", file=sys.stderr)
        before = await sidecar_counters(rig)
        for leg in legs[1:]:
            await check_leg(leg, rig.urls[leg.target])
        ok = [leg for leg in legs if leg.status == "ok"]
        in_process = [leg for leg in ok if leg.target != "no-proxy"]
        phase_started = time.perf_counter()
        await measure_setup(in_process, rig.urls, options.setups)
        print(f"  set-up: {time.perf_counter() - phase_started:.1f} s", file=sys.stderr)
        phase_started = time.perf_counter()
        await measure_sequential(rig, ok, options.calls, options.warmup, log_dir)
        print(f"  sequential: {time.perf_counter() - phase_started:.1f} s", file=sys.stderr)
        await measure_throughput(rig, ok, options.sessions, options.tp_calls, log_dir)
        after = await sidecar_counters(rig)
        moved = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}
        rig_stopping = time.perf_counter()
    print(f"  processes stopped: {time.perf_counter() - rig_stopping:.1f} s", file=sys.stderr)
    no_proxy = legs[0]
    if "sequential" in no_proxy.phase_errors and not no_proxy.sequential_samples:
        no_proxy.status = "error"
        no_proxy.detail = no_proxy.phase_errors.pop("sequential")
    for leg in legs:
        finish_leg(leg)
    return legs, moved


async def run(options: Options) -> dict[str, Any]:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    run_started = time.perf_counter()
    load_start = loadavg()
    log_dir = Path(tempfile.mkdtemp(prefix="mcplane-async-bench-"))
    print(f"logs in {log_dir}", file=sys.stderr)
    require_asyncmcp_venv()
    for name, value in DUMMY_AWS_ENV.items():
        os.environ.setdefault(name, value)  # the boto3 calls made here (queues, topics) need credentials too
    legs: list[Leg] = []
    counters: dict[str, dict[str, float]] = {}
    with moto_server(log_dir=log_dir) as moto:
        for transport in options.transports:
            transport_started = time.perf_counter()
            try:
                transport_legs, counters[transport] = await run_transport(transport, moto, options, log_dir)
            except Exception as exc:  # the rig itself did not start: record it for every target
                text = error_text(exc)
                print(f"{transport}: {text}", file=sys.stderr)
                transport_legs = [
                    Leg(transport=transport, target=t, status="error", detail=f"set-up of the run: {text}")
                    for t in ("no-proxy", "mcplane-legacy", "mcplane-auto", "asyncmcp-proxy")
                ]
                counters[transport] = {}
            legs += transport_legs
            print(f"{transport}: {time.perf_counter() - transport_started:.1f} s", file=sys.stderr)
    fill_ratios(legs)
    report: dict[str, Any] = {
        "started_at": started_at,
        "runtime_s": round(time.perf_counter() - run_started, 1),
        "parameters": {
            "calls": options.calls,
            "warmup": options.warmup,
            "setups": options.setups,
            "sessions": options.sessions,
            "tp_calls": options.tp_calls,
            "transports": options.transports,
            "call_timeout_s": CALL_TIMEOUT_S,
            "throughput_cap_s": THROUGHPUT_TIMEOUT_S,
            "asyncmcp_long_poll": {
                "wait_time_seconds": BACKEND_WAIT_S,
                "poll_interval_seconds": BACKEND_POLL_S,
            },
        },
        "environment": {
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            "python": platform.python_version(),
            "mcp": metadata.version("mcp"),
            "moto": metadata.version("moto"),
            **asyncmcp_versions(),
            "platform": platform.platform(),
            "logs": str(log_dir),
        },
        "targets": TARGET_LABELS,
        "legs": [
            {k: v for k, v in asdict(leg).items() if k not in ("setup_samples", "sequential_samples")}
            for leg in legs
        ],
        "sidecar_counters": counters,
    }
    report["markdown"] = markdown(report, legs)
    return report


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--calls", type=int, default=150, help="timed sequential calls per target and transport"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before the sequential run")
    parser.add_argument("--setups", type=int, default=5, help="session set-ups timed per in-process target")
    parser.add_argument("--sessions", type=int, default=50, help="concurrent sessions for throughput")
    parser.add_argument("--tp-calls", type=int, default=5, help="calls per session in the throughput phase")
    parser.add_argument(
        "--transport", choices=TRANSPORTS, action="append", help="limit to a transport (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="results directory")
    args = parser.parse_args(argv)
    for name in ("calls", "sessions", "setups", "tp_calls"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    transports: list[Transport] = []
    for name in args.transport or list(TRANSPORTS):
        if name not in transports:
            transports.append(name)
    return Options(
        calls=args.calls,
        warmup=args.warmup,
        setups=args.setups,
        sessions=args.sessions,
        tp_calls=args.tp_calls,
        transports=transports,
        out=args.out,
    )


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    report = run_interruptibly(run, options)
    write_report(options.out, "async_latency", report)


if __name__ == "__main__":
    main()
