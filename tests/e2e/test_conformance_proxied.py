"""The conformance suite through the sidecar: every scenario the bare fixture passes must still pass,
on all three legs, with the fixture behind the sidecar over Streamable HTTP and over stdio. Plus what the
suite does not try: a repeated `Mcp-Param-*` header line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_types.jsonrpc import HEADER_MISMATCH

from tests.e2e.conftest import LEG_TIMEOUT_S, BareResults
from tests.support.conformance import LEGS, Leg, run_conformance
from tests.support.processes import CONFORMANCE_SERVER, PYTHON, ProcessHandle, free_port, running_process

pytestmark = pytest.mark.e2e

BACKENDS = ("http", "stdio")


@pytest.fixture(scope="module", params=BACKENDS)
def sidecar(
    request: pytest.FixtureRequest, fixture_server: ProcessHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ProcessHandle]]:
    port = free_port()
    front = [str(PYTHON), "-m", "mcplane_sidecar", "--transport", "http", "--port", str(port)]
    if request.param == "http":
        argv = [*front, "--transport-type", "http", f"{fixture_server.base_url}/mcp"]
    else:
        argv = [*front, "--", str(PYTHON), str(CONFORMANCE_SERVER), "--transport", "stdio"]
    log_dir = tmp_path_factory.mktemp(f"sidecar-{request.param}")
    with running_process(argv, port=port, log_dir=log_dir, label=f"sidecar-{request.param}") as handle:
        yield request.param, handle


@pytest.mark.parametrize("leg", LEGS)
def test_every_bare_scenario_passes_through_the_proxy(
    sidecar: tuple[str, ProcessHandle], bare_results: BareResults, leg: Leg, tmp_path: Path
) -> None:
    backend, handle = sidecar
    bare = bare_results[leg]
    proxied = run_conformance(f"{handle.base_url}/mcp", leg, tmp_path / "results", LEG_TIMEOUT_S)
    report = f"backend {backend}:\n{proxied.describe()}\n--- sidecar log (tail) ---\n{handle.log_tail()}"
    lost = sorted(set(bare.passed) - set(proxied.passed))
    assert lost == [], report
    assert proxied.failed == (), report
    assert len(proxied.passed) == len(bare.passed), report


def _region_call(*regions: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A 2026-07-28 call of the fixture's tool that mirrors its `region` argument in `Mcp-Param-Region`,
    with one header line per given value."""
    body = {
        "jsonrpc": "2.0",
        "id": "r-1",
        "method": "tools/call",
        "params": {
            "name": "test_custom_header_param",
            "arguments": {"region": "eu"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    lines = [
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "test_custom_header_param"),
        *(("mcp-param-region", region) for region in regions),
    ]
    return body, lines


def test_a_repeated_param_header_is_refused_as_the_server_refuses_it(
    sidecar: tuple[str, ProcessHandle], fixture_server: ProcessHandle
) -> None:
    """First-copy and last-copy readers would disagree, so the SDK refuses a repeated `Mcp-Param-*` line.
    Over HTTP the sidecar must pass every line on for the server to judge; over stdio it judges itself."""
    backend, handle = sidecar
    with httpx.Client(timeout=30) as http:
        for base in (fixture_server.base_url, handle.base_url):
            body, lines = _region_call("eu")
            agreed = http.post(f"{base}/mcp", json=body, headers=lines)
            assert agreed.status_code == 200, (backend, base, agreed.text)
            body, lines = _region_call("eu", "eu")  # equal lines: folding them into one would pass
            repeated = http.post(f"{base}/mcp", json=body, headers=lines)
            assert repeated.status_code == 400, (backend, base, repeated.text)
            assert repeated.json()["error"]["code"] == HEADER_MISMATCH, (backend, base, repeated.text)
            assert repeated.json()["id"] == "r-1"
