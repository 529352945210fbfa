"""Bad input: hypothesis fuzzes the sidecar's HTTP front (a live sidecar process in front of a real MCP
server) while well-behaved clients, one per era, call it in parallel.

Cases: arbitrary and known methods and paths; JSON-RPC-shaped bodies (both eras, odd ids, odd params,
the 2026-07-28 `_meta` envelope), arbitrary JSON, arbitrary bytes, truncated JSON, huge bodies (past
`max_body_bytes`); headers with odd content types, Accept, protocol versions, `Mcp-*` routing headers,
Origin, Last-Event-ID, live, ended and garbage session ids; and raw-socket requests whose Content-Length
lies (truncated payloads) or whose request line is garbage.

The properties: the proxy never answers 500 (nor any 5xx but its designed 502/503/504), every 5xx carries
a JSON-RPC error body, every error answer on the MCP paths that has a body has a JSON body, every answer
comes (no hang), the process never dies and /healthz stays 200, and the parallel good clients never see
a single failure or a reply that is not theirs.

The sidecar's own OpenAPI document is empty (its MCP routes are plain Starlette routes, the rest are kept
out of the schema), so schemathesis would have nothing to generate from: hypothesis drives the cases.

    .venv/bin/python -m bench.reliability.fuzz_http [--examples 3000] [--seed N]
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from bench.reliability._common import (
    ACCEPT_BOTH,
    DESIGNED_5XX,
    HANDSHAKE_VERSION,
    MODERN_VERSION,
    McpClient,
    Report,
    Tally,
    client_loop,
    initialize_request,
    log_dir_for,
    new_http_client,
    proxy_target_http,
    scenario_runner,
    script_main,
    sidecar_config,
    sidecar_process,
)

SCENARIO = "fuzz_http"
DEADLINE_S = 1800.0
MAX_BODY_BYTES: Final = 1024 * 1024  # the sidecar's limit in this run: huge cases straddle it
REQUEST_TIMEOUT_S: Final = 2.0  # the sidecar's request deadline: fuzzed calls of `slow` end quickly
ANSWER_TIMEOUT_S: Final = 15.0  # the response head (and a JSON body) must arrive within this
SSE_READ_WINDOW_S: Final = 0.5  # an event stream is read this long, then closed
MAX_READ_BYTES: Final = 256 * 1024
HEALTH_EVERY: Final = 100  # cases between liveness checks
GOOD_CALL_INTERVAL_S: Final = 0.05
LIVE = "<live>"  # placeholder: a session opened for this case
MCP_PATHS: Final = ("/mcp", "/messages/")

KNOWN_METHODS = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/subscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "subscriptions/listen",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
]
TOOLS = ["echo", "pid", "slow", "headers", "ticks", "measure", "size", "no_such_tool"]

# Uniform percentages (hypothesis's integers lean towards their bounds, which would skew every mix).
PERCENT = st.sampled_from(range(100))
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
odd_ids = st.none() | st.booleans() | st.floats(allow_nan=False) | json_values
ids = st.sampled_from(range(100)).flatmap(
    lambda p: st.integers() if p < 40 else st.text(max_size=20) if p < 75 else odd_ids
)


@st.composite
def tool_params(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(TOOLS) | st.text(max_size=20))
    arguments: Any
    if name == "slow":
        arguments = {"seconds": draw(st.floats(min_value=0, max_value=5))}
    elif name == "ticks":
        arguments = {"count": draw(st.integers(0, 5)), "interval": draw(st.floats(0, 0.2))}
    elif name == "echo":
        arguments = {"text": draw(st.text(max_size=50))}
    else:
        arguments = draw(json_values)
    return {"name": name, "arguments": arguments}


@st.composite
def jsonrpc_messages(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(KNOWN_METHODS)) if draw(PERCENT) < 85 else draw(st.text(max_size=30))
    message: dict[str, Any] = {"jsonrpc": "2.0" if draw(PERCENT) < 90 else draw(st.sampled_from(["1.0", 2]))}
    kind = draw(st.sampled_from(["request"] * 6 + ["notification"] * 2 + ["response", "error"]))
    if kind in ("request", "notification"):
        message["method"] = method
    if kind != "notification":
        message["id"] = draw(ids)
    if kind == "response":
        message["result"] = draw(json_values)
    elif kind == "error":
        message["error"] = draw(
            st.fixed_dictionaries({"code": st.integers(), "message": st.text(max_size=20)}) | json_values
        )
    else:
        if method == "tools/call":
            params: Any = draw(tool_params())
        elif method == "initialize":
            params = initialize_request("x", "fuzz")["params"]
        else:
            params = draw(st.none() | json_values)
        if isinstance(params, dict) and draw(st.booleans()):
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": draw(
                    st.sampled_from([MODERN_VERSION, HANDSHAKE_VERSION, "1999-01-01"]) | st.text(max_size=12)
                ),
                "io.modelcontextprotocol/clientCapabilities": draw(st.just({}) | json_values),
            }
        if params is not None or draw(st.booleans()):
            message["params"] = params
    return message


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["jsonrpc", "jsonrpc", "jsonrpc", "json", "bytes", "truncated", "huge"]))
    if shape == "jsonrpc":
        return json.dumps(draw(jsonrpc_messages())).encode()
    if shape == "json":
        return json.dumps(draw(json_values)).encode()
    if shape == "bytes":
        return draw(st.binary(max_size=2000))
    if shape == "truncated":
        whole = json.dumps(draw(jsonrpc_messages())).encode()
        return whole[: draw(st.integers(0, max(0, len(whole) - 1)))]
    return _huge(draw)


def _huge(draw: st.DrawFn) -> bytes:
    """A tools/call of `size` whose body is just under, just over, or far over the sidecar's limit."""
    size = draw(st.sampled_from([MAX_BODY_BYTES - 200, MAX_BODY_BYTES + 1, 3 * MAX_BODY_BYTES]))
    params = {"name": "size", "arguments": {"blob": "x" * size}}
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).encode()


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    raw: bytes | None = None  # sent as is over a socket (lying Content-Length, garbage request line)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    # Methods the HTTP parser knows; made-up ones go over the raw socket (the parser drops them itself).
    method = draw(
        st.sampled_from(["POST"] * 8 + ["GET", "GET", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "TRACE"])
    )
    common_paths = ["/mcp"] * 12 + [
        "/mcp/",
        "/mcp?x=1",
        "/sse",
        "/messages/",
        f"/messages/?session_id={LIVE}",
    ]
    other_paths = [
        "/messages/?session_id=x",
        "/healthz",
        "/readyz",
        "/status",
        "/metrics",
        "/webhooks/abc",
        "/",
    ]
    if draw(PERCENT) < 10:
        path = "/" + draw(
            st.text(
                st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#?"), max_size=20
            )
        )
    else:
        path = draw(st.sampled_from(common_paths * 3 + other_paths))
    headers: list[tuple[str, str]] = []

    def maybe(name: str, percent: int, usual: list[str], odd: st.SearchStrategy[str] = header_text) -> None:
        """Add `name` `percent`% of the time: a usual value three times out of four, else an odd one."""
        if draw(PERCENT) < percent:
            headers.append((name, draw(st.sampled_from(usual)) if draw(PERCENT) < 75 else draw(odd)))

    maybe("content-type", 90, ["application/json", "application/json; charset=utf-8", "text/plain", ""])
    maybe("accept", 85, [ACCEPT_BOTH, ACCEPT_BOTH, "application/json", "text/event-stream", "*/*", ""])
    maybe("mcp-session-id", 60, [LIVE, LIVE, LIVE, "", "nope", "a" * 200])
    maybe("mcp-protocol-version", 60, [HANDSHAKE_VERSION, MODERN_VERSION, "2024-11-05", "2025-03-26"])
    maybe("mcp-method", 40, KNOWN_METHODS)
    maybe("mcp-name", 30, TOOLS)
    maybe("mcp-param-region", 10, ["eu", ""])
    maybe("origin", 10, ["http://127.0.0.1:1", "http://localhost", "https://evil.example", "null"])
    maybe("last-event-id", 10, ["0", "s-1:1", "garbage", ""])
    maybe("authorization", 10, ["Bearer x", "Basic Zm9vOmJhcg==", ""])
    if draw(PERCENT) < 5:  # a routing header given twice
        headers.append(("mcp-method", draw(st.sampled_from(KNOWN_METHODS))))
    body = draw(bodies())
    raw = None
    if draw(PERCENT) < 10:
        raw = draw(raw_requests(method, path, body))
    return Case(method, path, tuple(headers), body, raw)


