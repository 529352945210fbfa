"""The operator needs no permission the chart does not grant: its real requests against the rendered RBAC.

For each RBAC scope the chart offers (defaults: one ClusterRole; `ci/namespaced-values.yaml`: a Role per
watched namespace plus a minimal ClusterRole), the test

1. renders the chart with the real Helm, and installs what an operator needs from it into a fresh API emulator
   (the CRDs and kopf's peering objects, as `helm install` would, with an administrator's credentials);
2. runs the real `mcplane-operator` as a subprocess with exactly the arguments and environment the chart's
   Deployment gives its container (addresses moved to loopback), under a kubeconfig whose bearer token stands
   for the chart's ServiceAccount;
3. drives a full lifecycle with the real `kubectl`: an MCPProxy from manifests/examples created before its
   Secrets exist (degraded, an Event), then its Secrets (rolled out, children with a PodDisruptionBudget and a
   ServiceMonitor), a rollout reported by the Deployment "controller", a spec update that drops the optional
   children (pruned), an invalid proxy, and deletions (finalizers released);
4. maps every request the emulator saw with the operator's token to the authorizer's (group, resource, verb,
   namespace) and asserts the rendered roles, through their bindings to the Deployment's ServiceAccount, allow
   each one. Grants never used are printed (room to tighten); a wildcard grant fails.

The emulator enforces no RBAC itself (it has no authorizer), so the operator's behaviour is unaffected: the
check is exact, not a sample of what happened to fail.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from tests.operator.conftest import REPO, SERVICE_MONITOR_CRD, Cluster, emulated_cluster, kubeconfig_for
from tests.support.chart import (
    ci_values,
    of_kind,
    operator_container,
    render_chart,
    service_account_of,
)
from tests.support.processes import ProcessHandle, free_port, running_process, stop_process
from tests.support.rbac import Attributes, Authorizer, attributes, unused_grants, wildcards
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
OPERATOR = Path(sys.executable).parent / "mcplane-operator"  # the image's ENTRYPOINT, from this venv
EXAMPLE = REPO / "manifests" / "examples" / "http.yaml"  # Secrets, a PodDisruptionBudget and a ServiceMonitor
INVALID_EXAMPLE = REPO / "manifests" / "examples" / "invalid" / "http-without-url.yaml"
DEADLINE = 20.0  # each wait: the operator answers in well under a second; the margin is for a loaded CI box
POD_NAME = "rel-mcplane-6d4cf9b7c-x2x7q"  # what the Downward API (POD_ID) would give the operator's pod
# Requests the chart is known not to grant, by values file, as (verb, group, resource): each must still occur
# (remove the entry once the chart or the operator changes) and nothing else may be denied. None at present.
KNOWN_DENIALS: dict[str, set[tuple[str, str, str]]] = {"defaults": set(), "namespaced": set()}


# -- kubectl, as the cluster's administrator -----------------------------------------------------------------


@dataclass(frozen=True)
class Admin:
    kubeconfig: Path

    async def kubectl(self, *args: str, stdin: str | None = None) -> str:
        argv = [KUBECTL, f"--kubeconfig={self.kubeconfig}", *args]
        result = await anyio.run_process(argv, input=stdin.encode() if stdin else None, check=False)
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.decode().strip()}")
        return result.stdout.decode()

    async def apply(self, manifest: Mapping[str, Any], namespace: str = "default") -> None:
        await self.kubectl(
            "apply", "--validate=false", "-n", namespace, "-f", "-", stdin=json.dumps(manifest)
        )

    async def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        out = await self.kubectl("get", kind, "-n", namespace, "--ignore-not-found", "-o", "json", name)
        if not out.strip():
            return None
        obj: dict[str, Any] = json.loads(out)
        return obj

    async def merge_patch(
        self, kind: str, name: str, namespace: str, patch: Mapping[str, Any], *, status: bool = False
    ) -> None:
        extra = ["--subresource=status"] if status else []
        await self.kubectl(
            "patch", kind, name, "-n", namespace, "--type=merge", "-p", json.dumps(patch), *extra
        )


def conditions_of(proxy: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    status = (proxy or {}).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or ()}


async def wait_reconciled(admin: Admin, name: str, namespace: str, generation: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reconciled() -> bool:
        seen["proxy"] = await admin.get("mcpproxy", name, namespace)
        status = (seen["proxy"] or {}).get("status") or {}
        return bool(
            status.get("observedGeneration") == generation
            and conditions_of(seen["proxy"]).get("Degraded", {}).get("status") == "False"
        )

    await eventually(reconciled, within=DEADLINE, what=f"{namespace}/{name} reconciled at {generation}")
    proxy: dict[str, Any] = seen["proxy"]
    return proxy


# -- installing the chart's prerequisites and running its operator -------------------------------------------


def watched_namespaces(container: Mapping[str, Any]) -> list[str]:
    """The namespaces the container's arguments name (`--namespace=X`); empty means every namespace."""
    return [arg.split("=", 1)[1] for arg in container.get("args") or () if arg.startswith("--namespace=")]


