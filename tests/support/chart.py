"""Render the Helm chart with the real Helm engine, for tests that deploy what it renders onto loopback peers.

Helm runs with its cache, config and data homes under a temporary directory of its own, offline. The binary is
the one `scripts/install-helm.sh` puts in `.tools/bin/` (`make test` runs that script first).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import REPO_ROOT

CHART = REPO_ROOT / "charts" / "mcplane"
CI_VALUES = CHART / "ci"
HELM = REPO_ROOT / ".tools" / "bin" / "helm"
INSTALL_HELM = REPO_ROOT / "scripts" / "install-helm.sh"
RELEASE = "rel"
NAMESPACE = "mcplane-system"
KUBE_VERSION = "1.31.0"  # a current Kubernetes the chart supports
HELM_TIMEOUT_S = 60.0
# What a cluster with the Prometheus Operator serves (`--api-versions`): the chart gates its ServiceMonitors
# and its PrometheusRule on these capabilities.
MONITORING_APIS = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule")

JsonObject = dict[str, Any]


def ci_values(name: str) -> Path:
    """`charts/mcplane/ci/<name>-values.yaml`."""
    return CI_VALUES / f"{name}-values.yaml"


def _helm_home() -> dict[str, str]:
    home = Path(tempfile.mkdtemp(prefix="mcplane-helm-home-"))
    return {var: str(home / var.lower()) for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}


@cache
def _helm_env() -> tuple[tuple[str, str], ...]:
    if not HELM.exists():
        subprocess.run([str(INSTALL_HELM)], check=True, capture_output=True, timeout=300)
    return tuple(sorted({**os.environ, **_helm_home()}.items()))


def helm_environment() -> dict[str, str]:
    """The environment Helm runs in here (installed first if missing): its homes in a temporary directory."""
    return dict(_helm_env())


@cache
def _template(values: tuple[str, ...], api_versions: tuple[str, ...], namespace: str) -> str:
    argv = [str(HELM), "template", RELEASE, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
    argv += ["--include-crds"]
    for path in values:
        argv += ["-f", path]
    for api in api_versions:
        argv += ["--api-versions", api]
    run = subprocess.run(
        argv, env=dict(_helm_env()), capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False
    )
    if run.returncode != 0:
        raise AssertionError(f"helm template failed: {run.stderr}")
    return run.stdout


def render_chart(
    values: Sequence[Path] = (), *, api_versions: Sequence[str] = (), namespace: str = NAMESPACE
) -> list[JsonObject]:
    """Every object `helm template` renders (CRDs and hooks included), as dicts, in the order Helm prints."""
    text = _template(tuple(str(p) for p in values), tuple(api_versions), namespace)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(objs: Iterable[Mapping[str, Any]], *kinds: str) -> list[JsonObject]:
    return [dict(obj) for obj in objs if obj.get("kind") in kinds]


def operator_deployment(objs: Iterable[Mapping[str, Any]]) -> JsonObject:
    """The chart's one Deployment: the operator."""
    (deployment,) = of_kind(objs, "Deployment")
    return deployment


def operator_container(objs: Iterable[Mapping[str, Any]]) -> JsonObject:
    containers = operator_deployment(objs)["spec"]["template"]["spec"]["containers"]
    (container,) = (c for c in containers if c["name"] == "operator")
    assert isinstance(container, dict)
    return container


def service_account_of(objs: Iterable[Mapping[str, Any]]) -> tuple[str, str]:
    """(namespace, name) of the ServiceAccount the operator's pods run as."""
    deployment = operator_deployment(objs)
    name = deployment["spec"]["template"]["spec"].get("serviceAccountName") or "default"
    return deployment["metadata"].get("namespace") or NAMESPACE, str(name)
