"""Memory per idle session: hold thousands of 2025-era sessions open through one sidecar with an HTTP backend.

    .venv/bin/python bench/idle_sessions.py [--sizes 1000 --sizes 10000] [--concurrency 32] [--out DIR]

On 127.0.0.1, started here and stopped by PID at the end (also on an error, Ctrl-C or SIGTERM):
proxy_target over Streamable HTTP (behind the session counter of `sidecar_latency.py`), and one
`mcplane-sidecar URL --transport-type http` in front of it, with `sessions.max_sessions` raised above the
largest size and `sessions.idle_timeout` set far beyond the run (through `MCPLANE_SESSIONS__*`).

A session is opened with raw HTTP, as a client would: `initialize` (protocol 2025-11-25), then
`notifications/initialized` with the `Mcp-Session-Id` it was given. Nothing else is sent on it; only its id
is kept. After a warm-up of `--warmup` sessions the sidecar's and the backend's VmRSS are the baseline; the
sessions are then opened up to each size in turn (cumulatively), and at each size, after a short settle,
the script reads VmRSS, VmHWM, open file descriptors and `mcplane_sessions_active`. The growth over the
baseline divided by the sessions added is the memory per idle session. At the end a sample of the oldest
sessions is called (`tools/call echo`) to show they were still open, not evicted.

The backend holds a session per client session too; its growth is reported separately. The target
(10,000 sessions in at most 512 MiB) is about the sidecar.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # for tests.support, when run as a script

import anyio  # noqa: E402
import httpx  # noqa: E402
from _interrupt import run_interruptibly  # noqa: E402
from _measure import LatencySummary, error_text, write_report  # noqa: E402

from tests.support.processes import (  # noqa: E402
    LOOPBACK,
    PYTHON,
    ProcessHandle,
    async_running_process,
    free_port,
)

SIDECAR_BIN: Final = PYTHON.parent / "mcplane-sidecar"
LATENCY_SCRIPT: Final = Path(__file__).resolve().parent / "sidecar_latency.py"  # its --serve-http-target
MCP_PATH: Final = "/mcp"
STATS_PATH: Final = "/bench-stats"
PROTOCOL: Final = "2025-11-25"
ACCEPT: Final = "application/json, text/event-stream"
SESSION_HEADER: Final = "mcp-session-id"
SIDECAR_FLAGS: Final = ("--transport", "http", "--transport-type", "http")
IDLE_TIMEOUT_S: Final = 86_400  # far beyond the run: no session may be closed for idleness
HEADROOM: Final = 100  # max_sessions above the sessions this run opens
SETTLE_S: Final = 3.0  # after the last open of a step, before reading memory
REQUEST_TIMEOUT_S: Final = 60.0
PROCESS_STOP_TIMEOUT_S: Final = 30.0  # a sidecar with 10,000 sessions takes a while to drain
LIVENESS_SAMPLE: Final = 20
# Stop opening after this many failures (at least 50, else 1% of the sessions): a limit was hit, or it broke.
MIN_OPEN_ERRORS: Final = 50
MIB: Final = 1024


@dataclass
class ProcessSample:
    rss_kib: int
    hwm_kib: int
    fds: int
    cpu_s: float


def sample(pid: int) -> ProcessSample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return ProcessSample(
        rss_kib=int(fields["VmRSS"].split()[0]),
        hwm_kib=int(fields["VmHWM"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        cpu_s=round((int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"), 2),
    )


@dataclass
class Step:
    sessions: int  # open client sessions at this point (warm-up included)
    added_since_baseline: int
    sidecar: ProcessSample
    backend: ProcessSample
    sidecar_sessions_active: float | None
    backend_sessions_opened: int | None
    sidecar_kib_per_session: float | None
    backend_kib_per_session: float | None
    open_seconds: float  # wall time to open this step's sessions
    sidecar_cpu_ms_per_open: float | None  # CPU time per session opened in this step
    backend_cpu_ms_per_open: float | None
    setup: LatencySummary | None  # per-session initialize + initialized, under `--concurrency`


@dataclass
class Outcome:
    steps: list[Step] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)
    errors: int = 0
    first_error: str | None = None
    live_checked: int = 0
    live_ok: int = 0
    live_error: str | None = None


def rpc(method: str, params: dict[str, Any], request_id: int | None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        message["id"] = request_id
    return message


def reply_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC reply in a JSON body or in the `data:` lines of an SSE body."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if isinstance(message, dict) and "id" in message:
                    return message
        raise RuntimeError("no reply in the event stream")
    parsed = response.json()
    if not isinstance(parsed, dict):
        raise TypeError(f"unexpected body: {response.text[:200]}")
    return parsed


def check_result(reply: dict[str, Any], what: str) -> None:
    if "result" not in reply:
        raise RuntimeError(f"{what} answered {reply}")


class Opener:
    """Opens sessions with raw HTTP and keeps only their ids."""

    def __init__(self, http: httpx.AsyncClient, url: str, total: int) -> None:
        self.http = http
        self.url = url
        self.max_errors = max(MIN_OPEN_ERRORS, total // 100)
        self.ids: list[str] = []
        self.errors = 0
        self.first_error: str | None = None

    async def open_one(self, number: int, setups: list[float]) -> None:
        headers = {"accept": ACCEPT, "content-type": "application/json"}
        init = rpc(
            "initialize",
            {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": f"idle-{number}", "version": "1"},
            },
            1,
        )
        started = time.perf_counter()
        try:
            response = await self.http.post(self.url, json=init, headers=headers)
            response.raise_for_status()
            check_result(reply_of(response), "initialize")  # first: a refusal says why, and has no id
            session_id = response.headers[SESSION_HEADER]
            headers |= {SESSION_HEADER: session_id, "mcp-protocol-version": PROTOCOL}
            notified = await self.http.post(
                self.url, json=rpc("notifications/initialized", {}, None), headers=headers
            )
            notified.raise_for_status()
        except Exception as exc:
            self.errors += 1
            if self.first_error is None:
                self.first_error = error_text(exc)
            return
        setups.append(time.perf_counter() - started)
        self.ids.append(session_id)

    async def open_many(self, count: int, concurrency: int) -> tuple[float, list[float]]:
        setups: list[float] = []
        started = time.perf_counter()
        limiter = anyio.Semaphore(concurrency)
        base = len(self.ids)

        async def one(number: int) -> None:
            async with limiter:
                if self.errors < self.max_errors:
                    await self.open_one(number, setups)

        async with anyio.create_task_group() as tg:
            for number in range(base, base + count):
                tg.start_soon(one, number)
        return time.perf_counter() - started, setups

    async def call_echo(self, session_id: str, number: int) -> None:
        headers = {
            "accept": ACCEPT,
            "content-type": "application/json",
            SESSION_HEADER: session_id,
            "mcp-protocol-version": PROTOCOL,
        }
        text = f"still-open-{number}"
        message = rpc("tools/call", {"name": "echo", "arguments": {"text": text}}, 2)
        response = await self.http.post(self.url, json=message, headers=headers)
        response.raise_for_status()
        reply = reply_of(response)
        content = reply.get("result", {}).get("content", [{}])
        if content[0].get("text") != text:
            raise RuntimeError(f"echo answered {reply}")


async def sessions_active(http: httpx.AsyncClient, metrics_url: str) -> float | None:
    try:
        response = await http.get(metrics_url)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    total = 0.0
    for line in response.text.splitlines():
        if line.startswith("mcplane_sessions_active"):
            total += float(line.rpartition(" ")[2])
    return total


async def backend_opened(http: httpx.AsyncClient, stats_url: str) -> int | None:
    try:
        response = await http.get(stats_url)
        response.raise_for_status()
        return int(response.json().get("mcplane", {}).get("new_sessions", 0))
    except (httpx.HTTPError, ValueError):
        return None


@asynccontextmanager
async def started(
    log_dir: Path, max_sessions: int
) -> AsyncIterator[tuple[ProcessHandle, ProcessHandle, str]]:
    backend_port, sidecar_port = free_port(), free_port()
    backend_url = f"http://{LOOPBACK}:{backend_port}{MCP_PATH}"
    env = {
        "MCPLANE_SESSIONS__MAX_SESSIONS": str(max_sessions),
        "MCPLANE_SESSIONS__IDLE_TIMEOUT": str(IDLE_TIMEOUT_S),
    }
    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(
            async_running_process(
                [PYTHON, LATENCY_SCRIPT, "--serve-http-target", str(backend_port)],
                port=backend_port,
                log_dir=log_dir,
                label="proxy_target-http",
                stop_timeout=PROCESS_STOP_TIMEOUT_S,
            )
        )
        sidecar = await stack.enter_async_context(
            async_running_process(
                [SIDECAR_BIN, f"{backend_url}?via=mcplane", *SIDECAR_FLAGS, "--port", str(sidecar_port)],
                port=sidecar_port,
                env=env,
                log_dir=log_dir,
                label="sidecar-http",
                stop_timeout=PROCESS_STOP_TIMEOUT_S,
            )
        )
        print(
            f"started proxy_target pid {backend.pid}, sidecar pid {sidecar.pid}; logs in {log_dir}",
            file=sys.stderr,
        )
        yield backend, sidecar, f"http://{LOOPBACK}:{backend_port}{STATS_PATH}"


def cpu_per(now: ProcessSample, before: ProcessSample, count: int) -> float | None:
    return round(1000 * (now.cpu_s - before.cpu_s) / count, 2) if count > 0 else None


def per_session(now: int, base: int, added: int) -> float | None:
    return round((now - base) / added, 2) if added > 0 else None


async def run(sizes: Sequence[int], warmup: int, concurrency: int) -> dict[str, Any]:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    run_started = time.perf_counter()
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    log_dir = Path(tempfile.mkdtemp(prefix="mcplane-idle-bench-"))
    outcome = Outcome()
    max_sessions = warmup + max(sizes) + HEADROOM
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with (
        started(log_dir, max_sessions) as (backend, sidecar, stats_url),
        httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http,
    ):
        url = f"{sidecar.base_url}{MCP_PATH}"
        metrics_url = f"{sidecar.base_url}/metrics"
        opener = Opener(http, url, warmup + max(sizes))
        await opener.open_many(warmup, concurrency)
        await anyio.sleep(SETTLE_S)
        base_sidecar, base_backend = sample(sidecar.pid), sample(backend.pid)
        outcome.baseline = {
            "sessions": len(opener.ids),
            "sidecar": asdict(base_sidecar),
            "backend": asdict(base_backend),
        }
        print(
            f"baseline with {len(opener.ids)} sessions: sidecar {base_sidecar.rss_kib / MIB:.1f} MiB, "
            f"backend {base_backend.rss_kib / MIB:.1f} MiB",
            file=sys.stderr,
        )
        last_sidecar, last_backend = base_sidecar, base_backend
        for size in sizes:
            want = warmup + size - len(opener.ids)  # failed opens are made up for in the next step
            before_step = len(opener.ids)
            seconds, setups = await opener.open_many(max(0, want), concurrency)
            await anyio.sleep(SETTLE_S)
            now_sidecar, now_backend = sample(sidecar.pid), sample(backend.pid)
            opened = len(opener.ids) - before_step
            added = len(opener.ids) - outcome.baseline["sessions"]
            step = Step(
                sessions=len(opener.ids),
                added_since_baseline=added,
                sidecar=now_sidecar,
                backend=now_backend,
                sidecar_sessions_active=await sessions_active(http, metrics_url),
                backend_sessions_opened=await backend_opened(http, stats_url),
                sidecar_kib_per_session=per_session(now_sidecar.rss_kib, base_sidecar.rss_kib, added),
                backend_kib_per_session=per_session(now_backend.rss_kib, base_backend.rss_kib, added),
                open_seconds=round(seconds, 2),
                sidecar_cpu_ms_per_open=cpu_per(now_sidecar, last_sidecar, opened),
                backend_cpu_ms_per_open=cpu_per(now_backend, last_backend, opened),
                setup=LatencySummary.maybe(setups),
            )
            outcome.steps.append(step)
            last_sidecar, last_backend = now_sidecar, now_backend
            print(
                f"{step.sessions} sessions ({seconds:.1f} s to open): sidecar "
                f"{now_sidecar.rss_kib / MIB:.1f} MiB ({step.sidecar_kib_per_session} KiB/session), "
                f"backend {now_backend.rss_kib / MIB:.1f} MiB ({step.backend_kib_per_session} KiB/session), "
                f"sidecar fds {now_sidecar.fds}",
                file=sys.stderr,
            )
            if opener.errors >= opener.max_errors:
                break
        checked = opener.ids[: min(LIVENESS_SAMPLE, len(opener.ids))]  # the oldest: idle the longest
        outcome.live_checked = len(checked)
        for number, session_id in enumerate(checked):
            try:
                await opener.call_echo(session_id, number)
                outcome.live_ok += 1
            except Exception as exc:
                outcome.live_error = outcome.live_error or error_text(exc)
        outcome.errors, outcome.first_error = opener.errors, opener.first_error
        stopping = time.perf_counter()
    stop_seconds = time.perf_counter() - stopping
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    report: dict[str, Any] = {
        "started_at": started_at,
        "runtime_s": round(time.perf_counter() - run_started, 1),
        "parameters": {
            "sizes": list(sizes),
            "warmup": warmup,
            "concurrency": concurrency,
            "max_sessions": max_sessions,
            "idle_timeout_s": IDLE_TIMEOUT_S,
            "protocol": PROTOCOL,
        },
        "environment": {
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "python": platform.python_version(),
            "mcp": metadata.version("mcp"),
            "platform": platform.platform(),
            "nofile_limit": [soft, hard],
            "logs": str(log_dir),
        },
        **asdict(outcome),
        "stop_seconds": round(stop_seconds, 1),
    }
    report["markdown"] = markdown(report)
    return report


def markdown(report: dict[str, Any]) -> str:
    params, env, base = report["parameters"], report["environment"], report["baseline"]
    lines = [
        "# mcplane sidecar: memory per idle session",
        "",
        f"{report['started_at']}, {env['cpus']} CPUs, load average {env['loadavg_start']} at start and "
        f"{env['loadavg_end']} at the end; Python {env['python']}, mcp {env['mcp']}; open-file limit "
        f"{env['nofile_limit'][0]}. One sidecar (HTTP backend: proxy_target), {params['protocol']} sessions "
        f"opened with raw HTTP ({params['concurrency']} at a time) and left idle; baseline after "
        f"{base['sessions']} warm-up sessions: sidecar {base['sidecar']['rss_kib'] / MIB:.1f} MiB, "
        f"backend {base['backend']['rss_kib'] / MIB:.1f} MiB. Total {report['runtime_s']} s.",
        "",
        "| open sessions | sidecar RSS MiB | sidecar KiB/session | sidecar peak MiB | sidecar fds "
        "| sessions_active | backend RSS MiB | backend KiB/session | backend sessions | open time s "
        "| set-up p50 ms | set-up p95 ms | sidecar CPU ms/open | backend CPU ms/open |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in report["steps"]:
        sc, be, setup = step["sidecar"], step["backend"], step["setup"]
        lines.append(
            f"| {step['sessions']} | {sc['rss_kib'] / MIB:.1f} | {step['sidecar_kib_per_session']} | "
            f"{sc['hwm_kib'] / MIB:.1f} | {sc['fds']} | {step['sidecar_sessions_active']} | "
            f"{be['rss_kib'] / MIB:.1f} | {step['backend_kib_per_session']} | "
            f"{step['backend_sessions_opened']} | {step['open_seconds']} | "
            f"{setup['median_ms'] if setup else '-'} | {setup['p95_ms'] if setup else '-'} | "
            f"{step['sidecar_cpu_ms_per_open']} | {step['backend_cpu_ms_per_open']} |"
        )
    lines += [
        "",
        f"Still open at the end: {report['live_ok']} of the {report['live_checked']} oldest sessions "
        "answered `echo`" + (f" (first error: {report['live_error']})" if report["live_error"] else "") + ". "
        f"Sessions that failed to open: {report['errors']}"
        + (f" (first: {report['first_error']})" if report["first_error"] else "")
        + f". Stopping both processes took {report['stop_seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sizes", type=int, action="append", help="idle sessions to hold (repeatable; default 1000, 10000)"
    )
    parser.add_argument("--warmup", type=int, default=50, help="sessions opened before the baseline")
    parser.add_argument("--concurrency", type=int, default=32, help="sessions being opened at once")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="results directory")
    args = parser.parse_args(argv)
    sizes = sorted(set(args.sizes or [1000, 10_000]))
    if sizes[0] < 1 or args.warmup < 1 or args.concurrency < 1:
        parser.error("--sizes, --warmup and --concurrency must be at least 1")
    report = run_interruptibly(run, sizes, args.warmup, args.concurrency)
    write_report(args.out, "idle_sessions", report)


if __name__ == "__main__":
    main()
