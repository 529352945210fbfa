"""Prometheus end to end: a real Prometheus scrapes a running sidecar and the operator on loopback.

The scrape config is not written by hand. It is derived (tests/support/scrape_config.py) from what a cluster
would hold: the chart rendered by the real Helm with monitoring on (its ServiceMonitors for the operator and
for every sidecar, and, without the ServiceMonitor API, the prometheus.io annotations on the operator pod),
and the children the operator renders for an MCPProxy (its own per-proxy ServiceMonitor, the prometheus.io
annotations on the sidecar pods). Each rendered way to scrape becomes one static job aimed at the process that
plays that container: the real `mcplane-sidecar` (started with the config the operator renders for the proxy)
in front of a real MCP server, and the real `mcplane-operator` against the API emulator.

The test then asserts every job is `up == 1`, reads real values through PromQL (sessions while the official
MCP client is connected, tool calls counted, reconciles counted after an MCPProxy is applied), and loads the
chart's PrometheusRule groups into the same Prometheus, where every rule must evaluate with health ok.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client

from mcplane_operator.model import API_VERSION, KIND
from mcplane_operator.render import render
from tests.operator.conftest import emulated_cluster
from tests.support.chart import (
    MONITORING_APIS,
    NAMESPACE,
    ci_values,
    of_kind,
    operator_container,
    render_chart,
)
from tests.support.processes import FIXTURES, PYTHON, ProcessHandle, async_running_process, free_port
from tests.support.prometheus import PrometheusAPI, running_prometheus
from tests.support.scrape_config import ScrapeTarget, scrape_job, scrape_targets
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
BIN = Path(sys.executable).parent  # console scripts of this venv: the images' ENTRYPOINTs
PROXY = "metered"
CALLS = 3
# The first scrape lands about 1 s after start, `up` shows in queries a little later; the margin is for CI.
UP_WITHIN_S = 45.0
VALUE_WITHIN_S = 30.0  # a new value reaches a query within two scrape intervals (1 s each)
MONITORING_VALUES = ci_values("monitoring")


def monitoring_values(directory: Path) -> list[Path]:
    """The chart's monitoring CI values when present, else the two switches they turn on."""
    if MONITORING_VALUES.exists():
        return [MONITORING_VALUES]
    values = directory / "monitoring-values.yaml"
    values.write_text(yaml.safe_dump({"monitoring": {"enabled": True, "prometheusRule": {"enabled": True}}}))
    return [values]


def proxy_resource(namespace: str, backend_url: str) -> dict[str, Any]:
    """An MCPProxy in front of the loopback backend, asking the operator for its own ServiceMonitor too."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": PROXY, "namespace": namespace},
        "spec": {
            "backend": {"kind": "http", "url": backend_url},
            "metrics": {"serviceMonitor": {"enabled": True}},
        },
    }


def sidecar_command(children: list[dict[str, Any]], directory: Path, port: int) -> list[str]:
    """The rendered sidecar container's command, its config the rendered ConfigMap's, moved to loopback."""
    (configmap,) = of_kind(children, "ConfigMap")
    (deployment,) = of_kind(children, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = (c for c in pod["containers"] if c["name"] == "sidecar")
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == "config")
    config_dir = directory / "sidecar-config"
    config_dir.mkdir()
    for key, text in configmap["data"].items():
        config = yaml.safe_load(text)
        config["server"] |= {"host": "127.0.0.1", "port": port}  # 0.0.0.0:8080 in the pod
        (config_dir / key).write_text(yaml.safe_dump(config))
    argv = [str(BIN / container["command"][0]), *container.get("args", [])]
    return [arg.replace(mount["mountPath"], str(config_dir)) for arg in argv]


async def kubectl(kubeconfig: Path, *args: str, stdin: str = "") -> str:
    argv = [KUBECTL, f"--kubeconfig={kubeconfig}", *args]
    result = await anyio.run_process(argv, input=stdin.encode(), check=False)
    assert result.returncode == 0, f"kubectl {args}: {result.stderr.decode()}"
    return result.stdout.decode()


@asynccontextmanager
async def loopback_processes(directory: Path, proxy_namespace: str) -> AsyncIterator[dict[str, Any]]:
    """The backend, the sidecar in front of it, the emulator and the operator; ports and rendered objects."""
    async with AsyncExitStack() as stack:
        backend_port, sidecar_port, operator_port = free_port(), free_port(), free_port()
        argv: list[str] = [str(PYTHON), str(FIXTURES / "proxy_target.py"), "--transport", "http"]
        await stack.enter_async_context(
            async_running_process(
                [*argv, "--port", str(backend_port)], port=backend_port, log_dir=directory, label="backend"
            )
        )
        resource = proxy_resource(proxy_namespace, f"http://127.0.0.1:{backend_port}/mcp")
        children = render(resource, service_monitor_available=True)
        sidecar: ProcessHandle = await stack.enter_async_context(
            async_running_process(
                sidecar_command(children, directory, sidecar_port),
                port=sidecar_port,
                log_dir=directory,
                label="sidecar",
            )
        )
        cluster = stack.enter_context(emulated_cluster(directory))
        operator_env = {
            "KUBECONFIG": str(cluster.kubeconfig),
            "MCPLANE_METRICS_ADDRESS": f"127.0.0.1:{operator_port}",
        }
        operator_argv = [str(BIN / "mcplane-operator"), "run", "--all-namespaces", "--standalone"]
        health = free_port()
        operator: ProcessHandle = await stack.enter_async_context(
            async_running_process(
                [*operator_argv, f"--liveness=http://127.0.0.1:{health}/healthz"],
                port=health,
                env=operator_env,
                log_dir=directory,
                label="operator",
            )
        )
        await eventually(
            lambda: f"127.0.0.1:{operator_port}" in operator.log_text(),
            within=UP_WITHIN_S,
            what="the operator serving its metrics",
        )
        yield {
            "sidecar": sidecar,
            "operator": operator,
            "operator_port": operator_port,
            "resource": resource,
            "children": children,
            "kubeconfig": cluster.kubeconfig,
        }


def port_named(workload: dict[str, Any], container: str, name: str) -> int:
    (found,) = (c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    (port,) = (p for p in found["ports"] if p["name"] == name)
    return int(port["containerPort"])


def address_of(target: ScrapeTarget, ports: dict[tuple[str, int], int]) -> str:
    """Where the container port behind the target runs here, on loopback."""
    key = (target.workload, target.container_port)
    assert key in ports, f"{target.source} scrapes {key}, which no process plays (have {sorted(ports)})"
    return f"127.0.0.1:{ports[key]}"


async def wait_at_least(prometheus: PrometheusAPI, expression: str, least: float, what: str) -> float:
    seen: dict[str, float | None] = {}

    async def holds() -> bool:
        seen["value"] = await prometheus.value(expression)
        return seen["value"] is not None and seen["value"] >= least

    await eventually(holds, within=VALUE_WITHIN_S, what=f"{what} ({expression} >= {least})")
    value = seen["value"]
    assert value is not None
    return value


@dataclass(frozen=True)
class Scrapes:
    """The scrape targets the rendered objects ask for, and the jobs of the chart's two ServiceMonitors."""

    targets: list[ScrapeTarget]
    jobs: list[dict[str, Any]]
    sidecar_job: str
    operator_job: str


