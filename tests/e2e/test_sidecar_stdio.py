"""The sidecar in front of a stdio server: a crash fails the request in flight with its own id, the
process comes back (re-initialized with the client's own initialize), and the session goes on."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from mcplane_sidecar import build_config, create_app
from tests.e2e.proxy_harness import Proxied, call, final_response, open_session, session_headers
from tests.support.asgi import serve_asgi
from tests.support.processes import FIXTURES

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
