"""The conformance fixture server passes every server scenario of the suite, bare, on all three legs.

This is the reference result the proxy is held to: later tests put the sidecar in front of the same fixture
(HTTP or stdio backend) and rerun the same legs. The suite itself only speaks HTTP, so the stdio mode of the
fixture is proven here with the official Python client instead.
"""

from __future__ import annotations

import pytest
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import TextContent

from tests.e2e.conftest import BareResults
from tests.support.conformance import BASELINE_PASSED, LEGS, Leg
from tests.support.processes import CONFORMANCE_SERVER, PYTHON, REPO_ROOT, ProcessHandle

pytestmark = pytest.mark.e2e

SIMPLE_TEXT = "This is a simple text response for testing."


@pytest.mark.parametrize("leg", LEGS)
def test_fixture_passes_every_scenario_bare(
    fixture_server: ProcessHandle, bare_results: BareResults, leg: Leg
) -> None:
    result = bare_results[leg]
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
