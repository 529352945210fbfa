"""Regressions found by the HTTP fuzzer (bench/reliability/fuzz_http.py): inputs that made the front
answer 500 "Internal error in the proxy" instead of a clean JSON-RPC error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from bench.reliability._common import (
    ACCEPT_BOTH,
    HANDSHAKE_VERSION,
    McpClient,
    SidecarProcess,
    Tally,
    new_http_client,
    proxy_target_http,
    sidecar_config,
    sidecar_process,
)

pytestmark = pytest.mark.e2e
DEADLINE = 60


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[SidecarProcess]:
    async with proxy_target_http(tmp_path) as backend:  # each start has its own deadline
        config = sidecar_config({"kind": "http", "url": f"{backend.base_url}/mcp"}, request_timeout=5)
        async with sidecar_process(config, tmp_path) as running:
            yield running


@pytest.mark.parametrize("in_a_session", [True, False])
async def test_an_initialize_without_an_id_is_a_bad_request(
    sidecar: SidecarProcess, in_a_session: bool
) -> None:
    """`initialize` sent as a notification (no id): found answering 500 inside a session (the relay
    assumed every initialize is a request)."""
    async with new_http_client() as http:
        headers = {"accept": ACCEPT_BOTH, "content-type": "application/json"}
        if in_a_session:
            client = McpClient(http, sidecar.mcp_url, "owner", "2025", Tally())
            assert (await client.open()).kind == "ok"
            assert client.session_id is not None
            headers |= {"mcp-session-id": client.session_id, "mcp-protocol-version": HANDSHAKE_VERSION}
        body = {
            "jsonrpc": "2.0",
            "method": "initialize",
            "params": {
                "protocolVersion": HANDSHAKE_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "x", "version": "1"},
            },
        }
        with anyio.fail_after(DEADLINE):
            answer = await http.post(sidecar.mcp_url, json=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == -32600
        if in_a_session:
            assert (await client.echo()).kind == "ok"  # the session is untouched
    assert sidecar.logged_errors() == []


async def test_the_good_path_still_works(sidecar: SidecarProcess) -> None:
    async with httpx.AsyncClient(timeout=DEADLINE) as http:
        tally = Tally()
        client = McpClient(http, sidecar.mcp_url, "good", "2025", tally)
        assert (await client.open()).kind == "ok"
        assert (await client.echo()).kind == "ok"