def derive_scrapes(
    with_crds: list[dict[str, Any]], without: list[dict[str, Any]], running: dict[str, Any]
) -> Scrapes:
    (operator_deployment,) = of_kind(with_crds, "Deployment")
    operator_workload = f"Deployment {operator_deployment['metadata'].get('namespace', NAMESPACE)}/"
    operator_workload += operator_deployment["metadata"]["name"]
    (sidecar_deployment,) = of_kind(running["children"], "Deployment")
    namespace = sidecar_deployment["metadata"]["namespace"]
    sidecar_workload = f"Deployment {namespace}/{sidecar_deployment['metadata']['name']}"
    # The container ports the loopback processes play: the operator's metrics port, the sidecar's one port.
    ports = {
        (operator_workload, port_named(operator_deployment, "operator", "metrics")): running["operator_port"],
        (sidecar_workload, port_named(sidecar_deployment, "sidecar", "http")): running["sidecar"].port,
    }
    chart_targets = scrape_targets([*with_crds, *running["children"]], NAMESPACE)
    fallback = [t for t in scrape_targets(without, NAMESPACE) if t.workload == operator_workload]
    targets = [*chart_targets, *fallback]
    print("scrape targets:", *(f"{t.job_name} -> job={t.job} {t.path}" for t in targets), sep="\n  ")
    # Every way the rendered objects ask to be scraped is here: ServiceMonitors and annotations, for both.
    monitored = {t.workload for t in chart_targets if t.source.startswith("ServiceMonitor")}
    assert monitored == {operator_workload, sidecar_workload}, targets
    assert any(t.source.startswith("annotations") and t.workload == sidecar_workload for t in targets)
    assert fallback, "without the ServiceMonitor API the operator pod carries no scrape annotations"
    # The jobs of the chart's two ServiceMonitors: the series its alert rules select.
    chart_monitors = [t for t in chart_targets if t.source.startswith(f"ServiceMonitor {NAMESPACE}/")]
    (sidecar_job,) = {t.job for t in chart_monitors if t.workload == sidecar_workload}
    (operator_job,) = {t.job for t in chart_monitors if t.workload == operator_workload}
    jobs = [scrape_job(t, address_of(t, ports)) for t in targets]
    return Scrapes(targets, jobs, sidecar_job, operator_job)