async def install_prerequisites(admin: Admin, objs: list[dict[str, Any]], namespaces: list[str]) -> None:
    """What `helm install` leaves for the operator: namespaces, the chart's CRDs, then its peering hooks."""
    for namespace in namespaces:
        await admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for crd in of_kind(objs, "CustomResourceDefinition"):
        await admin.apply(crd)
    await admin.apply(SERVICE_MONITOR_CRD)  # the Prometheus Operator is installed too
    for peering in of_kind(objs, "ClusterKopfPeering", "KopfPeering"):
        await admin.apply(peering, peering["metadata"].get("namespace") or "default")


def operator_argv_env(
    container: Mapping[str, Any], health_port: int, metrics_port: int
) -> tuple[list[str], dict[str, str]]:
    """The chart's container arguments and environment, with its listen addresses moved to loopback."""
    argv = [str(OPERATOR)]
    for arg in container.get("args") or ():
        if arg.startswith("--liveness="):
            path = arg.rsplit("/", 1)[1]
            argv.append(f"--liveness=http://127.0.0.1:{health_port}/{path}")
        else:
            argv.append(arg)
    env: dict[str, str] = {}
    for var in container.get("env") or ():
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = POD_NAME
        else:
            raise AssertionError(
                f"the operator's env {var['name']} has a source this test cannot play: {var}"
            )
    assert env.get("MCPLANE_METRICS_ADDRESS", "").startswith("0.0.0.0:"), env
    env["MCPLANE_METRICS_ADDRESS"] = f"127.0.0.1:{metrics_port}"
    return argv, env


@dataclass(frozen=True)
class Deployed:
    cluster: Cluster
    admin: Admin
    values: str
    objs: list[dict[str, Any]]
    token: str
    namespaces: list[str]
    operator: ProcessHandle


@dataclass(frozen=True)
class Seen:
    """One request the operator made, as the authorizer sees it, and the raw line it came from."""

    attributes: Attributes
    line: str


def operator_requests(cluster: Cluster, token: str) -> list[Seen]:
    seen = []
    for request in cluster.request_log():
        headers = {key.lower(): value for key, value in request.headers.items()}
        if headers.get("authorization") != f"Bearer {token}":
            continue
        url = request.url
        method = str(request.method.value)
        line = f"{method} {url.path}{'?' + url.query_string if url.query_string else ''}"
        seen.append(Seen(attributes(method, url.path, dict(url.query)), line))
    return seen


@pytest.fixture(params=sorted(KNOWN_DENIALS))
def deployed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployed]:
    """The chart's operator, running against a fresh emulator, for one values file."""
    objs = render_chart([ci_values(request.param)])
    sa_namespace, sa_name = service_account_of(objs)
    token = f"serviceaccount-{sa_namespace}-{sa_name}"  # the identity the API server would see
    container = operator_container(objs)
    namespaces = watched_namespaces(container)
    with emulated_cluster(tmp_path) as cluster:
        admin = Admin(cluster.kubeconfig)
        work = [sa_namespace, *(namespaces or ["apps"])]
        anyio.run(install_prerequisites, admin, objs, work)
        operator_kubeconfig = tmp_path / "operator-kubeconfig"
        operator_kubeconfig.write_text(kubeconfig_for(cluster.url, sa_namespace, token))
        health, metrics = free_port(), free_port()
        argv, env = operator_argv_env(container, health, metrics)
        env["KUBECONFIG"] = str(operator_kubeconfig)
        with running_process(argv, port=health, env=env, log_dir=tmp_path, label="operator") as operator:
            yield Deployed(cluster, admin, request.param, objs, token, namespaces or ["apps"], operator)
            log = operator.log_text()
        # SIGTERM: kopf leaves the peering and stops its watches; those requests are checked too.
        print(operator.log_tail(20000))
        assert operator.process.returncode == 0, log[-4000:]


# -- the test ------------------------------------------------------------------------------------------------


