"""StdioBackend against real processes: the SDK's stdio server, `cat`, and deliberately broken commands."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcplane_sidecar.backends import stdio
from mcplane_sidecar.backends.base import LinkOptions
from mcplane_sidecar.backends.stdio import REINIT_ID_PREFIX, StdioBackend, StdioLink, _LineBuffer
from mcplane_sidecar.config import StdioBackendConfig
from mcplane_sidecar.errors import BACKEND_UNAVAILABLE, BackendClosed
from mcplane_sidecar.jsonrpc import Message, RequestId, is_response
from mcplane_sidecar.metrics import Metrics

ECHO_SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "stdio_echo_server.py"
# Generous for a loaded CI machine; the SDK server takes about a second to import.
DEADLINE = 10.0


def make_backend(command: str, *args: str, **settings: Any) -> tuple[StdioBackend, Metrics]:
    settings.setdefault("restart_initial_delay", 0.05)
    settings.setdefault("restart_max_delay", 0.2)
    config = StdioBackendConfig(command=command, args=list(args), **settings)
    metrics = Metrics()
    return StdioBackend(config, metrics, request_timeout=DEADLINE), metrics


def echo_server_backend(**settings: Any) -> tuple[StdioBackend, Metrics]:
    return make_backend(sys.executable, str(ECHO_SERVER), **settings)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def restarts(metrics: Metrics, reason: str) -> float:
    return sample(metrics, "mcplane_backend_restarts_total", reason=reason)


async def wait_until(condition: Callable[[], bool], deadline: float = DEADLINE) -> None:
    with anyio.fail_after(deadline):
        while True:
            if condition():
                return
            await anyio.sleep(0.01)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an orphan nobody reaps counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Peer:
    """Drives one link the way the proxy core does, and remembers every message the link delivered."""

    def __init__(self, link: StdioLink) -> None:
        self.link = link
        self.seen: list[Message] = []
        self._next_id = 100

    async def receive(self) -> Message:
        with anyio.fail_after(DEADLINE):
            message = (await self.link.incoming.receive()).message
        self.seen.append(message)
        return message

    async def response_to(self, rid: RequestId) -> Message:
        while True:
            message = await self.receive()
            if is_response(message) and message.get("id") == rid:
                return message

    async def request(self, method: str, params: dict[str, Any] | None = None, **extra: Any) -> Message:
        self._next_id += 1
        message: Message = {"jsonrpc": "2.0", "id": self._next_id, "method": method, **extra}
        if params is not None:
            message["params"] = params
        await self.link.send(message)
        return await self.response_to(self._next_id)

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> Any:
        response = await self.request("tools/call", {"name": tool, "arguments": arguments or {}})
        assert "result" in response, response
        assert response["result"]["isError"] is False, response
        return response["result"]["structuredContent"]

    async def handshake(self, client_name: str = "stdio-test-client") -> Message:
        response = await self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": client_name, "version": "0.0.1"},
            },
        )
        await self.link.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return response


@asynccontextmanager
async def peer(backend: StdioBackend, label: str = "test-session") -> AsyncIterator[Peer]:
    async with backend.open_link(LinkOptions(session_label=label)) as link:
        yield Peer(link)


async def test_round_trip_through_the_sdk_server_keeps_meta_and_unknown_fields() -> None:
    backend, metrics = echo_server_backend()
    assert await backend.check_ready() is None
    async with peer(backend) as client:
        initialized = await client.handshake()
        assert initialized["result"]["serverInfo"]["name"] == "stdio-echo"
        server_pid = client.link.pid
        assert server_pid is not None

        tools = await client.request("tools/list", {}, **{"x-top-level-extension": {"kept": True}})
        assert {tool["name"] for tool in tools["result"]["tools"]} >= {"echo", "pid", "crash", "raw_params"}

        assert await client.call("echo", {"text": "héllo ✓ \u2028 line"}) == {"result": "héllo ✓ \u2028 line"}

        params = {
            "name": "raw_params",
            "arguments": {},
            "_meta": {
                "progressToken": "tok-1",
                "com.example/trace": {"span": "abc", "values": [1, 2.5, None, True, "é"], "$defs": {}},
            },
            "x-unknown-param": {"nested": [{"deep": "value"}]},
        }
        response = await client.request("tools/call", params)
        # What the server decoded off its stdin is exactly what the client sent: nothing added or lost.
        assert response["result"]["structuredContent"] == params

        async with client.link.listen():  # stdio has no separate listen stream; holding it is harmless
            assert await client.call("pid") == {"result": server_pid}

    assert not alive(server_pid), "the server process outlived its link"
    assert restarts(metrics, "crash") == 0
    assert sample(metrics, "mcplane_backend_errors_total", kind="bad_output") == 0


async def test_messages_pass_through_unchanged_both_ways() -> None:
    backend, _ = make_backend("cat")
    messages: list[Message] = [
        {
            "jsonrpc": "2.0",
            "id": "req-1",
            "method": "tools/call",
            "params": {"_meta": {"vendor.example/x": [1, {"y": None}]}, "arguments": {"big": 2**62}},
            "x-top": "kept",
        },
        {"jsonrpc": "2.0", "method": "notifications/custom", "params": {"ünïcode": "✓", "float": 1.5e-7}},
        {"jsonrpc": "2.0", "id": 7, "result": {"inputSchema": {"$defs": {"a": {"$anchor": "b"}}}}},
        # A lone surrogate cannot be written as UTF-8; it must still arrive as the same JSON string.
        {"jsonrpc": "2.0", "method": "notifications/odd", "params": {"text": "\ud800 lone"}},
    ]
    async with peer(backend) as client:
        for message in messages:
            await client.link.send(message)
        received = [await client.receive() for _ in messages]
    assert received == messages


async def test_stdout_lines_that_are_not_json_rpc_are_skipped() -> None:
    script = 'echo "starting up..."; echo "[1, 2]"; echo \'{"jsonrpc":"2.0","method":"hello"}\'; exec cat'
    backend, metrics = make_backend("sh", "-c", script)
    async with peer(backend) as client:
        assert await client.receive() == {"jsonrpc": "2.0", "method": "hello"}
        await client.link.send({"jsonrpc": "2.0", "method": "after"})
        assert await client.receive() == {"jsonrpc": "2.0", "method": "after"}
    assert sample(metrics, "mcplane_backend_errors_total", kind="bad_output") == 2
    assert restarts(metrics, "crash") == 0


async def test_crash_settles_the_request_then_a_restarted_reinitialized_server_answers() -> None:
    backend, metrics = echo_server_backend()
    async with peer(backend) as client:
        await client.handshake(client_name="crash-test-client")
        first_pid = (await client.call("pid"))["result"]

        await client.link.send(
            {
                "jsonrpc": "2.0",
                "id": "crash-7",
                "method": "tools/call",
                "params": {"name": "crash", "arguments": {}},
            }
        )
        error = await client.response_to("crash-7")
        assert error["error"]["code"] == BACKEND_UNAVAILABLE
        assert "backend process exited with code 3" in error["error"]["message"]

        await wait_until(lambda: restarts(metrics, "crash") >= 1)
        # Sent while the new process is re-initialized: the link holds it until the replay is done.
        second_pid = (await client.call("pid"))["result"]
        assert second_pid != first_pid
        # The new process was initialized with the client's own initialize, not a made-up one.
        assert await client.call("client_name") == {"result": "crash-test-client"}

    assert restarts(metrics, "crash") == 1
    assert not any(str(m.get("id", "")).startswith(REINIT_ID_PREFIX) for m in client.seen)
    assert not alive(first_pid)
    assert not alive(second_pid)


async def test_missing_executable_answers_requests_with_an_error_and_keeps_retrying() -> None:
    backend, metrics = make_backend("/nonexistent/mcplane-test-server")
    assert await backend.check_ready() == "backend command /nonexistent/mcplane-test-server does not exist"
    async with peer(backend) as client:
        response = await client.request("initialize", {"protocolVersion": "2025-11-25"})
        assert response["error"]["code"] == BACKEND_UNAVAILABLE
        assert response["error"]["message"].startswith("cannot start backend: ")
        assert "No such file or directory" in response["error"]["message"]

        await client.link.send({"jsonrpc": "2.0", "method": "notifications/initialized"})  # dropped, no raise
        # The first start and two restarts, each failed. The restart is counted before its spawn, so wait
        # for the spawn errors themselves.
        await wait_until(
            lambda: (
                restarts(metrics, "start_failed") >= 2
                and sample(metrics, "mcplane_backend_errors_total", kind="spawn") >= 3
            )
        )
        with pytest.raises(anyio.WouldBlock):
            client.link.incoming.receive_nowait()


async def test_check_ready_names_a_command_missing_from_path() -> None:
    backend, _ = make_backend("mcplane-no-such-command-on-path")
    assert (
        await backend.check_ready() == "backend command mcplane-no-such-command-on-path was not found on PATH"
    )


async def test_a_server_that_dies_at_once_is_restarted_only_at_the_backoff_rate() -> None:
    backend, metrics = make_backend(
        sys.executable, "-c", "import sys; sys.exit(1)", restart_initial_delay=0.1, restart_max_delay=0.4
    )
    async with peer(backend) as client:
        started = anyio.current_time()
        await wait_until(lambda: restarts(metrics, "crash") >= 5)
        elapsed = anyio.current_time() - started

        # Whether it lands while the process is down or in its short life, a request is settled, not lost.
        response = await client.request("ping")
        assert response["error"]["code"] == BACKEND_UNAVAILABLE
        assert response["error"]["message"] == "backend process exited with code 1"

    # Delays 0.1, 0.2, 0.4, then capped at 0.4, 0.4: at least 1.5 s; without the cap at least 3.1 s.
    assert elapsed >= 1.45
    assert elapsed < 2.8
    assert restarts(metrics, "crash") <= 6


async def test_link_close_kills_a_server_that_ignores_stdin_and_sigterm(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(stdio, "STOP_GRACE", 0.2)
    monkeypatch.setattr(stdio, "TERM_GRACE", 0.2)
    script = (
        "import json, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "ready = {'jsonrpc': '2.0', 'method': 'ready', 'params': {'child': child.pid}}\n"
        "print(json.dumps(ready), flush=True)\n"
        "time.sleep(60)\n"
    )
    backend, _ = make_backend(sys.executable, "-c", script)
    caplog.set_level(logging.WARNING, logger=stdio.__name__)
    async with peer(backend) as client:
        ready = await client.receive()
        leader = client.link.pid
        child = ready["params"]["child"]
        assert leader is not None
        assert alive(leader)
        assert alive(child)
        closing = anyio.current_time()
    assert anyio.current_time() - closing < 3.0
    assert not alive(leader)
    # SIGKILL went to the whole process group; give the kernel a moment to finish the orphan off.
    await wait_until(lambda: not alive(child), deadline=2.0)
    assert any("ignored SIGTERM" in record.getMessage() for record in caplog.records)


async def test_stderr_lines_are_logged_with_the_session_label(caplog: pytest.LogCaptureFixture) -> None:
    backend, _ = make_backend("sh", "-c", "echo 'boom on stderr' >&2; exec cat", stderr="log")
    caplog.set_level(logging.INFO, logger=stdio.__name__)

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "boom on stderr" in r.getMessage()]

    async with peer(backend, label="sess-42"):
        await wait_until(lambda: bool(logged()))
    (record,) = logged()
    assert record.levelno == logging.INFO
    assert getattr(record, "session_id", None) == "sess-42"


async def test_send_after_close_raises_backend_closed() -> None:
    backend, _ = make_backend("cat")
    async with peer(backend) as client:
        await client.link.send({"jsonrpc": "2.0", "method": "x"})
        await client.receive()
        pid = client.link.pid
    with pytest.raises(BackendClosed):
        await client.link.send({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert pid is not None
    assert not alive(pid)


async def test_an_error_in_the_callers_block_comes_out_unwrapped_and_the_process_is_stopped() -> None:
    backend, _ = make_backend("cat")
    pids: list[int | None] = []

    async def use_then_fail() -> None:
        async with peer(backend) as client:
            await client.link.send({"jsonrpc": "2.0", "method": "x"})
            await client.receive()
            pids.append(client.link.pid)
            raise LookupError("raised by the caller")

    with pytest.raises(LookupError, match="raised by the caller"):
        await use_then_fail()
    (pid,) = pids
    assert pid is not None
    assert not alive(pid)


def test_line_buffer_splits_across_chunks_and_drops_oversized_lines() -> None:
    lines = _LineBuffer(limit=8)
    assert lines.feed(b'{"a"') == []
    assert lines.feed(b':1}\n{"b":2}\n{') == [b'{"a":1}', b'{"b":2}']
    assert lines.feed(b"0123456789") == []  # over the limit: this line is dropped whole
    assert lines.dropped == 1
    assert lines.feed(b"tail of the long line\nok\n") == [b"ok"]
    assert lines.feed(b"last") == []
    assert lines.rest() == b"last"


async def test_server_gets_its_extra_env_but_not_the_sidecars_own_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCPLANE_SECURITY__TOKENS", "client-token")
    script = (
        'printf \'{"jsonrpc":"2.0","method":"env","params":{"token":"%s","extra":"%s"}}\\n\' '
        '"${MCPLANE_SECURITY__TOKENS:-unset}" "$EXTRA_SETTING"; exec cat'
    )
    backend, _ = make_backend("sh", "-c", script, env={"EXTRA_SETTING": "from-config"})
    async with peer(backend) as client:
        assert (await client.receive())["params"] == {"token": "unset", "extra": "from-config"}