async def check_sidecar_values(prometheus: PrometheusAPI, job: str, sidecar: ProcessHandle) -> None:
    """Sessions and tool calls of a real client, read back through PromQL."""
    # `or vector(0)`: a labelled series exists only once something has used it.
    sessions = f'sum(mcplane_sessions_active{{job="{job}"}}) or vector(0)'
    calls = f'sum(mcplane_requests_total{{job="{job}",method="tools/call",outcome="ok"}}) or vector(0)'
    await prometheus.wait_for(sessions, 0.0, within=VALUE_WITHIN_S, what="no session yet")
    assert await prometheus.value(calls) == 0.0
    # A client connects through the sidecar (a handshake-era session, held open) and calls a tool.
    async with Client(f"{sidecar.base_url}/mcp", mode="legacy") as client:
        await prometheus.wait_for(sessions, 1.0, within=VALUE_WITHIN_S, what="one active session")
        for n in range(CALLS):
            result = await client.call_tool("echo", {"text": f"call {n}"})
            assert result.content[0].text == f"call {n}"  # type: ignore[union-attr]
        await prometheus.wait_for(calls, float(CALLS), within=VALUE_WITHIN_S, what="the tool calls counted")
    await prometheus.wait_for(sessions, 0.0, within=VALUE_WITHIN_S, what="the session closed")


async def check_operator_values(prometheus: PrometheusAPI, job: str, running: dict[str, Any]) -> None:
    """The operator reconciles an MCPProxy: its counters move, as scraped through the chart's job."""
    reconciles = f'sum(mcplane_operator_reconciles_total{{job="{job}"}})'
    await prometheus.wait_for(reconciles, 0.0, within=VALUE_WITHIN_S, what="no reconcile yet")
    resource = running["resource"]
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": resource["metadata"]["namespace"]},
    }
    for manifest in (namespace, resource):
        await kubectl(
            running["kubeconfig"], "apply", "--validate=false", "-f", "-", stdin=json.dumps(manifest)
        )
    await wait_at_least(prometheus, reconciles, 1.0, "a reconcile counted")
    progressing = f'mcplane_operator_reconciles_total{{job="{job}",result="progressing"}}'
    assert (await prometheus.value(progressing) or 0) >= 1
    assert await prometheus.value(f'mcplane_operator_reconcile_errors_total{{job="{job}"}}') == 0.0


async def check_rules(prometheus: PrometheusAPI, rule_groups: list[dict[str, Any]]) -> None:
    """The chart's rule groups are loaded, and every rule has been evaluated without error."""
    wanted = {g["name"]: len(g["rules"]) for g in rule_groups}
    seen: dict[str, Any] = {}

    async def evaluated() -> bool:
        seen["groups"] = await prometheus.rule_groups()
        loaded = {g["name"]: len(g["rules"]) for g in seen["groups"]}
        rules = [r for g in seen["groups"] for r in g["rules"]]
        return loaded == wanted and all(r["health"] == "ok" for r in rules)

    try:
        await eventually(evaluated, within=VALUE_WITHIN_S, what="every chart rule evaluated, health ok")
    except AssertionError:
        unhealthy = [
            (g["name"], r["name"], r["health"], r.get("lastError"))
            for g in seen.get("groups", [])
            for r in g["rules"]
            if r["health"] != "ok"
        ]
        raise AssertionError(f"rule groups {wanted}; not ok: {unhealthy}") from None


async def test_prometheus_scrapes_the_sidecar_and_the_operator_as_the_chart_configures(
    tmp_path: Path,
) -> None:
    values = monitoring_values(tmp_path)
    with_crds = render_chart(values, api_versions=MONITORING_APIS)  # the Prometheus Operator is installed
    without = render_chart(values)  # it is not: the chart falls back to annotations
    watched = [
        arg.split("=", 1)[1]
        for arg in operator_container(with_crds).get("args", [])
        if arg.startswith("--namespace=")
    ]
    rule_groups = [g for rule in of_kind(with_crds, "PrometheusRule") for g in rule["spec"]["groups"]]
    assert rule_groups, "the chart rendered no PrometheusRule with monitoring on and the API served"

    async with loopback_processes(tmp_path, watched[0] if watched else "tools") as running:
        scrapes = derive_scrapes(with_crds, without, running)
        async with running_prometheus(tmp_path / "prometheus", scrapes.jobs, rule_groups) as prometheus:
            # The chart's sidecar ServiceMonitor and the proxy's own one give the same series (same job, same
            # instance): one `up` series per distinct pair.
            series = {
                (job["static_configs"][0]["labels"]["job"], job["static_configs"][0]["targets"][0])
                for job in scrapes.jobs
            }
            await prometheus.wait_for(
                "count(up == 1)", len(series), within=UP_WITHIN_S, what="every target up"
            )
            for job in scrapes.jobs:
                (static,) = job["static_configs"]
                (address,) = static["targets"]
                expression = f'up{{job="{static["labels"]["job"]}",instance="{address}"}}'
                assert await prometheus.value(expression) == 1.0, expression
            await check_sidecar_values(prometheus, scrapes.sidecar_job, running["sidecar"])
            await check_operator_values(prometheus, scrapes.operator_job, running)
            await check_rules(prometheus, rule_groups)
