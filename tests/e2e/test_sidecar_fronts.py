"""The sidecar's other faces: stdio and legacy SSE fronts, the in-process proxy, SIGTERM drain, and a
backend that is down at start-up. Real processes and sockets throughout."""

from __future__ import annotations

import signal
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client

from mcplane_sidecar import create_proxy_server
from tests.e2e.proxy_harness import (
    ACCEPT_BOTH,
    call,
    final_response,
    initialize_request,
    open_session,
    session_headers,
    sidecar_in_front_of,
)
from tests.fixtures.proxy_target import build_app
from tests.support.asgi import serve_asgi
from tests.support.processes import FIXTURES, PYTHON, async_running_process, free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e
DEADLINE = 30
TARGET = str(FIXTURES / "proxy_target.py")
SIDECAR = [str(PYTHON), "-m", "mcplane_sidecar"]


def text_of(result: Any) -> str:
    return str(result.content[0].text)


async def test_stdio_front_in_front_of_a_stdio_server() -> None:
    params = StdioServerParameters(
        command=str(PYTHON), args=["-m", "mcplane_sidecar", "--", str(PYTHON), TARGET, "--transport", "stdio"]
    )
    with anyio.fail_after(DEADLINE):
        async with Client(stdio_client(params), mode="legacy") as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert {"echo", "ticks", "measure"} <= tools
            assert text_of(await client.call_tool("echo", {"text": "over stdio ☃"})) == "over stdio ☃"


async def test_stdio_front_in_front_of_an_http_server() -> None:
    async with serve_asgi(build_app()) as backend:
        params = StdioServerParameters(command=str(PYTHON), args=["-m", "mcplane_sidecar", f"{backend}/mcp"])
        with anyio.fail_after(DEADLINE):
            async with Client(stdio_client(params), mode="legacy") as client:
                assert text_of(await client.call_tool("echo", {"text": "relayed"})) == "relayed"


async def test_legacy_sse_front() -> None:
    async with serve_asgi(build_app()) as backend, sidecar_in_front_of(f"{backend}/mcp") as proxied:
        with anyio.fail_after(DEADLINE):
            async with Client(sse_client(f"{proxied.base}/sse"), mode="legacy") as client:
                assert text_of(await client.call_tool("echo", {"text": "legacy"})) == "legacy"
                progress: list[float] = []

                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress.append(value)

                result = await client.call_tool(
                    "ticks", {"count": 3, "interval": 0.01}, progress_callback=on_progress
                )
                assert text_of(result) == "3 ticks"
                assert progress == [1, 2, 3]
                assert len(proxied.sidecar.registry.sessions) == 1
        # The legacy stream is the session: closing it ends the backend session too.
        await eventually(lambda: not proxied.sidecar.registry.sessions, within=DEADLINE, what="session close")


async def test_in_process_proxy_for_the_official_client() -> None:
    async with serve_asgi(build_app()) as backend:
        proxy = create_proxy_server(mcp_url=f"{backend}/mcp", proxy_name="InProcess")
        assert proxy.name == "InProcess"
        with anyio.fail_after(DEADLINE):
            async with Client(proxy, mode="legacy") as client:
                assert text_of(await client.call_tool("echo", {"text": "in process"})) == "in process"
                measure = next(t for t in (await client.list_tools()).tools if t.name == "measure")
                assert "$defs" in measure.input_schema


async def test_sigterm_drains_in_flight_requests_then_exits_zero() -> None:
    port = free_port()
    argv = [
        *SIDECAR,
        "--transport",
        "http",
        "--port",
        str(port),
        "--",
        str(PYTHON),
        TARGET,
        "--transport",
        "stdio",
    ]
    async with async_running_process(argv, port=port, label="sidecar-drain") as sidecar:
        url = f"{sidecar.base_url}/mcp"
        async with httpx.AsyncClient(timeout=DEADLINE) as http:
            session_id = await open_session(http, url)
            results: dict[str, httpx.Response] = {}

            async def slow_call() -> None:
                results["slow"] = await http.post(
                    url, json=call("slow", "slow", {"seconds": 2}), headers=session_headers(session_id)
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_call)
                await eventually(lambda: bool(status(sidecar.base_url)["inflightRequests"]), what="slow call")
                sidecar.process.send_signal(signal.SIGTERM)
                refused = await http.post(
                    url, json=initialize_request("late"), headers={"accept": ACCEPT_BOTH}
                )
                assert refused.status_code == 503
                assert refused.json()["id"] == "late"
                assert (await http.get(f"{sidecar.base_url}/readyz")).json()["reason"].startswith("draining")
        assert final_response(results["slow"], "slow")["result"]["content"][0]["text"] == "slept 2.0"
        exit_code = await anyio.to_thread.run_sync(lambda: sidecar.process.wait(DEADLINE))
        assert exit_code == 0
        assert "drain finished" in sidecar.log_text()


async def test_a_backend_down_at_start_up_is_reported_then_picked_up() -> None:
    backend_port = free_port()
    port = free_port()
    argv = [*SIDECAR, f"http://127.0.0.1:{backend_port}/mcp", "--transport", "http", "--port", str(port)]
    async with (
        async_running_process(argv, port=port, label="sidecar-late-backend") as sidecar,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        ready = await http.get(f"{sidecar.base_url}/readyz")
        assert ready.status_code == 503
        assert "unreachable" in ready.json()["reason"]
        early = await http.post(
            f"{sidecar.base_url}/mcp", json=initialize_request(), headers={"accept": ACCEPT_BOTH}
        )
        assert early.status_code == 503
        assert early.json()["id"] == 1
        assert "Traceback" not in sidecar.log_text()
        async with serve_asgi(build_app(), port=backend_port):
            assert (await http.get(f"{sidecar.base_url}/readyz")).status_code == 200
            session_id = await open_session(http, f"{sidecar.base_url}/mcp")
            reply = await http.post(
                f"{sidecar.base_url}/mcp",
                json=call(2, "echo", {"text": "up"}),
                headers=session_headers(session_id),
            )
            assert final_response(reply, 2)["result"]["content"][0]["text"] == "up"


def status(base_url: str) -> dict[str, Any]:
    """The sidecar's /status, read synchronously: for polling from `eventually`."""
    document: dict[str, Any] = httpx.get(f"{base_url}/status", timeout=5).json()
    return document


async def test_demo_serves_the_bundled_server_for_the_demo_client() -> None:
    port = free_port()
    async with async_running_process(
        [*SIDECAR, "--demo", "--port", str(port)], port=port, label="demo"
    ) as demo:
        assert f"mcplane_sidecar.demo_client {demo.base_url}/mcp" in demo.log_text()
        tour = await anyio.run_process(
            [str(PYTHON), "-m", "mcplane_sidecar.demo_client", f"{demo.base_url}/mcp"], check=True
        )
    output = tour.stdout.decode()
    assert "[2025-11-25 session] echo -> hello through mcplane (2025-11-25 session)" in output
    assert "[2026-07-28 stateless] echo -> hello through mcplane (2026-07-28 stateless)" in output
