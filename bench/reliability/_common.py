"""What every reliability scenario shares: the sidecar as a subprocess, raw MCP clients that judge each
answer, the tally of outcomes, reports, and the script runner (deadline, signals, summary files).

A call ends in one of three ways:
- ok: the final JSON-RPC response with the request's id, and (for `echo`) exactly the text this caller
  sent, so a reply delivered to the wrong session shows up as a violation;
- error: a clean failure, a JSON-RPC error with the request's id in a JSON body (4xx, or 502/503/504:
  the proxy's designed answers for trouble behind it);
- violation: anything else (a 500, another 5xx, an error without a JSON-RPC body, someone else's
  reply, no answer, a dropped connection to the proxy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal

import anyio
import httpx
import yaml

from bench._measure import LatencySummary, error_text
from tests.support.processes import (
    FIXTURES,
    LOOPBACK,
    PYTHON,
    REPO_ROOT,
    ProcessHandle,
    async_running_process,
    free_port,
)

RESULTS_DIR: Final = REPO_ROOT / "bench" / "results" / "reliability"
SIDECAR_BIN: Final = PYTHON.parent / "mcplane-sidecar"
PROXY_TARGET: Final = FIXTURES / "proxy_target.py"

ACCEPT_BOTH: Final = "application/json, text/event-stream"
HANDSHAKE_VERSION: Final = "2025-11-25"
MODERN_VERSION: Final = "2026-07-28"
SESSION_NOT_FOUND: Final = -32011  # the proxy's code for an unknown or ended session (errors.py)
DESIGNED_5XX: Final = frozenset({502, 503, 504})  # the proxy's own answers for trouble behind it
# Between a failed call and the next one: a client hammering a dead backend measures nothing useful.
ERROR_PAUSE_S: Final = 0.1
# A client gives up on one answer after this long (a hang is a violation); above every request_timeout used.
CLIENT_TIMEOUT_S: Final = 30.0
CONNECT_TIMEOUT_S: Final = 5.0
# Ceiling of how many examples of each failure a report quotes.
MAX_EXAMPLES: Final = 20
# The sidecar's SIGTERM drain: short, so a stopped run does not wait for stalled requests.
DRAIN_TIMEOUT_S: Final = 1.0
SIDECAR_STOP_TIMEOUT_S: Final = 10.0
HEALTH_TIMEOUT_S: Final = 5.0


# ---------------------------------------------------------------------------------------------------------
# reports


@dataclass
class Report:
    """What one run found; written as `<scenario>.json` and `<scenario>.md`."""

    scenario: str
    sizes: dict[str, Any]
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    duration_s: float = 0.0
    cases: int = 0
    numbers: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: str | None = None
    logs: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures and self.interrupted is None

    def fail(self, what: str) -> None:
        self.failures.append(what)

    def check(self, holds: bool, what: str) -> None:
        """Record `what` as a failure unless it holds."""
        if not holds:
            self.fail(what)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def markdown(self) -> str:
        verdict = "PASS" if self.passed else ("INTERRUPTED" if self.interrupted else "FAIL")
        lines = [
            f"# Reliability: {self.scenario} — {verdict}",
            "",
            f"Started {self.started_at}, took {self.duration_s:.1f} s. Cases tried: {self.cases}. "
            f"Failures: {len(self.failures)}.",
            "",
            "Sizes: " + ", ".join(f"{key}={value}" for key, value in self.sizes.items()),
            "",
            "| number | value |",
            "|---|---|",
        ]
        lines += [f"| {key} | {_cell(value)} |" for key, value in self.numbers.items()]
        if self.interrupted:
            lines += ["", f"Interrupted: {self.interrupted}"]
        if self.failures:
            lines += ["", "Failures:", ""]
            lines += [f"- {failure}" for failure in self.failures[:MAX_EXAMPLES]]
            if len(self.failures) > MAX_EXAMPLES:
                lines.append(f"- … and {len(self.failures) - MAX_EXAMPLES} more (see the JSON)")
        if self.notes:
            lines += ["", *[f"Note: {note}" for note in self.notes]]
        if self.logs:
            lines += ["", f"Process logs: {self.logs}"]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / f"{self.scenario}.json"
        md_path = out_dir / f"{self.scenario}.md"
        json_path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
        md_path.write_text(self.markdown())
        return json_path, md_path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


# ---------------------------------------------------------------------------------------------------------
# the script runner


def base_parser(description: str, *, deadline: float) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--deadline", type=float, default=deadline, help="hard cap of the whole run (s)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the summaries go")
    parser.add_argument("--log-dir", type=Path, default=None, help="process logs (default: a temp dir)")
    return parser


def run_script(
    scenario: Callable[[Report], Awaitable[None]], report: Report, *, deadline: float, out_dir: Path
) -> int:
    """Run `scenario` under `deadline`, stopping on SIGINT/SIGTERM; write and print the summary.

    Exit status 0 when the run passed, 1 when a check failed, 2 when it was interrupted or overran. The
    scenario's own context managers stop every process it started, on every way out.
    """

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        report.interrupted = f"stopped by {signal.Signals(signum).name}"
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_signals)
            with anyio.move_on_after(deadline) as scope:
                await scenario(report)
            if scope.cancelled_caught and report.interrupted is None:
                report.interrupted = f"deadline of {deadline:g} s reached"
            tg.cancel_scope.cancel()

    started = time.monotonic()
    try:
        anyio.run(main)
    except Exception as exc:
        report.fail(f"the run itself failed: {error_text(exc)}")
    report.duration_s = round(time.monotonic() - started, 1)
    json_path, md_path = report.write(out_dir)
    print(report.markdown())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    if report.interrupted:
        return 2
    return 0 if report.passed else 1


def log_dir_for(explicit: Path | None, scenario: str) -> Path:
    if explicit is not None:
        explicit.mkdir(parents=True, exist_ok=True)
        return explicit
    return Path(tempfile.mkdtemp(prefix=f"mcplane-reliability-{scenario}-"))


# ---------------------------------------------------------------------------------------------------------
# processes


def rss_kib(pid: int) -> int | None:
    """Resident set size of `pid` in KiB (Linux /proc), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class SidecarProcess:
    """A running `mcplane-sidecar` subprocess."""

    handle: ProcessHandle
    config_path: Path

    @property
    def pid(self) -> int:
        return self.handle.pid

    @property
    def base_url(self) -> str:
        return self.handle.base_url

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def alive(self) -> bool:
        return self.handle.process.poll() is None

    def rss_kib(self) -> int | None:
        return rss_kib(self.pid)

    async def healthz(self) -> int | None:
        """The /healthz status, None when the proxy does not answer."""
        try:
            async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S) as http:
                return (await http.get(f"{self.base_url}/healthz")).status_code
        except httpx.HTTPError:
            return None

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S) as http:
            found: dict[str, Any] = (await http.get(f"{self.base_url}/status")).json()
            return found

    async def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S) as http:
            text = (await http.get(f"{self.base_url}/metrics")).text
        return metric_value(text, name, labels)

    async def check_alive_and_healthy(self, report: Report) -> None:
        """The no-crash property: the process still runs and /healthz answers 200."""
        report.check(self.alive(), f"the sidecar process exited (code {self.handle.process.returncode})")
        health = await self.healthz() if self.alive() else None
        report.numbers["healthz_at_end"] = health
        report.check(health == 200, f"/healthz answered {health} at the end")
        errors = self.logged_errors()
        report.numbers["sidecar_logged_errors"] = len(errors)
        for line in errors[:MAX_EXAMPLES]:
            report.fail(f"the sidecar logged an unexpected error: {line[:300]}")

    def logged_errors(self) -> list[str]:
        """Log lines of the proxy's own unexpected errors (the 500 handler and crash traces)."""
        return [
            line
            for line in self.handle.log_text().splitlines()
            if "unexpected error serving" in line or "Traceback" in line
        ]


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    total = 0.0
    wanted = [f'{key}="{value}"' for key, value in (labels or {}).items()]
    for line in text.splitlines():
        if line.startswith("#") or not (line.startswith((f"{name}{{", f"{name} "))):
            continue
        series, _, value = line.rpartition(" ")
        if all(label in series for label in wanted):
            total += float(value)
    return total


