"""Shared end-to-end fixtures: the conformance fixture server and its bare results, computed once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.conformance import ConformanceResult, Leg, run_conformance
from tests.support.processes import (
    CONFORMANCE_SERVER,
    NODE22,
    PYTHON,
    ProcessHandle,
    free_port,
    running_process,
)

LEG_TIMEOUT_S = 180.0  # a leg takes 3-6 s here; the margin is for a loaded CI machine, not for retries


@pytest.fixture(scope="session")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessHandle]:
    """One conformance fixture server over Streamable HTTP: scenarios do not depend on each other's state."""
    if not NODE22.exists():
        pytest.fail(f"{NODE22} is missing: install the Node test peers (make test, or npm ci in tests/node)")
    port = free_port()
    argv = [str(PYTHON), str(CONFORMANCE_SERVER), "--transport", "http", "--port", str(port)]
    log_dir = tmp_path_factory.mktemp("conformance-server")
    with running_process(argv, port=port, log_dir=log_dir, label="conformance-server") as handle:
        yield handle


class BareResults:
    """The suite's verdicts against the bare fixture, one run per leg, shared by every test that asks."""

    def __init__(self, server: ProcessHandle, out: Path) -> None:
        self._server = server
        self._out = out
        self._results: dict[Leg, ConformanceResult] = {}

    def __getitem__(self, leg: Leg) -> ConformanceResult:
        if leg not in self._results:
            url = f"{self._server.base_url}/mcp"
            self._results[leg] = run_conformance(url, leg, self._out / leg, LEG_TIMEOUT_S)
        return self._results[leg]


@pytest.fixture(scope="session")
def bare_results(fixture_server: ProcessHandle, tmp_path_factory: pytest.TempPathFactory) -> BareResults:
    return BareResults(fixture_server, tmp_path_factory.mktemp("conformance-bare"))