async def drive_lifecycle(deployed: Deployed) -> None:
    admin, operator = deployed.admin, deployed.operator
    example = yaml.safe_load(EXAMPLE.read_text())
    name = example["metadata"]["name"]
    first = deployed.namespaces[0]
    last = deployed.namespaces[-1]

    for secret in ("tools-backend", "tools-proxy-tokens"):
        data = {"api-key": "a2V5", "tokens": "dG9rZW4="}
        secret_manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "data": data}
        await admin.apply(secret_manifest, first)
    await admin.apply(example, first)
    await wait_reconciled(admin, name, first, generation=1)
    for kind in ("configmap", "service", "deployment", "poddisruptionbudget", "servicemonitor"):
        assert await admin.get(kind, name, first) is not None, kind

    # The Deployment controller reports a finished rollout: the operator reacts to the Deployment's event.
    deployment = await admin.get("deployment", name, first)
    assert deployment is not None
    rolled = {"observedGeneration": deployment["metadata"]["generation"], "replicas": 2}
    rolled |= {"updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    await admin.merge_patch("deployment", name, first, {"status": rolled}, status=True)

    async def ready() -> bool:
        found = conditions_of(await admin.get("mcpproxy", name, first)).get("Ready", {})
        return found.get("status") == "True"

    await eventually(ready, within=DEADLINE, what="Ready after the rollout")

    # An update that drops the optional children: the operator prunes them.
    drop = {"spec": {"podDisruptionBudget": None, "metrics": {"serviceMonitor": {"enabled": False}}}}
    await admin.merge_patch("mcpproxy", name, first, drop)
    await wait_reconciled(admin, name, first, generation=2)
    for kind in ("poddisruptionbudget", "servicemonitor"):
        assert await admin.get(kind, name, first) is None, kind

    # An invalid proxy in the last watched namespace: Degraded, with a warning Event.
    invalid = yaml.safe_load(INVALID_EXAMPLE.read_text())
    await admin.apply(invalid, last)

    async def invalid_degraded() -> bool:
        found = conditions_of(await admin.get("mcpproxy", invalid["metadata"]["name"], last))
        return found.get("Degraded", {}).get("reason") == "InvalidSpec"

    await eventually(invalid_degraded, within=DEADLINE, what="Degraded: InvalidSpec")

    # Deletion: kopf releases its finalizer; the emulator's garbage collector takes the children.
    await admin.kubectl("delete", "mcpproxy", name, "-n", first, "--timeout=20s")
    await admin.kubectl("delete", "mcpproxy", invalid["metadata"]["name"], "-n", last, "--timeout=20s")
    for kind in ("configmap", "service", "deployment"):
        assert await admin.get(kind, name, first) is None, kind
    assert operator.process.poll() is None, operator.log_tail()


def test_the_operator_uses_only_what_the_chart_grants(deployed: Deployed) -> None:
    anyio.run(drive_lifecycle, deployed)
    # The operator's last requests (leaving the peering) come when it stops: collect them after that.
    stop_process(deployed.operator.process, timeout=30)
    requests = operator_requests(deployed.cluster, deployed.token)
    authorizer = Authorizer.from_objects(deployed.objs, service_account_of(deployed.objs))

    assert requests, "the emulator saw no request with the operator's token"
    resource_requests = [seen for seen in requests if seen.attributes.is_resource]
    refused = [seen for seen in resource_requests if authorizer.allowing(seen.attributes) is None]
    known = KNOWN_DENIALS[deployed.values]
    denied = sorted(
        {
            f"{seen.attributes.brief()} in {seen.attributes.namespace or '(cluster)'}: {seen.line}"
            for seen in refused
            if (seen.attributes.verb, seen.attributes.group, seen.attributes.resource) not in known
        }
    )
    used = Counter(
        (seen.attributes.brief(), seen.attributes.namespace or "(cluster)") for seen in resource_requests
    )
    print("requests the operator made (verb group/resource, namespace: count):")
    for (what, where), count in sorted(used.items()):
        print(f"  {what}  {where}: {count}")
    print(
        "non-resource (discovery) requests:",
        sorted({s.line.split("?")[0] for s in requests if not s.attributes.is_resource}),
    )
    print("granted but never used:", unused_grants(authorizer.rules(), (s.attributes for s in requests)))

    assert not wildcards(authorizer.rules()), wildcards(authorizer.rules())
    assert not denied, "the operator made requests the chart's RBAC would deny:\n" + "\n".join(denied)
    still_denied = {(s.attributes.verb, s.attributes.group, s.attributes.resource) for s in refused}
    assert still_denied == known, f"KNOWN_DENIALS[{deployed.values!r}] is stale: now denied {still_denied}"
    # The lifecycle did reach every kind of write the operator makes, so the check above covered them.
    verbs = {(s.attributes.resource, s.attributes.verb) for s in resource_requests}
    for expected in [
        ("mcpproxies", "watch"),
        ("mcpproxies", "patch"),
        ("mcpproxies/status", "patch"),
        ("configmaps", "create"),
        ("deployments", "watch"),
        ("poddisruptionbudgets", "delete"),
        ("servicemonitors", "delete"),
        ("secrets", "get"),
        ("pods", "list"),
        ("events", "create"),  # the Degraded proxy's warning, posted as a Kubernetes Event
    ]:
        assert expected in verbs, f"the lifecycle never made {expected}"
