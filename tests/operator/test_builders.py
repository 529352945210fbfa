"""The builders: every example renders to objects a Kubernetes 1.31 API server accepts, as we mean them."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mcplane_operator import builders
from mcplane_operator.builders import (
    CHECKSUM_ANNOTATION,
    build_children,
    build_configmap,
    build_deployment,
    build_pdb,
    build_service,
    build_service_monitor,
    config_checksum,
    referenced_secrets,
    service_url,
    sidecar_config,
)
from mcplane_operator.model import parse_spec
from mcplane_sidecar.config import SecretValue, SidecarConfig, build_config, env_overrides

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
IMAGE = "mcplane/sidecar:test"
NS = "tools"
K8S_VERSION = "1.31.0"
LABELS = {
    "app.kubernetes.io/name": "mcplane-sidecar",
    "app.kubernetes.io/managed-by": "mcplane-operator",
    "app.kubernetes.io/part-of": "mcplane",
}


def example(path: Path) -> tuple[str, dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return doc["metadata"]["name"], doc["spec"]


def children(
    spec: dict[str, Any], name: str = "proxy", *, monitors: bool = True
) -> dict[str, dict[str, Any]]:
    out = build_children(name, NS, spec, sidecar_image=IMAGE, service_monitor_available=monitors)
    return {c["kind"]: c for c in out}


def config_of(configmap: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(configmap["data"]["sidecar.yaml"])
    return doc


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod_spec(deployment)["containers"] if c["name"] == name]
    assert len(found) == 1
    return found[0]


# --- every example ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_children_pass_kubernetes_validate_strict(path: Path) -> None:
    name, spec = example(path)
    objs = build_children(name, NS, spec, sidecar_image=IMAGE, service_monitor_available=True)
    kinds = [o["kind"] for o in objs]
    assert kinds[:3] == ["ConfigMap", "Service", "Deployment"]
    for obj in objs:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a custom resource: kubernetes-validate has no schema for it
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_kubernetes_validate_command_line_on_a_rendered_file(tmp_path: Path) -> None:
    """The same check through the CLI, as CI or a person would run it (and it does reject a bad object)."""
    name, spec = example(ROOT / "manifests" / "examples" / "server-container.yaml")
    objs = build_children(name, NS, spec, sidecar_image=IMAGE, service_monitor_available=False)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump_all(objs))
    cli = [sys.executable, "-m", "kubernetes_validate", "-k", K8S_VERSION, "--strict"]
    run = subprocess.run([*cli, str(good)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    bad_obj = copy.deepcopy(objs[2])
    bad_obj["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/x"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(bad_obj))
    run = subprocess.run([*cli, str(bad)], capture_output=True, text=True, check=False)
    assert run.returncode != 0
    assert "pathh" in run.stdout + run.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_is_a_sidecar_config(path: Path) -> None:
    name, spec = example(path)
    kids = children(spec, name)
    document = config_of(kids["ConfigMap"])
    assert document == sidecar_config(name, spec, namespace=NS)
    config = SidecarConfig.model_validate(document)
    assert config.name == name
    assert config.server.host == "0.0.0.0"
    assert config.server.port == container(kids["Deployment"], "sidecar")["ports"][0]["containerPort"]
    assert config.backend.kind == spec["backend"]["kind"]
    # As the sidecar loads it in the pod: the file, then its MCPLANE_* environment.
    env = resolved_env(container(kids["Deployment"], "sidecar"), fake_secrets(spec))
    build_config(document, env_overrides(env))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_children_are_labelled_and_unowned(path: Path) -> None:
    name, spec = example(path)
    for obj in children(spec, name).values():
        meta = obj["metadata"]
        assert meta["name"] == name
        assert meta["namespace"] == NS
        assert meta["labels"].items() >= {**LABELS, "app.kubernetes.io/instance": name}.items()
        assert "ownerReferences" not in meta  # the handler adopts


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_pods_are_restricted(path: Path) -> None:
    name, spec = example(path)
    pod = pod_spec(children(spec, name)["Deployment"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in pod["containers"]:
        assert c["securityContext"] == {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert volumes[tmp["name"]] == {"name": tmp["name"], "emptyDir": {}}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_service_selects_the_pods(path: Path) -> None:
    name, spec = example(path)
    kids = children(spec, name)
    service, deployment = kids["Service"], kids["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http"
    assert port["targetPort"] == "http"
    assert port["appProtocol"] == "http"
    assert container(deployment, "sidecar")["ports"][0]["name"] == "http"


# --- the sidecar container and the pod ------------------------------------------------------------------

BASE: dict[str, Any] = {"backend": {"kind": "http", "url": "http://tools:8000/mcp"}}


def test_sidecar_container() -> None:
    deployment = children(BASE)["Deployment"]
    sidecar = container(deployment, "sidecar")
    assert sidecar["image"] == IMAGE
    assert sidecar["command"] == ["mcplane-sidecar"]
    assert sidecar["args"] == ["--config", "/etc/mcplane/sidecar.yaml"]
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "config", "mountPath": "/etc/mcplane", "readOnly": True} in sidecar["volumeMounts"]
    assert {"name": "config", "configMap": {"name": "proxy"}} in pod_spec(deployment)["volumes"]
    assert sidecar["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"
    # The kubelet waits longer than the sidecar drains.
    assert (
        pod_spec(deployment)["terminationGracePeriodSeconds"]
        > config_of(children(BASE)["ConfigMap"])["drain_timeout"]
    )


def test_sidecar_image_and_port_from_the_spec() -> None:
    spec = {
        **BASE,
        "sidecar": {"image": "me/sidecar-with-server:2", "imagePullPolicy": "Always", "port": 9090},
    }
    kids = children(spec)
    sidecar = container(kids["Deployment"], "sidecar")
    assert sidecar["image"] == "me/sidecar-with-server:2"
    assert sidecar["imagePullPolicy"] == "Always"
    assert sidecar["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    assert config_of(kids["ConfigMap"])["server"]["port"] == 9090
    assert kids["Deployment"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9090"


def test_replicas_omitted_means_no_replicas_field() -> None:
    assert "replicas" not in children(BASE)["Deployment"]["spec"]
    assert children({**BASE, "replicas": 3})["Deployment"]["spec"]["replicas"] == 3
    assert children({**BASE, "replicas": 0})["Deployment"]["spec"]["replicas"] == 0


def test_rollout_surges_before_draining() -> None:
    strategy = children(BASE)["Deployment"]["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_checksum_follows_the_config() -> None:
    kids = children(BASE)
    checksum = kids["Deployment"]["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION]
    assert checksum == config_checksum(kids["ConfigMap"])
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)
    same = children(copy.deepcopy(BASE))["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert same[CHECKSUM_ANNOTATION] == checksum
    changed = children({**BASE, "sessions": {"maxSessions": 5}})
    new = changed["Deployment"]["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION]
    assert new != checksum
    # Changes that do not touch the config (replicas, placement) do not roll the pods through the checksum.
    scaled = children({**BASE, "replicas": 4, "nodeSelector": {"a": "b"}})
    assert (
        scaled["Deployment"]["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION] == checksum
    )


def test_build_deployment_takes_the_checksum_it_is_given() -> None:
    deployment = build_deployment("p", NS, BASE, config_checksum="abc", sidecar_image=IMAGE)
    assert deployment["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION] == "abc"


def test_placement_and_identity() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    spec = {
        **BASE,
        "serviceAccountName": "irsa-proxy",
        "nodeSelector": {"pool": "mcp"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mcp", "effect": "NoSchedule"}],
        "affinity": affinity,
        "imagePullSecrets": [{"name": "regcred"}],
    }
    deployment = children(spec)["Deployment"]
    pod = pod_spec(deployment)
    assert pod["serviceAccountName"] == "irsa-proxy"
    assert pod["nodeSelector"] == {"pool": "mcp"}
    assert pod["tolerations"] == spec["tolerations"]
    assert pod["affinity"] == affinity
    assert pod["affinity"] is not affinity
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    assert "serviceAccountName" not in pod_spec(children(BASE)["Deployment"])


# --- backends ---------------------------------------------------------------------------------------------


def test_server_container_is_proxied_on_loopback() -> None:
    spec = {
        "backend": {"kind": "sse"},
        "server": {
            "image": "example/server:1",
            "command": ["node"],
            "args": ["server.js"],
            "port": 9000,
            "path": "/sse",
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ],
            "resources": {"limits": {"memory": "1Gi"}},
        },
    }
    kids = children(spec)
    assert config_of(kids["ConfigMap"])["backend"]["url"] == "http://127.0.0.1:9000/sse"
    server = container(kids["Deployment"], "server")
    assert server["image"] == "example/server:1"
    assert server["command"] == ["node"]
    assert server["args"] == ["server.js"]
    assert server["ports"] == [{"name": "mcp", "containerPort": 9000, "protocol": "TCP"}]
    assert server["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    assert server["resources"] == {"limits": {"memory": "1Gi"}}
    # The Service exposes only the sidecar.
    assert [p["targetPort"] for p in kids["Service"]["spec"]["ports"]] == ["http"]


def test_no_server_container_without_spec_server() -> None:
    names = [c["name"] for c in pod_spec(children(BASE)["Deployment"])["containers"]]
    assert names == ["sidecar"]


def test_stdio_literal_env_in_config_secret_env_on_the_container() -> None:
    spec = {
        "backend": {
            "kind": "stdio",
            "stdio": {
                "command": "python",
                "args": ["-m", "srv"],
                "workingDir": "/srv",
                "env": [
                    {"name": "MODE", "value": "fast"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "srv", "key": "token"}}},
                ],
            },
        }
    }
    kids = children(spec)
    stdio = config_of(kids["ConfigMap"])["backend"]["stdio"]
    assert stdio == {"command": "python", "args": ["-m", "srv"], "env": {"MODE": "fast"}, "cwd": "/srv"}
    env = container(kids["Deployment"], "sidecar")["env"]
    assert {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "srv", "key": "token"}}} in env
    assert all(e["name"] != "MODE" for e in env)


def test_sqs_config() -> None:
    spec = {
        "backend": {
            "kind": "sqs",
            "aws": {"region": "eu-west-1", "endpointUrl": "http://moto:5000"},
            "sqs": {"requestQueueUrl": "http://moto:5000/123/requests", "maxMessages": 5},
            "clientId": "proxy-a",
            "messageAttributes": {"team": "a"},
        },
        "replicas": 2,
    }
    backend = config_of(children(spec)["ConfigMap"])["backend"]
    assert backend["aws"] == {"region": "eu-west-1", "endpoint_url": "http://moto:5000"}
    assert backend["sqs"] == {
        "request_queue_url": "http://moto:5000/123/requests",
        "wait_time_seconds": 20,
        "visibility_timeout": 30,
        "max_messages": 5,
    }
    assert backend["client_id"] == "proxy-a"
    assert backend["message_attributes"] == {"team": "a"}
    assert "url" not in backend


def test_webhook_calls_back_each_pod_at_its_own_address() -> None:
    webhook_spec: dict[str, Any] = {"serverUrl": "http://srv:8000/mcp/request"}
    kids = children({"backend": {"kind": "webhook", "webhook": webhook_spec}})
    webhook = config_of(kids["ConfigMap"])["backend"]["webhook"]
    assert webhook["server_url"] == "http://srv:8000/mcp/request"
    assert webhook["public_base_url"] == f"http://proxy.{NS}.svc:8080"  # stand-in, overridden per pod
    sidecar = container(kids["Deployment"], "sidecar")
    env = resolved_env(sidecar, {})
    config = build_config(config_of(kids["ConfigMap"]), env_overrides(env))
    assert config.backend.webhook is not None
    assert config.backend.webhook.public_base_url == "http://10.1.2.3:8080"
    # An explicit address is used as given, with no per-pod override.
    given = {
        "backend": {
            "kind": "webhook",
            "webhook": {**webhook_spec, "publicBaseUrl": "http://gw"},
        }
    }
    kids = children(given)
    assert config_of(kids["ConfigMap"])["backend"]["webhook"]["public_base_url"] == "http://gw"
    assert "env" not in container(kids["Deployment"], "sidecar")


def test_durations_become_seconds() -> None:
    spec = {
        "backend": {**BASE["backend"], "connectTimeout": "1500ms"},
        "sessions": {"maxSessions": 10, "idleTimeout": "1h30m", "requestTimeout": "90s"},
    }
    document = config_of(children(spec)["ConfigMap"])
    assert document["backend"]["connect_timeout"] == 1.5
    assert document["sessions"] == {"max_sessions": 10, "idle_timeout": 5400, "request_timeout": 90}
    defaults = config_of(children(BASE)["ConfigMap"])["sessions"]
    assert defaults == {"max_sessions": 1000, "idle_timeout": 900, "request_timeout": 300}


# --- Secrets: by reference only ---------------------------------------------------------------------------

SECRET_SPEC: dict[str, Any] = {
    "backend": {
        "kind": "http",
        "headers": [
            {"name": "X-Api-Key", "valueFrom": {"secretKeyRef": {"name": "backend-creds", "key": "api-key"}}},
            {"name": "X-Plain", "value": "visible"},
            {
                "name": "Authorization",
                "valueFrom": {"secretKeyRef": {"name": "backend-creds", "key": "auth"}},
            },
        ],
    },
    "server": {
        "image": "example/server:1",
        "port": 9000,
        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
    },
    "auth": {"tokensSecretRef": {"name": "client-tokens"}, "allowedOrigins": ["https://a.example"]},
}


def fake_secrets(spec: dict[str, Any]) -> dict[str, dict[str, str]]:
    """A canary value for every key of every referenced Secret, as the cluster would hold them."""
    store: dict[str, dict[str, str]] = {name: {} for name in referenced_secrets(spec)}

    class _AnyKey(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return f"CANARY-{key}-0123456789"

    return {name: _AnyKey(keys) for name, keys in store.items()}


def resolved_env(sidecar: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (secretKeyRef, fieldRef, $(VAR) expansion)."""
    env: dict[str, str] = {}
    for item in sidecar.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
            )
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
            env[item["name"]] = "10.1.2.3"
    return env