def sidecar_config(backend: Mapping[str, Any], **sessions: Any) -> dict[str, Any]:
    return {
        "name": "reliability",
        "backend": dict(backend),
        "sessions": sessions,
        "logging": {"json": True, "level": "info"},
        "drain_timeout": DRAIN_TIMEOUT_S,
    }


@asynccontextmanager
async def sidecar_process(
    config: Mapping[str, Any],
    log_dir: Path,
    *,
    label: str = "sidecar",
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[SidecarProcess]:
    """`mcplane-sidecar --config` on a free loopback port until the block ends; stopped by PID."""
    port = free_port()
    full = {**config, "server": {"host": LOOPBACK, "port": port, "transport": "http"}}
    await anyio.Path(log_dir).mkdir(parents=True, exist_ok=True)
    config_path = log_dir / f"{label}-{port}.yaml"
    await anyio.Path(config_path).write_text(yaml.safe_dump(full, sort_keys=False))
    argv: list[str | os.PathLike[str]] = [SIDECAR_BIN, "--config", config_path]
    async with async_running_process(
        argv, port=port, env=env, log_dir=log_dir, label=label, stop_timeout=SIDECAR_STOP_TIMEOUT_S
    ) as handle:
        yield SidecarProcess(handle, config_path)


@asynccontextmanager
async def proxy_target_http(log_dir: Path, port: int | None = None) -> AsyncIterator[ProcessHandle]:
    """tests/fixtures/proxy_target.py over Streamable HTTP (echo, slow, ticks, ...) as a subprocess."""
    port = port or free_port()
    argv: list[str | os.PathLike[str]] = [PYTHON, PROXY_TARGET, "--transport", "http", "--port", str(port)]
    async with async_running_process(argv, port=port, log_dir=log_dir, label="proxy-target") as handle:
        yield handle


# ---------------------------------------------------------------------------------------------------------
# judging answers


Kind = Literal["ok", "error", "violation"]


@dataclass(frozen=True)
class CallResult:
    kind: Kind
    status: int | None
    latency: float
    at: float  # monotonic time the answer (or failure) arrived
    detail: str = ""
    code: int | None = None  # the JSON-RPC error code of a clean error


def jsonrpc_messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a JSON or SSE body (an unparseable JSON body yields nothing)."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        found = []
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                try:
                    decoded = json.loads(line[5:].strip())
                except ValueError:
                    continue
                if isinstance(decoded, dict):
                    found.append(decoded)
        return found
    try:
        decoded = response.json()
    except ValueError:
        return []
    return [decoded] if isinstance(decoded, dict) else []


def is_jsonrpc_error_body(response: httpx.Response) -> bool:
    return any(isinstance(message.get("error"), dict) for message in jsonrpc_messages(response))


def judge(response: httpx.Response, rid: str, started: float, expected_text: str | None = None) -> CallResult:
    """Classify the answer to request `rid` (see the module docstring)."""
    now = time.monotonic()
    status = response.status_code

    def result(kind: Kind, detail: str = "", code: int | None = None) -> CallResult:
        return CallResult(kind, status, now - started, now, detail, code)

    if status == 500:
        return result("violation", f"HTTP 500: {response.text[:200]}")
    if status >= 500 and status not in DESIGNED_5XX:
        return result("violation", f"HTTP {status}: {response.text[:200]}")
    final = next(
        (m for m in jsonrpc_messages(response) if m.get("id") == rid and "method" not in m),
        None,
    )
    if final is None:
        return result("violation", f"HTTP {status} without a response for id {rid}: {response.text[:200]}")
    error = final.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        return result(
            "error", f"HTTP {status} {code}: {error.get('message')}", code if isinstance(code, int) else None
        )
    if status >= 400:
        return result("violation", f"HTTP {status} with a result: {response.text[:200]}")
    if expected_text is not None:
        content = (final.get("result") or {}).get("content") or [{}]
        text = content[0].get("text") if isinstance(content[0], dict) else None
        if text != expected_text:
            return result("violation", f"crossed reply: sent {expected_text!r}, got {text!r}")
    return result("ok")


def transport_failure(started: float, exc: BaseException) -> CallResult:
    """The proxy did not answer at all: refused, reset, or timed out. Always a violation."""
    now = time.monotonic()
    return CallResult("violation", None, now - started, now, f"no answer from the proxy: {error_text(exc)}")


# ---------------------------------------------------------------------------------------------------------
# clients


def initialize_request(rid: str, name: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": {"name": name, "version": "1"},
        },
    }


