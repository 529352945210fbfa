"""The conformance fixture server passes every server scenario of the suite, bare, on all three legs.

This is the reference result the proxy is held to: later tests put the sidecar in front of the same fixture
(HTTP or stdio backend) and rerun the same legs. The suite itself only speaks HTTP, so the stdio mode of the
fixture is proven here with the official Python client instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import TextContent

from tests.support.conformance import BASELINE_PASSED, LEGS, Leg, run_conformance
from tests.support.processes import (
    CONFORMANCE_SERVER,
    NODE22,
    PYTHON,
    REPO_ROOT,
    ProcessHandle,
    free_port,
    running_process,
)

pytestmark = pytest.mark.e2e

LEG_TIMEOUT_S = 180.0  # a leg takes 3-6 s here; the margin is for a loaded CI machine, not for retries
SIMPLE_TEXT = "This is a simple text response for testing."


@pytest.fixture(scope="module")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessHandle]:
    """One fixture server over Streamable HTTP for all legs: scenarios do not depend on each other's state."""
    if not NODE22.exists():
        pytest.fail(f"{NODE22} is missing: install the Node test peers (make test, or npm ci in tests/node)")
    port = free_port()
    argv = [str(PYTHON), str(CONFORMANCE_SERVER), "--transport", "http", "--port", str(port)]
    log_dir = tmp_path_factory.mktemp("conformance-server")
    with running_process(argv, port=port, log_dir=log_dir, label="conformance-server") as handle:
        yield handle


@pytest.mark.parametrize("leg", LEGS)
def test_fixture_passes_every_scenario_bare(fixture_server: ProcessHandle, leg: Leg, tmp_path: Path) -> None:
    result = run_conformance(f"{fixture_server.base_url}/mcp", leg, tmp_path / "results", LEG_TIMEOUT_S)
    report = f"{result.describe()}\n--- fixture server log (tail) ---\n{fixture_server.log_tail()}"
    assert result.failed == (), report
    assert result.ok, report
    assert len(result.passed) >= BASELINE_PASSED[leg], report


@pytest.mark.parametrize("era", ["handshake", "stateless"])
async def test_fixture_serves_stdio(era: str) -> None:
    """The fixture over stdio: a 2025-11-25 session (initialize) and a 2026-07-28 one (server/discover)."""
    params = StdioServerParameters(
        command=str(PYTHON), args=[str(CONFORMANCE_SERVER), "--transport", "stdio"], cwd=REPO_ROOT
    )
    async with stdio_client(params) as streams, ClientSession(*streams) as session:
        if era == "handshake":
            assert (await session.initialize()).protocol_version == "2025-11-25"
        else:
            assert "2026-07-28" in (await session.discover()).supported_versions
        names = [tool.name for tool in (await session.list_tools()).tools]
        assert names[0] == "test_simple_text"
        assert {"test_sampling", "test_input_required_result_elicitation", "test_reconnection"} <= set(names)
        result = await session.call_tool("test_simple_text", {})
        assert not result.is_error
        assert result.content == [TextContent(type="text", text=SIMPLE_TEXT)]