def resolve(value: SecretValue, deployment: dict[str, Any], secrets: dict[str, dict[str, str]]) -> str:
    """A SecretValue as the sidecar would read it inside the pod."""
    sidecar = container(deployment, "sidecar")
    if value.env is not None:
        return resolved_env(sidecar, secrets)[value.env]
    assert value.file is not None
    path = PurePosixPath(str(value.file))
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    for mount in sidecar["volumeMounts"]:
        if path.parent == PurePosixPath(mount["mountPath"]) and "secret" in volumes[mount["name"]]:
            secret = volumes[mount["name"]]["secret"]
            (item,) = [i for i in secret["items"] if i["path"] == path.name]
            return secrets[secret["secretName"]][item["key"]]
    raise AssertionError(f"{path} is not in a mounted Secret")


def test_referenced_secrets() -> None:
    assert referenced_secrets(SECRET_SPEC) == ["backend-creds", "client-tokens", "db"]
    assert referenced_secrets(BASE) == []
    stdio = {
        "backend": {
            "kind": "stdio",
            "stdio": {
                "command": "x",
                "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "stdio-secret", "key": "t"}}}],
            },
        }
    }
    assert referenced_secrets(stdio) == ["stdio-secret"]


def test_secrets_reach_the_sidecar_by_reference_only() -> None:
    secrets = fake_secrets(SECRET_SPEC)
    objs = build_children("proxy", NS, SECRET_SPEC, sidecar_image=IMAGE, service_monitor_available=True)
    kids = {o["kind"]: o for o in objs}
    config = SidecarConfig.model_validate(config_of(kids["ConfigMap"]))
    headers = config.backend.headers
    assert headers["X-Plain"].value == "visible"
    assert headers["X-Api-Key"].value is None
    assert headers["X-Api-Key"].env is not None
    assert not headers["X-Api-Key"].env.startswith("MCPLANE_")  # the sidecar would read it as a setting
    assert resolve(headers["X-Api-Key"], kids["Deployment"], secrets) == secrets["backend-creds"]["api-key"]
    assert resolve(headers["Authorization"], kids["Deployment"], secrets) == secrets["backend-creds"]["auth"]
    (tokens,) = config.security.tokens
    assert tokens.file is not None
    assert resolve(tokens, kids["Deployment"], secrets) == secrets["client-tokens"]["tokens"]
    # No Secret value (nor a canary) anywhere in any child; nothing Secret-backed in the ConfigMap but names.
    rendered = yaml.safe_dump_all(objs)
    assert "CANARY" not in rendered
    configmap_text = yaml.safe_dump(kids["ConfigMap"])
    assert "secretKeyRef" not in configmap_text
    assert "backend-creds" not in configmap_text
    assert "client-tokens" not in configmap_text
    assert "password" not in configmap_text


