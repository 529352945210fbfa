"""The sidecar in front of a stdio server: a crash fails the request in flight with its own id, the
process comes back (re-initialized with the client's own initialize), and the session goes on."""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from mcplane_sidecar import build_config, create_app
from tests.e2e.proxy_harness import (
    ACCEPT_BOTH,
    Proxied,
    call,
    final_response,
    initialize_request,
    open_session,
    session_headers,
)
from tests.support.asgi import serve_asgi
from tests.support.processes import FIXTURES
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e
DEADLINE = 30


@asynccontextmanager
async def sidecar_over_stdio() -> AsyncIterator[Proxied]:
    config = build_config(
        {
            "backend": {
                "kind": "stdio",
                "stdio": {
                    "command": sys.executable,
                    "args": [str(FIXTURES / "stdio_echo_server.py")],
                    "restart_initial_delay": 0.1,
                },
            }
        }
    )
    app = create_app(config)
    async with serve_asgi(app) as base:
        yield Proxied(url=f"{base}/mcp", base=base, backend_base="", app=app)


def tool_text(response: httpx.Response, request_id: int) -> str:
    return str(final_response(response, request_id)["result"]["content"][0]["text"])


async def test_a_crashed_stdio_server_is_restarted_under_the_same_session() -> None:
    async with sidecar_over_stdio() as proxied, httpx.AsyncClient(timeout=DEADLINE) as http:
        session_id = await open_session(http, proxied.url)
        headers = session_headers(session_id)
        first_pid = tool_text(await http.post(proxied.url, json=call(2, "pid", {}), headers=headers), 2)
        crashed = await http.post(proxied.url, json=call(3, "crash", {}), headers=headers)
        error = final_response(crashed, 3)["error"]
        assert error["code"] == -32003
        assert "exited" in error["message"]
        second_pid = tool_text(await http.post(proxied.url, json=call(4, "pid", {}), headers=headers), 4)
        assert second_pid != first_pid
        # The replayed initialize was the client's own: the server knows the client by its name.
        name = tool_text(await http.post(proxied.url, json=call(5, "client_name", {}), headers=headers), 5)
        assert name == "mcplane-tests"
        metrics = (await http.get(f"{proxied.base}/metrics")).text
        assert 'mcplane_backend_restarts_total{reason="crash"} 1.0' in metrics


async def test_each_session_gets_its_own_process() -> None:
    async with sidecar_over_stdio() as proxied, httpx.AsyncClient(timeout=DEADLINE) as http:
        pids = set()
        for _ in range(3):
            headers = session_headers(await open_session(http, proxied.url))
            pids.add(tool_text(await http.post(proxied.url, json=call(2, "pid", {}), headers=headers), 2))
        assert len(pids) == 3