def tool_call(rid: str, tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": tool, "arguments": dict(arguments)},
    }


def stateless_tool_call(
    rid: str, tool: str, arguments: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 `tools/call`: the `_meta` envelope in the body, the routing headers beside it."""
    body = tool_call(rid, tool, arguments)
    body["params"]["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {
        "accept": ACCEPT_BOTH,
        "content-type": "application/json",
        "mcp-protocol-version": MODERN_VERSION,
        "mcp-method": "tools/call",
        "mcp-name": tool,
    }
    return body, headers


def new_http_client(timeout: float = CLIENT_TIMEOUT_S) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S))


Era = Literal["2025", "2026"]


class McpClient:
    """One raw MCP client against the proxy: a 2025-era session (opened on demand, re-opened when the
    proxy says it is gone) or 2026-07-28 stateless calls. Every answer is judged and tallied."""

    def __init__(self, http: httpx.AsyncClient, url: str, name: str, era: Era, tally: Tally) -> None:
        self.http = http
        self.url = url
        self.name = name
        self.era = era
        self.tally = tally
        self.session_id: str | None = None
        self._counter = 0
        self._token = uuid.uuid4().hex[:8]  # makes every text unique across clients and runs

    def _next_id(self) -> str:
        self._counter += 1
        return f"{self.name}-{self._counter}"

    async def _post(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> httpx.Response:
        return await self.http.post(self.url, json=body, headers=dict(headers))

    def _session_headers(self) -> dict[str, str]:
        assert self.session_id is not None
        return {
            "accept": ACCEPT_BOTH,
            "mcp-session-id": self.session_id,
            "mcp-protocol-version": HANDSHAKE_VERSION,
        }

    async def open(self) -> CallResult:
        """initialize + notifications/initialized; on success the client has a session."""
        rid = self._next_id()
        started = time.monotonic()
        try:
            response = await self._post(initialize_request(rid, self.name), {"accept": ACCEPT_BOTH})
        except httpx.HTTPError as exc:
            return self.tally.add(self.name, transport_failure(started, exc), "initialize")
        outcome = judge(response, rid, started)
        session_id = response.headers.get("mcp-session-id")
        if outcome.kind == "ok" and session_id is None:
            outcome = CallResult(
                "violation", response.status_code, outcome.latency, outcome.at, "no session id"
            )
        if outcome.kind == "ok" and session_id is not None:
            self.session_id = session_id
            try:
                note = await self._post(
                    {"jsonrpc": "2.0", "method": "notifications/initialized"}, self._session_headers()
                )
            except httpx.HTTPError as exc:
                self.session_id = None
                return self.tally.add(self.name, transport_failure(started, exc), "initialize")
            if note.status_code != 202:
                self.session_id = None
                kind: Kind = "violation" if note.status_code == 500 else "error"
                outcome = CallResult(
                    kind, note.status_code, outcome.latency, time.monotonic(), note.text[:200]
                )
        return self.tally.add(self.name, outcome, "initialize")

    async def call(self, tool: str, arguments: Mapping[str, Any], expected_text: str | None) -> CallResult:
        rid = self._next_id()
        if self.era == "2026":
            body, headers = stateless_tool_call(rid, tool, arguments)
        else:
            if self.session_id is None:
                raise RuntimeError("open() the session first")
            body, headers = tool_call(rid, tool, arguments), self._session_headers()
        started = time.monotonic()
        try:
            response = await self._post(body, headers)
        except httpx.HTTPError as exc:
            return self.tally.add(self.name, transport_failure(started, exc), tool)
        outcome = judge(response, rid, started, expected_text)
        if outcome.kind == "error" and (outcome.code == SESSION_NOT_FOUND or outcome.status == 404):
            self.session_id = None  # the spec's rule: a 404 means start a new session
        return self.tally.add(self.name, outcome, tool)

    async def echo(self) -> CallResult:
        text = f"{self.name}/{self._token}/{self._counter + 1}"
        return await self.call("echo", {"text": text}, text)

    async def close(self) -> None:
        if self.session_id is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self.http.delete(self.url, headers=self._session_headers())
            self.session_id = None


async def client_loop(
    client: McpClient,
    stop: anyio.Event,
    *,
    interval: float | None = None,
    reopen_after_errors: int | None = None,
    churn_every: int | None = None,
    action: Callable[[McpClient], Awaitable[CallResult]] | None = None,
) -> None:
    """Call `action` (default: echo) until `stop`: a session is (re)opened when needed, `interval` paces
    the calls (None: back to back), errors pause briefly; `reopen_after_errors` consecutive errors start
    a new session; `churn_every` calls end the session on purpose (DELETE) and open a new one."""
    act = action or McpClient.echo
    consecutive_errors = 0
    calls = 0
    next_at = time.monotonic()
    while not stop.is_set():
        if client.era == "2025" and client.session_id is None:
            outcome = await client.open()
        else:
            outcome = await act(client)
            calls += 1
        if outcome.kind == "ok":
            consecutive_errors = 0
        else:
            consecutive_errors += 1
            if reopen_after_errors is not None and consecutive_errors >= reopen_after_errors:
                await client.close()
                consecutive_errors = 0
        if churn_every is not None and calls and calls % churn_every == 0 and client.session_id:
            await client.close()
        if outcome.kind != "ok":
            next_at = max(next_at, time.monotonic()) + ERROR_PAUSE_S
        elif interval is not None:
            next_at = max(next_at + interval, time.monotonic() - interval)  # no catch-up burst
        else:
            next_at = time.monotonic()
        delay = next_at - time.monotonic()
        if delay > 0:
            with anyio.move_on_after(delay):
                await stop.wait()
    await client.close()


# ---------------------------------------------------------------------------------------------------------
# the tally


@dataclass(frozen=True)
class Record:
    client: str
    what: str
    result: CallResult


@dataclass(frozen=True)
class Recovery:
    first_ok_s: float | None  # seconds from the moment to the first success of any client
    all_ok_s: float | None  # ... to the moment every client had succeeded again
    all_ok_at: float | None
    stuck: list[str]  # clients with no success in the window


def scenario_runner(
    name: str, scenario: Callable[[Any, Report], Awaitable[None]]
) -> Callable[..., Awaitable[Report]]:
    """A scenario's `run(options, report=None)`, as the tests call it."""

    async def run(options: Any, report: Report | None = None) -> Report:
        report = report or Report(name, sizes_of(options))
        await scenario(options, report)
        return report

    return run


class Tally:
    """Every outcome of a run, in order; summaries by kind and time."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def add(self, client: str, result: CallResult, what: str) -> CallResult:
        self.records.append(Record(client, what, result))
        return result

    def of(self, kind: Kind, *, since: float = 0.0, until: float = float("inf")) -> list[Record]:
        return [r for r in self.records if r.result.kind == kind and since <= r.result.at < until]

    @property
    def calls(self) -> int:
        return len(self.records)

    def count(self, kind: Kind) -> int:
        return sum(1 for r in self.records if r.result.kind == kind)

    def first_ok_after(self, moment: float, client: str | None = None) -> float | None:
        times = [
            r.result.at
            for r in self.records
            if r.result.kind == "ok" and r.result.at >= moment and (client is None or r.client == client)
        ]
        return min(times) if times else None

    def clients(self) -> list[str]:
        return sorted({r.client for r in self.records})

    def recovery(self, moment: float, *, until: float = float("inf")) -> Recovery:
        """How long after `moment` the first client, and then every client, had a call succeed again."""
        per_client = {name: self.first_ok_after(moment, name) for name in self.clients()}
        stuck = [name for name, at in per_client.items() if at is None or at >= until]
        first = self.first_ok_after(moment)
        last = max((at for at in per_client.values() if at is not None), default=None)
        return Recovery(
            first_ok_s=round(first - moment, 3) if first else None,
            all_ok_s=round(last - moment, 3) if last else None,
            all_ok_at=last,
            stuck=stuck,
        )

    def latencies(self, *, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [r.result.latency for r in self.of("ok", since=since, until=until)]

    def summary(self) -> dict[str, Any]:
        errors_by: dict[str, int] = {}
        for record in self.of("error"):
            key = f"{record.result.status} {record.result.code}"
            errors_by[key] = errors_by.get(key, 0) + 1
        latency = LatencySummary.maybe(self.latencies())
        return {
            "calls": self.calls,
            "ok": self.count("ok"),
            "clean_errors": self.count("error"),
            "violations": self.count("violation"),
            "clean_errors_by_status_code": errors_by,
            "ok_latency_ms": asdict(latency) if latency else None,
        }

    def report_violations(self, report: Report) -> None:
        for record in self.of("violation")[:MAX_EXAMPLES]:
            report.fail(f"{record.client} {record.what}: {record.result.detail}")
        extra = self.count("violation") - MAX_EXAMPLES
        if extra > 0:
            report.fail(f"… and {extra} more violations")


def sizes_of(options: Any) -> dict[str, Any]:
    """The size flags of a scenario's options, for the report."""
    return {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(options).items()
        if key not in ("out", "log_dir", "deadline")
    }


def python_env() -> dict[str, str]:
    """Environment for subprocesses that import the repository's modules."""
    current = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{current}" if current else str(REPO_ROOT)}


def script_main(module: ModuleType, argv: list[str] | None, helps: Mapping[str, str] | None = None) -> int:
    """A scenario script's command line: one `--flag` per field of its `Options` dataclass (`log_dir`
    excepted), then its `scenario` under its `deadline_of(options)` if it has one, else its `DEADLINE_S`."""
    options_type = module.Options
    deadline = getattr(module, "deadline_of", None) or module.DEADLINE_S
    parser = base_parser(module.__doc__ or module.SCENARIO, deadline=0 if callable(deadline) else deadline)
    for spec in fields(options_type):
        if spec.name == "log_dir":
            continue
        default = spec.default
        kind = type(default) if default is not None else _optional_type(str(spec.type))
        parser.add_argument(
            f"--{spec.name.replace('_', '-')}", type=kind, default=default, help=(helps or {}).get(spec.name)
        )
    args = parser.parse_args(argv)
    values = {spec.name: getattr(args, spec.name) for spec in fields(options_type) if spec.name != "log_dir"}
    options = options_type(**values, log_dir=args.log_dir)
    cap = args.deadline or (deadline(options) if callable(deadline) else deadline)
    report = Report(module.SCENARIO, sizes_of(options))
    return run_script(lambda r: module.scenario(options, r), report, deadline=cap, out_dir=args.out)


def _optional_type(annotation: str) -> type:
    """`int | None` -> int: the flag type of an option whose default is None."""
    return {"int": int, "float": float, "str": str}[annotation.split("|", maxsplit=1)[0].strip()]