def test_tokens_secret_volume() -> None:
    deployment = children({**BASE, "auth": {"tokensSecretRef": {"name": "t", "key": "list"}}})["Deployment"]
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["auth-tokens"]["secret"] == {"secretName": "t", "items": [{"key": "list", "path": "list"}]}
    mount = {"name": "auth-tokens", "mountPath": "/var/run/secrets/mcplane/auth", "readOnly": True}
    assert mount in container(deployment, "sidecar")["volumeMounts"]
    assert "auth-tokens" not in {v["name"] for v in pod_spec(children(BASE)["Deployment"])["volumes"]}


# --- Service, ServiceMonitor, PDB -------------------------------------------------------------------------


def test_service() -> None:
    service = build_service(
        "p", NS, {**BASE, "service": {"type": "NodePort", "port": 80, "annotations": {"a": "b"}}}
    )
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    assert service["metadata"]["annotations"] == {"a": "b"}
    assert "annotations" not in build_service("p", NS, BASE)["metadata"]
    assert service_url("p", NS, {**BASE, "service": {"port": 80}}) == f"http://p.{NS}.svc:80/mcp"


@pytest.mark.parametrize(
    ("enabled", "available", "created"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_service_monitor_needs_the_spec_and_the_crd(enabled: bool, available: bool, created: bool) -> None:
    spec = {**BASE, "metrics": {"serviceMonitor": {"enabled": enabled}}}
    assert ("ServiceMonitor" in children(spec, monitors=available)) is created


def test_service_monitor() -> None:
    spec = {
        **BASE,
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "p"}}},
    }
    monitor = build_service_monitor("p", NS, spec)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "p"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= build_service("p", NS, spec)["metadata"]["labels"].items()
    )


