"""A real Prometheus server (the Debian package) for tests: started on loopback, queried over its HTTP API.

`running_prometheus()` writes the config (and rule files) into a directory of the test, checks them with
`promtool`, starts `prometheus` on a free 127.0.0.1 port with its TSDB in that directory, waits for `/-/ready`
and stops exactly that process afterwards. `PrometheusAPI` wraps the few `/api/v1` calls tests make.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.processes import LOOPBACK, ProcessHandle, async_running_process, free_port
from tests.support.waiting import eventually

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
INSTALL_HINT = "install it with scripts/install-prometheus.sh (make test runs it)"
READY_WITHIN_S = 30.0  # Prometheus is ready in about 0.1 s; the margin is for a loaded CI machine
PROMTOOL_TIMEOUT_S = 60.0
# How often rules are evaluated: as often as targets are scraped, so a test sees rule results quickly.
EVALUATION_INTERVAL = "1s"

JsonObject = dict[str, Any]


class PrometheusError(AssertionError):
    """Prometheus answered a query with an error, or a check of its config failed."""


def promtool(*args: str) -> str:
    run = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S, check=False
    )
    if run.returncode != 0:
        raise PrometheusError(f"promtool {' '.join(args)}:\n{run.stdout}{run.stderr}")
    return run.stdout


@dataclass(frozen=True)
class PrometheusAPI:
    handle: ProcessHandle
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.handle.base_url

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        response = await self.http.get(f"{self.url}{path}", params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"GET {path} {dict(params or {})}: {response.status_code} {body}")
        return body["data"]

    async def query(self, expression: str) -> list[JsonObject]:
        """The instant vector `expression` evaluates to now (a list of {metric, value})."""
        data = await self._get("/api/v1/query", {"query": expression})
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expression!r} is a {data['resultType']}, not a vector")
        result: list[JsonObject] = data["result"]
        return result

    async def value(self, expression: str) -> float | None:
        """The one sample `expression` gives now, or None when it gives none (more than one fails)."""
        result = await self.query(expression)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{expression!r} gave {len(result)} series: {result}")
        return float(result[0]["value"][1])

    async def targets(self) -> list[JsonObject]:
        data = await self._get("/api/v1/targets", {"state": "active"})
        active: list[JsonObject] = data["activeTargets"]
        return active

    async def rule_groups(self) -> list[JsonObject]:
        data = await self._get("/api/v1/rules")
        groups: list[JsonObject] = data["groups"]
        return groups

    async def wait_for(self, expression: str, wanted: float, *, within: float, what: str = "") -> None:
        """Until `expression` evaluates to exactly `wanted` (one series)."""
        seen: dict[str, float | None] = {}

        async def holds() -> bool:
            seen["last"] = await self.value(expression)
            return seen["last"] == wanted

        try:
            await eventually(holds, within=within, what=what or f"{expression} == {wanted}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last value {seen.get('last')}") from None


@asynccontextmanager
async def running_prometheus(
    directory: Path,
    scrape_configs: Sequence[Mapping[str, Any]],
    rule_groups: Sequence[Mapping[str, Any]] = (),
) -> AsyncIterator[PrometheusAPI]:
    """Prometheus scraping `scrape_configs` (and evaluating `rule_groups`), until the block ends."""
    missing = [binary for binary in (PROMETHEUS, PROMTOOL) if shutil.which(binary) is None]
    if missing:
        raise PrometheusError(f"{', '.join(missing)} missing: {INSTALL_HINT}")
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  (a local directory: instant)
    config: JsonObject = {
        "global": {"scrape_interval": "1s", "evaluation_interval": EVALUATION_INTERVAL},
        "scrape_configs": [dict(job) for job in scrape_configs],
    }
    if rule_groups:
        rules = directory / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": [dict(g) for g in rule_groups]}, sort_keys=False))
        promtool("check", "rules", str(rules))
        config["rule_files"] = [str(rules)]
    config_file = directory / "prometheus.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    promtool("check", "config", str(config_file))
    port = free_port()
    argv = [
        PROMETHEUS,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--log.level=warn",
    ]
    async with (
        async_running_process(argv, port=port, log_dir=directory, label="prometheus") as handle,
        httpx.AsyncClient(timeout=10) as http,
    ):

        async def ready() -> bool:
            try:
                return (await http.get(f"{handle.base_url}/-/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, within=READY_WITHIN_S, what="Prometheus /-/ready")
        yield PrometheusAPI(handle=handle, http=http)
