"""The conformance suite through the sidecar: every scenario the bare fixture passes must still pass,
on all three legs, with the fixture behind the sidecar over Streamable HTTP and over stdio."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