def test_pdb() -> None:
    assert build_pdb("p", NS, BASE) is None
    default = build_pdb("p", NS, {**BASE, "podDisruptionBudget": {}})
    assert default is not None
    assert default["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in default["spec"]
    minimum = build_pdb("p", NS, {**BASE, "podDisruptionBudget": {"minAvailable": "50%"}})
    assert minimum is not None
    assert minimum["spec"] == {
        "selector": {
            "matchLabels": {"app.kubernetes.io/name": "mcplane-sidecar", "app.kubernetes.io/instance": "p"}
        },
        "minAvailable": "50%",
    }
    kubernetes_validate.validate(minimum, K8S_VERSION, strict=True)


# --- purity -----------------------------------------------------------------------------------------------


def test_builders_are_pure_and_accept_a_model_or_a_mapping() -> None:
    spec = copy.deepcopy(SECRET_SPEC)
    first = build_children("p", NS, spec, sidecar_image=IMAGE, service_monitor_available=True)
    assert spec == SECRET_SPEC  # input untouched
    second = build_children("p", NS, parse_spec(spec), sidecar_image=IMAGE, service_monitor_available=True)
    assert first == second
    first[2]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "9"
    third = build_children("p", NS, spec, sidecar_image=IMAGE, service_monitor_available=True)
    assert third[2]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "50m"


def test_configmap_is_stable_text() -> None:
    assert build_configmap("p", NS, BASE) == build_configmap("p", NS, copy.deepcopy(BASE))
    assert list(build_configmap("p", NS, BASE)["data"]) == ["sidecar.yaml"]
    assert builders.CONFIG_PATH == "/etc/mcplane/sidecar.yaml"