async def test_a_session_whose_client_gave_up_on_initialize_is_closed() -> None:
    # A server that takes 1.5 s to start; the client waits 0.3 s for its initialize, then leaves.
    slow_start = (
        "import runpy, sys, time; time.sleep(1.5); "
        f"sys.argv = [{str(FIXTURES / 'stdio_echo_server.py')!r}]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    app = _stdio_app(["-c", slow_start])
    async with serve_asgi(app) as base, httpx.AsyncClient(timeout=DEADLINE) as http:
        url = f"{base}/mcp"
        with pytest.raises(httpx.ReadTimeout):
            await http.post(url, json=initialize_request(), headers={"accept": ACCEPT_BOTH}, timeout=0.3)

        async def abandoned_session_closed() -> bool:
            status = (await http.get(f"{base}/status")).json()
            return bool(status["activeSessions"] == 0)

        # Closed once the sidecar sees the client gone (0.25 s into the wait), while its server still starts.
        await eventually(abandoned_session_closed, within=DEADLINE, what="the abandoned session closed")
        session_id = await open_session(http, url)  # a client that waits still gets its session
        assert session_id
        status = (await http.get(f"{base}/status")).json()
        assert status["activeSessions"] == 1


def _stdio_app(args: list[str], **settings: Any) -> FastAPI:
    """A sidecar in front of `python ARGS` over stdio, with these stdio settings."""
    stdio = {"command": sys.executable, "args": args, **settings}
    return create_app(build_config({"backend": {"kind": "stdio", "stdio": stdio}}))


def _timed_server(log: Path, busy_seconds: float = 0.0) -> list[str]:
    """stdio_echo_server, which logs `start PID TIME` as it begins and `ready PID TIME` once imported;
    `busy_seconds` of CPU burnt first make its start slower."""
    script = (
        "import os, runpy, time; "
        f"log = lambda what: open({str(log)!r}, 'a').write(f'{{what}} {{os.getpid()}} {{time.time()}}\\n'); "
        "log('start'); "
        f"end = time.process_time() + {busy_seconds}\n"
        "while time.process_time() < end: pass\n"
        f"server = runpy.run_path({str(FIXTURES / 'stdio_echo_server.py')!r})['server']; "
        "log('ready'); server.run('stdio')"
    )
    return ["-c", script]


@pytest.mark.parametrize("spares", [1, 0])
async def test_a_new_session_takes_a_started_spare_process(tmp_path: Path, spares: int) -> None:
    log = tmp_path / "starts"
    log.touch()
    app = _stdio_app(_timed_server(log), warm_spares=spares)

    def started() -> list[int]:
        return [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("start")]

    async with serve_asgi(app) as base, httpx.AsyncClient(timeout=DEADLINE) as http:
        url = f"{base}/mcp"
        if spares:
            await eventually(lambda: len(started()) == 1, within=DEADLINE, what="the spare started")
        else:
            assert started() == []  # nothing runs before a session asks for it
        session_id = await open_session(http, url)
        response = await http.post(url, json=call(2, "pid", {}), headers=session_headers(session_id))
        serving = int(final_response(response, 2)["result"]["structuredContent"]["result"])
        assert serving == started()[0]  # the session runs on the first process started
        if spares:
            # ... which was the spare; a new one is started behind it for the next session.
            await eventually(lambda: len(started()) == 2, within=DEADLINE, what="a new spare")


@pytest.mark.parametrize("spares", [0, 1])
async def test_a_burst_of_sessions_starts_their_servers_a_slot_at_a_time(tmp_path: Path, spares: int) -> None:
    """Four sessions opened at once, one start slot: each server starts once the one before is ready."""
    log = tmp_path / "starts"
    log.touch()
    app = _stdio_app(_timed_server(log), warm_spares=spares, max_concurrent_starts=1)
    async with serve_asgi(app) as base, httpx.AsyncClient(timeout=DEADLINE) as http:
        url = f"{base}/mcp"
        session_ids: list[str] = []

        async def open_one() -> None:
            session_ids.append(await open_session(http, url))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(open_one)
        assert len(set(session_ids)) == 4
        for session_id in session_ids:  # every session is served by its own, started server
            response = await http.post(url, json=call(2, "pid", {}), headers=session_headers(session_id))
            assert "result" in final_response(response, 2)
    events: dict[int, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        what, pid, at = line.split()
        events.setdefault(int(pid), {})[what] = float(at)
    spans = sorted((times["start"], times["ready"]) for times in events.values() if "ready" in times)
    assert len(spans) >= 4
    for (_, ready), (next_start, _) in itertools.pairwise(spans):
        assert next_start > ready, f"a server started at {next_start}, before the one before it was ready"


async def test_a_session_abandoned_while_its_server_waits_to_start_is_closed_before_it_starts(
    tmp_path: Path,
) -> None:
    """One start slot, busy with the first session's server: a client that gives up while queued behind it
    has its session closed at once, and its server is never started."""
    log = tmp_path / "starts"
    log.touch()
    app = _stdio_app(_timed_server(log, busy_seconds=1.5), warm_spares=0, max_concurrent_starts=1)

    def starts() -> int:
        return log.read_text().count("start")

    async with serve_asgi(app) as base, httpx.AsyncClient(timeout=DEADLINE) as http:
        url = f"{base}/mcp"
        async with anyio.create_task_group() as tg:
            tg.start_soon(open_session, http, url)  # takes the slot for its 1.5 s start
            await eventually(lambda: starts() == 1, within=DEADLINE, what="the first server starting")

            async def one_start_waits() -> bool:
                return "mcplane_stdio_starts_waiting 1.0" in (await http.get(f"{base}/metrics")).text

            async def give_up_while_queued() -> None:
                opening = initialize_request()
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(url, json=opening, headers={"accept": ACCEPT_BOTH}, timeout=1)

            async with anyio.create_task_group() as giving_up:
                giving_up.start_soon(give_up_while_queued)
                await eventually(one_start_waits, within=DEADLINE, what="the second start queued")

            async def only_the_first_session_is_open() -> bool:
                status = (await http.get(f"{base}/status")).json()
                return bool(status["activeSessions"] == 1)

            await eventually(only_the_first_session_is_open, within=DEADLINE, what="the abandoned one closed")
        # The slot is free again. Had the abandoned session stayed queued, its server would start before
        # this one's (the queue is first come, first served).
        await open_session(http, url)
        assert starts() == 2
        assert "mcplane_stdio_starts_waiting 0.0" in (await http.get(f"{base}/metrics")).text
