"""The operator end to end: kopf (`KopfRunner`) against the API emulator, driven by the real `kubectl`.

Every object goes in and comes out through `kubectl` (`apply --validate=false`, `get -o json`, `patch`,
`delete`). There are no pods or controllers: a test plays the Deployment controller by patching a
Deployment's status, and plays the sidecars with a small HTTP server answering `/status`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import httpx
import kopf
import pytest
import yaml
from kopf.testing import KopfRunner

from mcplane_operator import apply as apply_module
from mcplane_operator import handlers, metrics
from mcplane_operator import status as conditions
from mcplane_operator.builders import (
    CHECKSUM_ANNOTATION,
    build_configmap,
    config_checksum,
    referenced_secrets,
    selector_labels,
    service_url,
)
from mcplane_operator.model import API_VERSION, KIND, parse_spec
from tests.operator.conftest import REPO, SERVICE_MONITOR_CRD, Cluster
from tests.support.processes import PYTHON, ProcessHandle, async_running_process, free_port, stop_process
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
EXAMPLES = sorted((REPO / "manifests" / "examples").glob("*.yaml"))
INVALID_EXAMPLE = REPO / "manifests" / "examples" / "invalid" / "http-without-url.yaml"
SIDECAR_IMAGE = "mcplane/sidecar:e2e"
DEADLINE = 15.0  # each wait: the operator answers in well under a second; the margin is for a loaded CI box
OPERATOR_STOP_S = 30.0
CHILD_KINDS = ("configmap", "service", "deployment")


# -- kubectl -------------------------------------------------------------------------------------------------


class KubectlError(AssertionError):
    pass


async def kubectl(*args: str, stdin: str | None = None) -> str:
    result = await anyio.run_process([KUBECTL, *args], input=stdin.encode() if stdin else None, check=False)
    if result.returncode != 0:
        raise KubectlError(f"kubectl {' '.join(args)}: {result.stderr.decode().strip()}")
    return result.stdout.decode()


async def get(kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """`kubectl get -o json`; None when the object does not exist."""
    try:
        out = await kubectl("get", kind, name, "-n", namespace, "-o", "json")
    except KubectlError as exc:
        if "NotFound" in str(exc):
            return None
        raise
    obj: dict[str, Any] = json.loads(out)
    return obj


async def must_get(kind: str, name: str, namespace: str) -> dict[str, Any]:
    obj = await get(kind, name, namespace)
    assert obj is not None, f"{kind} {namespace}/{name} does not exist"
    return obj


async def apply(manifest: Mapping[str, Any] | Path, namespace: str) -> None:
    if isinstance(manifest, Path):
        await kubectl("apply", "--validate=false", "-n", namespace, "-f", str(manifest))
    else:
        await kubectl("apply", "--validate=false", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))


async def merge_patch(
    kind: str, name: str, namespace: str, patch: Mapping[str, Any], *, status: bool = False
) -> None:
    subresource = ["--subresource=status"] if status else []
    await kubectl("patch", kind, name, "-n", namespace, "--type=merge", "-p", json.dumps(patch), *subresource)


async def create_namespace(name: str) -> str:
    await apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, "default")
    return name


def condition(proxy: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any]:
    found = conditions.condition((proxy or {}).get("status"), type_)
    return found or {}


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def secret(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"k": "dmFsdWU="}}


def proxy_manifest(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": dict(spec)}


SSE_SPEC = {"backend": {"kind": "sse", "url": "http://legacy.example.svc:8000/sse"}, "replicas": 2}


# -- the sidecars' /status, and the operator -----------------------------------------------------------------


class SidecarStatus:
    """Answers `/pods/<pod>/status` like a sidecar: `activeSessions` per pod; pods not listed answer 503."""

    def __init__(self) -> None:
        self.sessions: dict[str, int] = {}
        sessions = self.sessions

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pod = self.path.removeprefix("/pods/").removesuffix("/status")
                if pod in sessions:
                    body = json.dumps({"activeSessions": sessions[pod], "draining": False}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                else:
                    body = b'{"error": "draining"}'
                    self.send_response(503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SidecarStatus:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sidecars() -> Iterator[SidecarStatus]:
    with SidecarStatus() as server:
        yield server


@dataclass(frozen=True)
class Operator:
    runner: KopfRunner
    metrics_url: str


@contextmanager
def running_operator(sidecars: SidecarStatus) -> Iterator[Operator]:
    """The operator as `kopf run --standalone --all-namespaces -m mcplane_operator.handlers`, in a thread."""
    metrics_port = free_port()
    with pytest.MonkeyPatch.context() as env:  # read by the operator's startup handler, in its own thread
        env.setenv("MCPLANE_SIDECAR_IMAGE", SIDECAR_IMAGE)
        env.setenv("MCPLANE_RETRY_DELAY", "0.5")
        env.setenv("MCPLANE_METRICS_ADDRESS", f"127.0.0.1:{metrics_port}")
        env.setenv("MCPLANE_STATUS_URL", f"http://127.0.0.1:{sidecars.port}/pods/{{name}}/status")
        env.setenv("MCPLANE_STATUS_TIMEOUT", "1")
        args = ["run", "--standalone", "--all-namespaces", "--verbose", "-m", "mcplane_operator.handlers"]
        runner = KopfRunner(args, timeout=OPERATOR_STOP_S)
        try:
            with runner:
                yield Operator(runner=runner, metrics_url=f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            # Shown by pytest for a failing test only: what the operator did, to the last line.
            print(runner.output if runner.future.done() else "(the operator did not stop)")
    assert runner.exit_code == 0, runner.output


@pytest.fixture
def operator(cluster: Cluster, sidecars: SidecarStatus) -> Iterator[Operator]:
    with running_operator(sidecars) as op:
        yield op


async def wait_reconciled(name: str, namespace: str, generation: int = 1) -> dict[str, Any]:
    """The proxy once its status speaks of `generation`."""
    seen: dict[str, Any] = {}

    async def reconciled() -> bool:
        proxy = await get("mcpproxy", name, namespace)
        seen["proxy"] = proxy
        status = (proxy or {}).get("status") or {}
        return bool(status.get("observedGeneration") == generation and len(status.get("conditions", [])) == 3)

    await eventually(
        reconciled, within=DEADLINE, what=f"{namespace}/{name} reconciled at generation {generation}"
    )
    proxy: dict[str, Any] = seen["proxy"]
    return proxy


# -- tests ---------------------------------------------------------------------------------------------------


async def test_every_example_becomes_owned_children_with_its_config(operator: Operator) -> None:
    namespace = "examples"
    await create_namespace(namespace)
    for example in EXAMPLES:
        for name in referenced_secrets(load(example)["spec"]):
            await apply(secret(name), namespace)
    await kubectl("apply", "--validate=false", "-n", namespace, *(f"-f={path}" for path in EXAMPLES))

    # The ServiceMonitor CRD is not installed: none is made, even for the example that asks for one.
    assert "monitoring.coreos.com/v1" not in await kubectl("api-versions")
    for example in EXAMPLES:
        name = load(example)["metadata"]["name"]
        spec = parse_spec(load(example)["spec"])
        proxy = await wait_reconciled(name, namespace)
        uid = proxy["metadata"]["uid"]
        children = {kind: await must_get(kind, name, namespace) for kind in CHILD_KINDS}
        for kind, child in children.items():
            assert child["metadata"]["ownerReferences"] == [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ], f"{kind} of {name}"
        configmap, deployment = children["configmap"], children["deployment"]
        assert configmap["data"] == build_configmap(name, namespace, spec)["data"], name
        template = deployment["spec"]["template"]
        assert template["metadata"]["annotations"][CHECKSUM_ANNOTATION] == config_checksum(configmap)
        assert template["spec"]["containers"][0]["image"] == (spec.sidecar.image or SIDECAR_IMAGE)
        assert children["service"]["spec"]["ports"][0]["port"] == spec.service.port
        status = proxy["status"]
        assert status["url"] == service_url(name, namespace, spec)
        assert status["readyReplicas"] == 0
        assert status["activeSessions"] == 0
        assert [c["type"] for c in status["conditions"]] == ["Ready", "Progressing", "Degraded"]
        assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] for c in status["conditions"])
        # No pods run here: the children are in place, the rollout is not.
        assert condition(proxy, "Degraded")["status"] == "False"
        assert condition(proxy, "Progressing")["reason"] == "RollingOut"
        assert condition(proxy, "Ready")["reason"] == "ReplicasNotReady"
        wants_pdb = spec.pod_disruption_budget is not None
        assert (await get("poddisruptionbudget", name, namespace) is not None) == wants_pdb, name


async def test_a_spec_edit_rewrites_the_config_and_rolls_the_pods(operator: Operator) -> None:
    namespace, name = "edits", "edited"
    await create_namespace(namespace)
    await apply(proxy_manifest(name, SSE_SPEC), namespace)
    before = await wait_reconciled(name, namespace)
    old_checksum = (await must_get("deployment", name, namespace))["spec"]["template"]["metadata"][
        "annotations"
    ][CHECKSUM_ANNOTATION]

    await merge_patch("mcpproxy", name, namespace, {"spec": {"sessions": {"maxSessions": 321}}})
    after = await wait_reconciled(name, namespace, generation=2)

    configmap = await must_get("configmap", name, namespace)
    assert "max_sessions: 321" in configmap["data"]["sidecar.yaml"]
    spec = parse_spec(after["spec"])
    assert configmap["data"] == build_configmap(name, namespace, spec)["data"]
    annotations = (await must_get("deployment", name, namespace))["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations[CHECKSUM_ANNOTATION] == config_checksum(configmap) != old_checksum
    # A condition whose status did not flip keeps its transition time.
    assert (
        condition(after, "Degraded")["lastTransitionTime"]
        == condition(before, "Degraded")["lastTransitionTime"]
    )
    assert condition(after, "Degraded")["observedGeneration"] == 2


async def test_a_deleted_or_edited_deployment_comes_back(operator: Operator) -> None:
    namespace, name = "drift", "drifting"
    await create_namespace(namespace)
    await apply(proxy_manifest(name, SSE_SPEC), namespace)
    await wait_reconciled(name, namespace)
    original = await must_get("deployment", name, namespace)

    await kubectl("delete", "deployment", name, "-n", namespace)

    async def recreated() -> bool:
        deployment = await get("deployment", name, namespace)
        return deployment is not None and deployment["metadata"]["uid"] != original["metadata"]["uid"]

    await eventually(recreated, within=DEADLINE, what="the deleted Deployment recreated")
    checksum = original["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION]
    tampered = {
        "spec": {"replicas": 7, "template": {"metadata": {"annotations": {CHECKSUM_ANNOTATION: "x"}}}}
    }
    await merge_patch("deployment", name, namespace, tampered)

    async def restored() -> bool:
        spec = (await must_get("deployment", name, namespace))["spec"]
        return bool(
            spec["replicas"] == 2
            and spec["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION] == checksum
        )

    await eventually(restored, within=DEADLINE, what="the edited Deployment restored")


async def test_the_resync_timer_restores_an_edited_configmap(operator: Operator) -> None:
    """What the timer runs every RESYNC_INTERVAL_S (too long to wait for here): one reconcile of the proxy."""
    namespace, name = await create_namespace("resync"), "resynced"
    await apply(proxy_manifest(name, SSE_SPEC), namespace)
    await wait_reconciled(name, namespace)
    expected = (await must_get("configmap", name, namespace))["data"]
    await merge_patch("configmap", name, namespace, {"data": {"sidecar.yaml": "tampered: true\n"}})
    await merge_patch("service", name, namespace, {"spec": {"sessionAffinity": "None"}})

    runtime = handlers.Runtime(
        config=handlers.OperatorConfig(sidecar_image=SIDECAR_IMAGE, metrics_address=None),
        kube=apply_module.KubeClient.from_environment(),
        metrics=metrics.OperatorMetrics(),
    )
    body = kopf.Body(cast(kopf.RawBody, await must_get("mcpproxy", name, namespace)))
    try:
        outcome = await anyio.to_thread.run_sync(handlers.reconcile, runtime, body, logging.getLogger("test"))
    finally:
        runtime.kube.close()

    assert (await must_get("configmap", name, namespace))["data"] == expected
    assert (await must_get("service", name, namespace))["spec"]["sessionAffinity"] == "ClientIP"
    assert outcome.problem is None
    assert outcome.status["observedGeneration"] == 1


async def test_a_missing_secret_degrades_until_it_exists(operator: Operator) -> None:
    namespace, example = "secrets", REPO / "manifests" / "examples" / "stdio.yaml"
    await create_namespace(namespace)
    name = load(example)["metadata"]["name"]
    (missing,) = referenced_secrets(load(example)["spec"])
    await apply(example, namespace)

    async def degraded() -> bool:
        return condition(await get("mcpproxy", name, namespace), "Degraded").get("status") == "True"

    await eventually(degraded, within=DEADLINE, what="Degraded")
    proxy = await must_get("mcpproxy", name, namespace)
    assert condition(proxy, "Degraded")["reason"] == "SecretMissing"
    assert missing in condition(proxy, "Degraded")["message"]
    assert {**condition(proxy, "Ready"), "lastTransitionTime": None} == {
        "type": "Ready",
        "status": "False",
        "reason": "SecretMissing",
        "message": condition(proxy, "Degraded")["message"],
        "lastTransitionTime": None,
        "observedGeneration": 1,
    }
    assert proxy["status"]["observedGeneration"] == 1
    for kind in CHILD_KINDS:  # nothing is rolled while the pods could not start
        assert await get(kind, name, namespace) is None, kind

    await apply(secret(missing), namespace)

    async def recovered() -> bool:
        return condition(await get("mcpproxy", name, namespace), "Degraded").get("status") == "False"

    await eventually(recovered, within=DEADLINE, what="Degraded to clear once the Secret exists")
    proxy = await must_get("mcpproxy", name, namespace)
    assert condition(proxy, "Progressing")["status"] == "True"
    for kind in CHILD_KINDS:
        await must_get(kind, name, namespace)


async def test_an_invalid_spec_degrades_and_a_fix_recovers(operator: Operator) -> None:
    namespace = "invalid"
    await create_namespace(namespace)
    name = load(INVALID_EXAMPLE)["metadata"]["name"]
    await apply(INVALID_EXAMPLE, namespace)

    async def degraded() -> bool:
        return condition(await get("mcpproxy", name, namespace), "Degraded").get("reason") == "InvalidSpec"

    await eventually(degraded, within=DEADLINE, what="Degraded with InvalidSpec")
    message = condition(await must_get("mcpproxy", name, namespace), "Degraded")["message"]
    assert "backend kinds http and sse need backend.url or a server container" in message
    for kind in CHILD_KINDS:
        assert await get(kind, name, namespace) is None, kind

    await merge_patch(
        "mcpproxy", name, namespace, {"spec": {"backend": {"url": "http://fixed.example:8000/mcp"}}}
    )
    proxy = await wait_reconciled(name, namespace, generation=2)
    assert condition(proxy, "Degraded")["status"] == "False"
    for kind in CHILD_KINDS:
        await must_get(kind, name, namespace)


async def test_ready_replicas_and_active_sessions(operator: Operator, sidecars: SidecarStatus) -> None:
    namespace, name = "ready", "serving"
    await create_namespace(namespace)
    await apply(proxy_manifest(name, SSE_SPEC), namespace)
    await wait_reconciled(name, namespace)
    # Three sidecar pods: two answer /status, one does not (503); a fourth has no IP yet.
    sidecars.sessions.update({"serving-a": 3, "serving-b": 4})
    for pod, ip in (
        ("serving-a", "127.0.0.1"),
        ("serving-b", "127.0.0.1"),
        ("serving-c", "127.0.0.1"),
        ("d", ""),
    ):
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "labels": selector_labels(name)},
            "spec": {"containers": [{"name": "sidecar", "image": SIDECAR_IMAGE}]},
        }
        await apply(manifest, namespace)
        if ip:
            await merge_patch(
                "pod", pod, namespace, {"status": {"phase": "Running", "podIP": ip}}, status=True
            )
    # Play the Deployment controller: both replicas updated and ready.
    deployment = await must_get("deployment", name, namespace)
    rolled = {"observedGeneration": deployment["metadata"]["generation"], "replicas": 2}
    rolled |= {"updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    await merge_patch("deployment", name, namespace, {"status": rolled}, status=True)

    async def ready() -> bool:
        return condition(await get("mcpproxy", name, namespace), "Ready").get("status") == "True"

    await eventually(ready, within=DEADLINE, what="Ready")
    proxy = await must_get("mcpproxy", name, namespace)
    assert condition(proxy, "Ready")["reason"] == "Available"
    assert {**condition(proxy, "Progressing"), "lastTransitionTime": None} == {
        "type": "Progressing",
        "status": "False",
        "reason": "RolledOut",
        "message": "the Deployment is up to date",
        "lastTransitionTime": None,
        "observedGeneration": 1,
    }
    assert proxy["status"]["readyReplicas"] == 2
    assert proxy["status"]["activeSessions"] == 7


async def test_deleting_the_proxy_collects_its_children(operator: Operator) -> None:
    namespace, name = "deletion", "doomed"
    await create_namespace(namespace)
    await apply(proxy_manifest(name, {**SSE_SPEC, "podDisruptionBudget": {"maxUnavailable": 1}}), namespace)
    await wait_reconciled(name, namespace)
    kinds = (*CHILD_KINDS, "poddisruptionbudget")
    for kind in kinds:
        await must_get(kind, name, namespace)

    await kubectl("delete", "mcpproxy", name, "-n", namespace)  # waits until the finalizer is released

    assert await get("mcpproxy", name, namespace) is None
    for kind in kinds:
        assert await get(kind, name, namespace) is None, kind


async def test_service_monitor_follows_its_crd_and_the_spec(operator: Operator) -> None:
    namespace, name = "monitoring", "watched"
    await create_namespace(namespace)
    monitored = {**SSE_SPEC, "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    await apply(proxy_manifest(name, monitored), namespace)
    await wait_reconciled(name, namespace)
    assert "monitoring.coreos.com/v1" not in await kubectl("api-versions")  # no ServiceMonitor kind yet

    await apply(SERVICE_MONITOR_CRD, "default")  # the Prometheus Operator arrives
    await merge_patch("mcpproxy", name, namespace, {"spec": {"sessions": {"maxSessions": 99}}})
    await wait_reconciled(name, namespace, generation=2)
    monitor = await must_get("servicemonitor", name, namespace)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["metadata"]["ownerReferences"][0]["name"] == name

    await merge_patch(
        "mcpproxy", name, namespace, {"spec": {"metrics": {"serviceMonitor": {"enabled": False}}}}
    )
    await wait_reconciled(name, namespace, generation=3)
    assert await get("servicemonitor", name, namespace) is None


async def test_a_restarted_operator_resumes_and_repairs(cluster: Cluster, sidecars: SidecarStatus) -> None:
    namespace, name = "resume", "resumed"
    await create_namespace(namespace)
    with running_operator(sidecars):
        await apply(proxy_manifest(name, SSE_SPEC), namespace)
        await wait_reconciled(name, namespace)
    # While no operator runs, its Deployment goes.
    await kubectl("delete", "deployment", name, "-n", namespace)
    with running_operator(sidecars):

        async def repaired() -> bool:
            return await get("deployment", name, namespace) is not None

        await eventually(repaired, within=DEADLINE, what="the Deployment recreated on resume")


async def test_operator_metrics_count_reconciles(operator: Operator) -> None:
    namespace = "metrics"
    await create_namespace(namespace)
    await apply(proxy_manifest("counted", SSE_SPEC), namespace)
    await wait_reconciled("counted", namespace)
    await apply(load(INVALID_EXAMPLE), namespace)

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line.startswith("mcplane_operator_") and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                samples[key] = float(value)
        return samples

    async def counted() -> bool:
        samples = await anyio.to_thread.run_sync(scrape)
        return samples.get('mcplane_operator_reconciles_total{result="degraded"}', 0) >= 1

    await eventually(counted, within=DEADLINE, what="a degraded reconcile counted")
    samples = await anyio.to_thread.run_sync(scrape)
    assert samples['mcplane_operator_reconciles_total{result="progressing"}'] >= 1
    assert samples["mcplane_operator_reconcile_errors_total"] == 0
    assert samples["mcplane_operator_reconcile_duration_seconds_count"] >= 2


async def test_replicas_take_turns_through_peering_in_their_namespaces(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Two operator processes (`run()`, scoped by MCPLANE_WATCH_NAMESPACES): one acts, the other stands by."""
    scoped, unwatched = await create_namespace("scoped"), await create_namespace("unwatched")
    await apply(KOPF_PEERING_CRD, "default")
    await apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}, scoped)
    env = {
        "MCPLANE_WATCH_NAMESPACES": scoped,
        "MCPLANE_METRICS_ADDRESS": "",
        "MCPLANE_SIDECAR_IMAGE": SIDECAR_IMAGE,
    }

    def replica(label: str) -> AbstractAsyncContextManager[ProcessHandle]:
        port = free_port()
        code = f"from mcplane_operator.operator import run; run(liveness_endpoint='http://127.0.0.1:{port}/healthz')"
        argv: list[str | os.PathLike[str]] = [PYTHON, "-c", code]
        # POD_ID is kopf's peer identity (in a cluster: the pod's name), here the label.
        return async_running_process(
            argv, port=port, env={**env, "POD_ID": label}, log_dir=tmp_path, label=label
        )

    async with replica("replica-1") as first, replica("replica-2") as second:
        async with httpx.AsyncClient() as http:  # kopf's liveness endpoint
            for handle in (first, second):
                assert (await http.get(f"{handle.base_url}/healthz")).status_code == 200
        peers: dict[str, Any] = {}

        async def both_peered() -> bool:
            peers.update((await must_get("kopfpeering", PEERING, scoped)).get("status") or {})
            return {"replica-1", "replica-2"} <= set(peers)

        await eventually(both_peered, within=DEADLINE, what="both replicas in the peering")
        # kopf pauses every operator that sees a live peer of higher priority: the highest one acts.
        top = max(("replica-1", "replica-2"), key=lambda peer: int(peers[peer]["priority"]))
        active, standby = (first, second) if top == "replica-1" else (second, first)
        await eventually(
            lambda: not paused(active.log_text()) and paused(standby.log_text()),
            within=DEADLINE,
            what="the top replica active, the other paused",
        )
        await apply(proxy_manifest("peered", SSE_SPEC), scoped)
        await apply(proxy_manifest("ignored", SSE_SPEC), unwatched)
        await wait_reconciled("peered", scoped)
        assert "[scoped/peered] Handler 'create_proxy' succeeded" in active.log_text()
        assert "peered" not in standby.log_text()
        assert await get("configmap", "ignored", unwatched) is None  # outside the watched namespaces

        await anyio.to_thread.run_sync(
            stop_process, active.process
        )  # a clean exit leaves the peering at once
        await eventually(
            lambda: not paused(standby.log_text()), within=DEADLINE, what="the standby taking over"
        )
        await apply(proxy_manifest("after-takeover", SSE_SPEC), scoped)
        await wait_reconciled("after-takeover", scoped)
        assert "[scoped/after-takeover] Handler 'create_proxy' succeeded" in standby.log_text()


def paused(log: str) -> bool:
    """Whether kopf's last word on peering in this log is a pause (it starts paused until peering says go)."""
    return log.rfind("Pausing operations in favour of") >= log.rfind("Resuming operations after the pause")


PEERING = "mcplane-operator"
# kopf's own CRD for namespaced peering (kopf.dev/v1 KopfPeering): the peers' keep-alives live in `status`.
KOPF_PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfpeerings.kopf.dev"},
    "spec": {
        "group": "kopf.dev",
        "scope": "Namespaced",
        "names": {"plural": "kopfpeerings", "singular": "kopfpeering", "kind": "KopfPeering"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}
