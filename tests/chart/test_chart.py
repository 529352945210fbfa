"""The Helm chart, through the real Helm engine: lint, render every `ci/*-values.yaml`, validate the output.

Also: the closed values schema rejects typos, the chart's CRD is the one in manifests/crds/ (drift),
manifests/install.yaml is a fresh render (staleness), and the Dockerfiles start console scripts that exist.
Needs the helm binary in .tools/bin/ (scripts/install-helm.sh puts it there; `make test` runs it first).
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.chart import CHART, HELM, NAMESPACE, ci_values, helm_environment
from tests.support.processes import REPO_ROOT

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CRD_SOURCE = REPO_ROOT / "manifests" / "crds" / "mcpproxies.mcplane.dev.yaml"
INSTALL = REPO_ROOT / "manifests" / "install.yaml"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
K8S_VERSIONS = ["1.29.0", "1.33.0"]
CUSTOM_GROUPS = {"kopf.dev", "mcplane.dev"}


@pytest.fixture(scope="session")
def helm_env() -> dict[str, str]:
    return {**helm_environment(), "HELM": str(HELM)}  # HELM: for scripts/render-install.sh


def helm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(HELM), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)


@cache
def _render_text(values_file: str, env_items: tuple[tuple[str, str], ...], *extra: str) -> str:
    run = helm(dict(env_items), "template", "rel", str(CHART), "-n", NAMESPACE, "-f", values_file, *extra)
    assert run.returncode == 0, run.stderr
    return run.stdout


def render(env: dict[str, str], values: Path, *extra: str) -> list[dict[str, Any]]:
    text = _render_text(str(values), tuple(sorted(env.items())), *extra)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


ci = ci_values


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = find(objs, "Deployment")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


# -- lint and render -------------------------------------------------------------------------------


def test_ci_values_files_cover_the_three_modes() -> None:
    assert {p.name for p in CI_VALUES} >= {
        "defaults-values.yaml",
        "namespaced-values.yaml",
        "crds-off-values.yaml",
    }


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "chart-defaults")
def test_helm_lint_strict_is_clean(helm_env: dict[str, str], values: Path | None) -> None:
    run = helm(helm_env, "lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "[WARNING]" not in run.stdout, run.stdout
    assert "[ERROR]" not in run.stdout, run.stdout


def _schema_by_kind() -> dict[tuple[str, str], dict[str, Any]]:
    """openAPIV3Schema of each custom kind the chart ships (kubernetes-validate has no schema for them)."""
    schemas = {}
    for crd in find(_all_crds(), "CustomResourceDefinition"):
        spec = crd["spec"]
        for version in spec["versions"]:
            api_version = f"{spec['group']}/{version['name']}"
            schemas[(api_version, spec["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return schemas


@cache
def _all_crds_text() -> str:
    return INSTALL.read_text()


def _all_crds() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_all_crds_text()) if d]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_rendered_object_passes_kubernetes_validate_strict(
    helm_env: dict[str, str], values: Path, version: str
) -> None:
    objs = render(helm_env, values)
    assert objs
    custom = _schema_by_kind()
    for obj in objs:
        group = obj["apiVersion"].split("/")[0]
        if group in CUSTOM_GROUPS:  # custom resources: against the CRD's schema
            jsonschema.validate(obj, custom[(obj["apiVersion"], obj["kind"])])
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        assert len(obj["metadata"]["name"]) <= 63 or obj["kind"] == "CustomResourceDefinition"


def test_kubernetes_validate_cli_accepts_install_yaml() -> None:
    """The same check through the command line, over the checked-in install manifest."""
    cli = [
        str(REPO_ROOT / ".venv" / "bin" / "kubernetes-validate"),
        "-k",
        K8S_VERSIONS[-1],
        "--strict",
        "--quiet",
    ]
    run = subprocess.run([*cli, str(INSTALL)], capture_output=True, text=True, check=False, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


# -- what each mode renders ------------------------------------------------------------------------


def test_defaults_watch_every_namespace_with_cluster_rbac(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, ci("defaults"))
    c = container(objs)
    assert c["args"][:2] == ["run", "--all-namespaces"]
    assert "--standalone" not in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["MCPLANE_SIDECAR_IMAGE"]["value"] == "mcplane/sidecar:0.1.0"
    assert env["MCPLANE_METRICS_ADDRESS"]["value"] == "0.0.0.0:9090"
    assert c["image"] == "mcplane/operator:0.1.0"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090, "health": 8080}
    assert find(objs, "ClusterRole")
    assert find(objs, "ClusterRoleBinding")
    assert not find(objs, "Role")
    assert not find(objs, "RoleBinding")
    (peering,) = find(objs, "ClusterKopfPeering", "mcplane-operator")
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    assert {o["metadata"]["name"] for o in find(objs, "CustomResourceDefinition")} == {
        "mcpproxies.mcplane.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    for crd in find(objs, "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (service,) = find(objs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_restricted_security_context(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, ci("defaults"))
    (deployment,) = find(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objs)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True


def _rules(objs: list[dict[str, Any]], kind: str) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for role in find(objs, kind)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


NEEDED = {
    ("mcplane.dev", "mcpproxies"): "get list watch patch",
    ("mcplane.dev", "mcpproxies/status"): "get patch",
    ("", "configmaps"): "get create patch",
    ("", "services"): "get create patch",
    ("apps", "deployments"): "get list watch create patch",
    ("policy", "poddisruptionbudgets"): "get create patch delete",
    ("monitoring.coreos.com", "servicemonitors"): "get create patch delete",
    ("", "secrets"): "get",
    ("", "pods"): "list",
    ("", "events"): "create",
    ("kopf.dev", "kopfpeerings"): "get list watch patch",
}
CLUSTER_ONLY = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): "list watch",
    ("kopf.dev", "clusterkopfpeerings"): "get list watch patch",
}


def _expand(needed: dict[tuple[str, str], str]) -> Iterator[tuple[str, str, str]]:
    for (group, resource), verbs in needed.items():
        for verb in verbs.split():
            yield group, resource, verb


def test_cluster_rbac_grants_what_the_operator_needs(helm_env: dict[str, str]) -> None:
    granted = _rules(render(helm_env, ci("defaults")), "ClusterRole")
    assert set(_expand(NEEDED | CLUSTER_ONLY)) <= granted
    assert not any(verb in {"*", "update"} or resource == "*" for _, resource, verb in granted)


def test_namespaced_mode_has_a_role_and_peering_per_namespace(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, ci("namespaced"))
    c = container(objs)
    assert c["args"][:3] == ["run", "--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in c["args"]
    assert "--verbose" in c["args"]
    assert {o["metadata"]["namespace"] for o in find(objs, "Role")} == {"team-a", "team-b"}
    assert {o["metadata"]["namespace"] for o in find(objs, "RoleBinding")} == {"team-a", "team-b"}
    assert set(_expand(NEEDED)) <= _rules(find(objs, "Role")[:1], "Role")
    # The only cluster-wide grant left is CRD discovery.
    assert _rules(objs, "ClusterRole") == set(
        _expand({("apiextensions.k8s.io", "customresourcedefinitions"): "list watch"})
    )
    assert not find(objs, "ClusterKopfPeering")
    assert {o["metadata"]["namespace"] for o in find(objs, "KopfPeering", "mcplane-operator")} == {
        "team-a",
        "team-b",
    }
    (deployment,) = find(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "podAntiAffinity" in pod["affinity"]
    assert deployment["spec"]["replicas"] == 2


def test_namespaced_scope_without_namespaces_watches_the_release_namespace(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, ci("defaults"), "--set", "rbac.scope=namespaced")
    assert container(objs)["args"][:2] == ["run", f"--namespace={NAMESPACE}"]
    assert [o["metadata"]["namespace"] for o in find(objs, "Role")] == [NAMESPACE]


def test_crds_off_renders_no_crds_and_no_peering(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, ci("crds-off"))
    assert not find(objs, "CustomResourceDefinition")
    assert not find(objs, "ClusterKopfPeering")
    assert not find(objs, "KopfPeering")
    assert not find(objs, "Service")
    c = container(objs)
    assert "--standalone" in c["args"]
    (deployment,) = find(objs, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert c["image"] == "registry.example.com/mcplane/operator:0.1.0-rc1"


def test_names_are_truncated_to_63(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, ci("defaults"), "--set", "nameOverride=" + "n" * 63)
    (deployment,) = find(objs, "Deployment")
    assert len(deployment["metadata"]["name"]) == 63
    (service,) = find(objs, "Service")
    assert len(service["metadata"]["name"]) <= 63
    assert service["metadata"]["name"].endswith("-metrics")


def test_notes_give_next_steps(helm_env: dict[str, str]) -> None:
    run = helm(helm_env, "install", "rel", str(CHART), "-n", NAMESPACE, "--dry-run=client")
    assert run.returncode == 0, run.stderr
    notes = run.stdout.split("NOTES:", 1)[1]
    needles = ("kubectl apply", "manifests/examples/", "kubectl get mcpp", "/metrics", "mcplane_operator_")
    for needle in needles:
        assert needle in notes


# -- the values schema -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("rbac:\n  scpoe: cluster\n", "additional properties 'scpoe' not allowed"),
        ("replicaCont: 2\n", "additional properties 'replicaCont' not allowed"),
        ("rbac:\n  scope: everywhere\n", "/rbac/scope"),
        ("resources:\n  requests:\n    cpu: 1\n  limts: {}\n", "additional properties 'limts' not allowed"),
    ],
)
def test_schema_rejects_bad_values(
    helm_env: dict[str, str], tmp_path: Path, values: str, message: str
) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(values)
    run = helm(helm_env, "template", "rel", str(CHART), "-f", str(bad))
    assert run.returncode != 0
    assert "values don't meet the specifications of the schema" in run.stderr
    assert message in run.stderr, run.stderr


def _closed(schema: Any, path: str = "$") -> Iterator[str]:
    """Paths of object schemas with fixed properties that are not closed."""
    if isinstance(schema, dict):
        if "properties" in schema and schema.get("additionalProperties") is not False:
            yield path
        for key, sub in schema.items():
            yield from _closed(sub, f"{path}.{key}")
    elif isinstance(schema, list):
        for i, sub in enumerate(schema):
            yield from _closed(sub, f"{path}[{i}]")


def test_values_schema_is_closed_everywhere() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    assert list(_closed(schema)) == []


def test_every_value_is_documented() -> None:
    """Each key with a value has a comment above it, or sits inside a documented block (e.g. resources)."""
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):\s*(.*)$", line)
        if match:
            indent, value = len(match.group(1)), match.group(3)
            while stack and stack[-1][0] >= indent:
                stack.pop()
            documented = previous.strip().startswith("#") or any(doc for _, doc in stack)
            if value and not documented:
                undocumented.append(line)
            stack.append((indent, documented))
        if line.strip():
            previous = line
    assert undocumented == []


# -- drift and staleness ---------------------------------------------------------------------------


def test_chart_crd_is_a_copy_of_manifests_crd() -> None:
    assert (CHART / "files" / "crds" / CRD_SOURCE.name).read_text() == CRD_SOURCE.read_text()


def test_rendered_crd_matches_manifests_crd(helm_env: dict[str, str]) -> None:
    (source,) = [d for d in yaml.safe_load_all(CRD_SOURCE.read_text()) if d]
    (rendered,) = find(render(helm_env, ci("defaults")), "CustomResourceDefinition", "mcpproxies.mcplane.dev")
    # As JSON, so that a number Helm turned into a float (512 -> 512.0, 1e+06) counts as drift.
    assert json.dumps(rendered["spec"], sort_keys=True) == json.dumps(source["spec"], sort_keys=True)
    assert source["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()


def test_install_yaml_is_a_fresh_render(helm_env: dict[str, str]) -> None:
    run = subprocess.run(
        [str(REPO_ROOT / "scripts" / "render-install.sh")],
        env=helm_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == INSTALL.read_text(), "manifests/install.yaml is stale: run `make manifests`"


# -- images ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("component", ["sidecar", "operator"])
def test_dockerfile_entrypoint_is_a_console_script(component: str) -> None:
    dockerfile = (REPO_ROOT / "docker" / f"{component}.Dockerfile").read_text()
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = re.findall(r"^ENTRYPOINT\s+\[\"([^\"]+)\"", dockerfile, re.MULTILINE)
    assert entrypoint == f"mcplane-{component}"
    assert entrypoint in scripts
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS builder$", dockerfile, re.MULTILINE)
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in dockerfile
    assert "pip install -c constraints.txt ." in dockerfile
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "USER 65532:65532" in final_stage
    assert not re.search(r"apt-get|pip install|gcc|build-essential", final_stage)