@st.composite
def plausible_cases(draw: st.DrawFn) -> Case:
    """A well-formed POST /mcp of either era (live session, matching headers) with a fuzzed message:
    the cases that reach the sessions, the era bridge and the backend."""
    message = draw(jsonrpc_messages())
    method = message.get("method")
    headers = [("content-type", "application/json"), ("accept", ACCEPT_BOTH)]
    if draw(st.booleans()):
        headers += [("mcp-session-id", LIVE), ("mcp-protocol-version", HANDSHAKE_VERSION)]
        if isinstance(message.get("params"), dict):
            message["params"].pop("_meta", None)
    else:
        params = message.setdefault("params", {})
        if isinstance(params, dict):
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        headers.append(("mcp-protocol-version", MODERN_VERSION))
        if isinstance(method, str):
            headers.append(("mcp-method", method))
        if isinstance(params, dict) and isinstance(params.get("name"), str) and params["name"].isascii():
            headers.append(("mcp-name", params["name"]))
    body = json.dumps(message).encode()
    if draw(PERCENT) < 5:  # past (or just under) the body limit, on a path that would otherwise serve it
        body = _huge(draw)
    return Case("POST", "/mcp", tuple(headers), body)


@st.composite
def raw_requests(draw: st.DrawFn, method: str, path: str, body: bytes) -> bytes:
    shape = draw(st.sampled_from(["short-body", "long-body", "garbage", "made-up-method"]))
    if shape == "garbage":
        return draw(st.binary(min_size=1, max_size=300)) + b"\r\n\r\n"
    if shape == "made-up-method":
        method = draw(st.text(st.characters(min_codepoint=0x41, max_codepoint=0x5A), min_size=1, max_size=8))
    cut = body[: draw(st.integers(0, len(body)))] if shape == "short-body" else body + b"extra"
    head = (
        f"{method} {path.replace(LIVE, 'x')} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"content-type: application/json\r\naccept: {ACCEPT_BOTH}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + cut


@dataclass
class FuzzState:
    tried: int = 0
    sent_raw: int = 0
    refused_by_client: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    health_failures: list[str] = field(default_factory=list)


def valid_field_values(headers: Sequence[tuple[str, str]]) -> bool:
    """Whether every header value is a valid RFC 9110 field value (visible characters, space, tab)."""
    return all(all(ch in "\t " or (" " < ch != "\x7f") for ch in value) for _, value in headers)


class Fuzzer:
    def __init__(self, base_url: str, http: httpx.AsyncClient, state: FuzzState) -> None:
        self.base_url = base_url
        self.http = http
        self.state = state
        self._init_counter = 0

    async def open_session(self) -> str:
        self._init_counter += 1
        response = await self.http.post(
            f"{self.base_url}/mcp",
            json=initialize_request(f"fuzz-init-{self._init_counter}", "fuzz"),
            headers={"accept": ACCEPT_BOTH},
        )
        session_id: str = response.headers.get("mcp-session-id", "unavailable")
        return session_id

    async def close_session(self, session_id: str) -> None:
        headers = {"mcp-session-id": session_id, "mcp-protocol-version": HANDSHAKE_VERSION}
        with contextlib.suppress(httpx.HTTPError):
            await self.http.delete(f"{self.base_url}/mcp", headers=headers)

    async def execute(self, case: Case) -> None:
        self.state.tried += 1
        live = None
        if case.raw is None and (LIVE in case.path or any(value == LIVE for _, value in case.headers)):
            live = await self.open_session()
        try:
            if case.raw is not None:
                await self._raw(case)
            else:
                await self._http(case, live)
        finally:
            if live is not None:
                await self.close_session(live)

    def _violation(self, case: Case, what: str) -> None:
        shown = case.body[:120]
        self.state.violations.append(
            f"{what} <- {case.method} {case.path} headers={list(case.headers)[:6]} body[:120]={shown!r}"
            + (f" raw[:120]={case.raw[:120]!r}" if case.raw else "")
        )

    async def _http(self, case: Case, live: str | None) -> None:
        path = case.path.replace(LIVE, live or "x")
        headers = [(name, live if value == LIVE and live else value) for name, value in case.headers]
        try:
            request = self.http.build_request(
                case.method, f"{self.base_url}{path}", headers=headers, content=case.body
            )
        except (httpx.HTTPError, ValueError, UnicodeError):
            self.state.refused_by_client += 1
            return
        try:
            with anyio.fail_after(ANSWER_TIMEOUT_S):
                response = await self.http.send(request, stream=True)
        except TimeoutError:
            self._violation(case, f"no answer within {ANSWER_TIMEOUT_S:g} s")
            return
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol):
            self.state.refused_by_client += 1
            return
        except httpx.HTTPError as exc:
            if not valid_field_values(headers):
                # The parser refused it (see below) and closed while a long body was still being sent.
                self.state.statuses["invalid HTTP, closed"] += 1
                return
            self._violation(case, f"connection failed: {type(exc).__name__}: {exc}")
            return
        try:
            body, finished = await self._read(response)
        finally:
            await response.aclose()
        if response.status_code == 200 and response.headers.get("mcp-session-id"):
            await self.close_session(response.headers["mcp-session-id"])  # a fuzzed initialize worked
        if response.status_code == 400 and not valid_field_values(headers):
            # Not HTTP (RFC 9110 forbids control characters in field values): the HTTP parser refuses it
            # before any MCP handling, with its own plain 400, as it does raw garbage.
            self.state.statuses["400 invalid HTTP"] += 1
            return
        self.state.statuses[str(response.status_code)] += 1
        self._judge(case, path=path, status=response.status_code, body=body, finished=finished)

    async def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        body = b""
        finished = False
        with anyio.move_on_after(SSE_READ_WINDOW_S if streaming else ANSWER_TIMEOUT_S):
            try:
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > MAX_READ_BYTES:
                        break
                finished = True
            except httpx.HTTPError:
                finished = True  # the server ended the body early; judged on what came
        return body, finished or streaming

    def _judge(self, case: Case, *, path: str, status: int, body: bytes, finished: bool) -> None:
        if not finished:
            self._violation(case, f"HTTP {status}: the body did not finish within {ANSWER_TIMEOUT_S:g} s")
            return
        if status == 500 or (status >= 500 and status not in DESIGNED_5XX):
            self._violation(case, f"HTTP {status}: {body[:200]!r}")
            return
        on_mcp_path = path.split("?", maxsplit=1)[0] in MCP_PATHS
        if status >= 400 and body and on_mcp_path and case.method != "HEAD":
            try:
                decoded = json.loads(body)
            except ValueError:
                self._violation(case, f"HTTP {status} error without a JSON body: {body[:200]!r}")
                return
            if status >= 500 and not (isinstance(decoded, dict) and isinstance(decoded.get("error"), dict)):
                self._violation(case, f"HTTP {status} without a JSON-RPC error: {body[:200]!r}")

    async def _raw(self, case: Case) -> None:
        assert case.raw is not None
        self.state.sent_raw += 1
        host, port = self.base_url.removeprefix("http://").split(":")
        answer = b""
        try:
            with anyio.fail_after(ANSWER_TIMEOUT_S):
                async with await anyio.connect_tcp(host, int(port)) as stream:
                    try:
                        await stream.send(case.raw)
                        await stream.send_eof()  # the rest of the promised body never comes
                        while len(answer) < MAX_READ_BYTES:
                            answer += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                        pass  # the server may refuse garbage and close before it has read all of it
        except TimeoutError:
            self._violation(case, f"raw: the connection stayed open {ANSWER_TIMEOUT_S:g} s after EOF")
            return
        except OSError as exc:
            self._violation(case, f"raw: connection failed: {exc}")
            return
        status_line = answer.split(b"\r\n", 1)[0]
        parts = status_line.split(b" ")
        status = parts[1].decode(errors="replace") if len(parts) > 1 else "closed"
        self.state.statuses[f"raw {status}"] += 1
        if status.startswith("5"):
            self._violation(case, f"raw: answered {status_line!r}")


@dataclass
class Options:
    examples: int = 3000
    seed: int | None = None
    log_dir: Path | None = None


def fuzz_in_thread(options: Options, fuzzer: Fuzzer, check_health: Any) -> None:
    """Drive hypothesis (synchronous) from a worker thread; each case runs in the event loop. The seed is
    always explicit (drawn here when not given) and reported, so any run can be replayed with --seed."""

    def one(case: Case) -> None:
        anyio.from_thread.run(fuzzer.execute, case)
        if fuzzer.state.tried % HEALTH_EVERY == 0:
            anyio.from_thread.run(check_health)

    test = given(st.one_of(cases(), plausible_cases()))(one)
    test = settings(
        max_examples=options.examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # failures are recorded, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
    )(test)
    test = hypothesis_seed(options.seed)(test)
    test()


async def scenario(options: Options, report: Report) -> None:
    log_dir = log_dir_for(options.log_dir, SCENARIO)
    report.logs = str(log_dir)
    if options.seed is None:
        options.seed = random.randrange(2**32)
    report.numbers["seed"] = options.seed
    state = FuzzState()
    tally = Tally()
    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(proxy_target_http(log_dir))
        config = sidecar_config(
            {"kind": "http", "url": f"{backend.base_url}/mcp"},
            request_timeout=REQUEST_TIMEOUT_S,
            max_body_bytes=MAX_BODY_BYTES,
        )
        sidecar = await stack.enter_async_context(sidecar_process(config, log_dir))
        http = await stack.enter_async_context(new_http_client(ANSWER_TIMEOUT_S))
        fuzzer = Fuzzer(sidecar.base_url, http, state)

        async def check_health() -> None:
            health = await sidecar.healthz()
            if health != 200 or not sidecar.alive():
                state.health_failures.append(
                    f"after case {state.tried}: /healthz {health}, alive {sidecar.alive()}"
                )

        stop = anyio.Event()
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for era in ("2025", "2026"):
                good_http = await stack.enter_async_context(new_http_client())
                good = McpClient(good_http, sidecar.mcp_url, f"good-{era}", era, tally)
                tg.start_soon(partial(client_loop, good, stop, interval=GOOD_CALL_INTERVAL_S))
            try:
                await anyio.to_thread.run_sync(fuzz_in_thread, options, fuzzer, check_health)
            finally:
                stop.set()
        report.numbers["fuzz_seconds"] = round(time.monotonic() - started, 1)
        await sidecar.check_alive_and_healthy(report)
    report.cases = state.tried
    report.numbers["cases_tried"] = state.tried
    report.numbers["raw_socket_cases"] = state.sent_raw
    report.numbers["cases_the_http_client_refused_to_send"] = state.refused_by_client
    report.numbers["violations"] = len(state.violations)
    report.numbers["statuses"] = dict(sorted(state.statuses.items()))
    good_calls = tally.summary()
    report.numbers["good_client_calls"] = good_calls["calls"]
    report.numbers["good_client_failures"] = good_calls["clean_errors"] + good_calls["violations"]
    for violation in state.violations:
        report.fail(violation)
    for failure in state.health_failures:
        report.fail(failure)
    report.check(good_calls["calls"] > 0, "the good clients made no calls")
    for record in [r for r in tally.records if r.result.kind != "ok"][:20]:
        report.fail(
            f"good client {record.client} {record.what}: {record.result.kind}: {record.result.detail}"
        )


run = scenario_runner(SCENARIO, scenario)


def main(argv: list[str] | None = None) -> int:
    return script_main(
        sys.modules[__name__],
        argv,
        helps={"examples": "hypothesis cases", "seed": "hypothesis seed (default: random)"},
    )


if __name__ == "__main__":
    sys.exit(main())
