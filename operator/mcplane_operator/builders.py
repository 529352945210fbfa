"""Children of an MCPProxy as plain dicts: pure functions, no cluster, no ownerReferences.

The handler adopts each child (`kopf.adopt`) and applies it idempotently, in `build_children` order.
Secrets are never copied: a Secret-backed value reaches the sidecar as an environment variable from a
`secretKeyRef` or as a file of a mounted Secret volume; the sidecar config names only the variable or file.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml

from mcplane_operator.model import (
    EnvVar,
    MCPProxySpec,
    ResourceRequirements,
    parse_duration,
    parse_spec,
)

# No registry host: the operator is told its real image (setting / env), this is only the fallback.
DEFAULT_SIDECAR_IMAGE = "mcplane/sidecar:0.1.0"
SIDECAR_CONTAINER = "sidecar"
SERVER_CONTAINER = "server"
CONFIG_KEY = "sidecar.yaml"
CONFIG_DIR = "/etc/mcplane"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
TOKENS_DIR = "/var/run/secrets/mcplane/auth"
MCP_PATH = "/mcp"
PORT_NAME = "http"  # MCP, health, /status and /metrics share the sidecar's one port
METRICS_PATH = "/metrics"
CHECKSUM_ANNOTATION = "mcplane.dev/config-checksum"
# The sidecar drains for DRAIN_TIMEOUT seconds after SIGTERM; the kubelet must wait a little longer.
DRAIN_TIMEOUT = 25
TERMINATION_GRACE_SECONDS = DRAIN_TIMEOUT + 5
# A fixed non-root identity: the restricted Pod Security Standard needs runAsNonRoot, and an image whose USER
# is root (or a name) could not prove it without a numeric id.
RUN_AS_USER = 65532
# Secret-backed headers become these variables. Never `MCPLANE_*`: the sidecar reads those as settings.
HEADER_ENV_PREFIX = "BACKEND_HEADER_"
POD_IP_ENV = "POD_IP"
WEBHOOK_BASE_URL_ENV = "MCPLANE_BACKEND__WEBHOOK__PUBLIC_BASE_URL"
DEFAULT_SIDECAR_RESOURCES: dict[str, Any] = {"requests": {"cpu": "50m", "memory": "64Mi"}}

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
APP_NAME = "mcplane-sidecar"
MANAGER = "mcplane-operator"

SpecLike = MCPProxySpec | Mapping[str, Any]


def _spec(spec: SpecLike) -> MCPProxySpec:
    return spec if isinstance(spec, MCPProxySpec) else parse_spec(spec)


def selector_labels(name: str) -> dict[str, str]:
    """Labels that select the pods of one MCPProxy (Deployment selector, Service, PDB, ServiceMonitor)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name}


def labels(name: str) -> dict[str, str]:
    return {**selector_labels(name), LABEL_MANAGED_BY: MANAGER, LABEL_PART_OF: "mcplane"}


def _metadata(name: str, namespace: str, extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {**(extra_labels or {}), **labels(name)}}


def service_url(name: str, namespace: str, spec: SpecLike) -> str:
    """The in-cluster MCP endpoint, for `status.url`."""
    return f"http://{name}.{namespace}.svc:{_spec(spec).service.port}{MCP_PATH}"


def referenced_secrets(spec: SpecLike) -> list[str]:
    """Names of the Secrets the pod needs (the handler checks they exist before rolling anything)."""
    s = _spec(spec)
    names: set[str] = set()
    envs: list[EnvVar] = list(s.backend.stdio.env) if s.backend.stdio else []
    if s.server is not None:
        envs.extend(s.server.env)
    sources = [h.value_from for h in s.backend.headers] + [e.value_from for e in envs]
    names.update(source.secret_key_ref.name for source in sources if source is not None)
    if s.auth.tokens_secret_ref is not None:
        names.add(s.auth.tokens_secret_ref.name)
    return sorted(names)


def _header_env_name(index: int) -> str:
    return f"{HEADER_ENV_PREFIX}{index}"


def _seconds(text: str) -> float | int:
    value = parse_duration(text)
    return int(value) if value.is_integer() else value


def _backend_config(name: str, namespace: str, s: MCPProxySpec) -> dict[str, Any]:
    b = s.backend
    out: dict[str, Any] = {
        "kind": b.kind,
        "forward_authorization": b.forward_authorization,
        "connect_timeout": _seconds(b.connect_timeout),
    }
    url = s.backend_url()
    if url is not None and b.kind in ("http", "sse"):
        out["url"] = url
    if b.headers:
        out["headers"] = {
            h.name: {"value": h.value} if h.value is not None else {"env": _header_env_name(i)}
            for i, h in enumerate(b.headers)
        }
    if b.stdio is not None:
        stdio: dict[str, Any] = {"command": b.stdio.command, "args": list(b.stdio.args)}
        # Literal variables go to the config; Secret-backed ones are set on the sidecar container and the
        # sidecar passes its own environment (minus MCPLANE_*) to the server process.
        literal_env = {e.name: e.value for e in b.stdio.env if e.value is not None}
        if literal_env:
            stdio["env"] = literal_env
        if b.stdio.working_dir:
            stdio["cwd"] = b.stdio.working_dir
        out["stdio"] = stdio
    if b.aws is not None:
        out["aws"] = {"region": b.aws.region}
        if b.aws.endpoint_url:
            out["aws"]["endpoint_url"] = b.aws.endpoint_url
    if b.sqs is not None:
        sqs: dict[str, Any] = {
            "wait_time_seconds": b.sqs.wait_time_seconds,
            "visibility_timeout": b.sqs.visibility_timeout,
            "max_messages": b.sqs.max_messages,
        }
        for key in ("request_queue_url", "reply_queue_url", "reply_queue_name"):
            if getattr(b.sqs, key):
                sqs[key] = getattr(b.sqs, key)
        out["sqs"] = sqs
    if b.sns is not None:
        out["sns"] = {
            "request_topic_arn": b.sns.request_topic_arn,
            "reply_topic_arn": b.sns.reply_topic_arn,
            "subscribe_reply_queue": b.sns.subscribe_reply_queue,
            "raw_delivery": b.sns.raw_delivery,
        }
    if b.webhook is not None:
        out["webhook"] = {
            "server_url": b.webhook.server_url,
            # Without an explicit address the Service's stands in here, and each pod overrides it with its
            # own IP (MCPLANE_BACKEND__WEBHOOK__PUBLIC_BASE_URL): a callback must reach the replica that holds
            # the session.
            "public_base_url": b.webhook.public_base_url or f"http://{name}.{namespace}.svc:{s.service.port}",
            "callback_path": b.webhook.callback_path,
        }
    if b.client_id:
        out["client_id"] = b.client_id
    if b.message_attributes:
        out["message_attributes"] = dict(b.message_attributes)
    return out


def sidecar_config(name: str, spec: SpecLike, *, namespace: str = "default") -> dict[str, Any]:
    """The sidecar's config document (the `mcplane_sidecar.config.SidecarConfig` schema), free of Secrets."""
    s = _spec(spec)
    security: dict[str, Any] = {
        "allowed_origins": list(s.auth.allowed_origins),
        "cors_origins": list(s.auth.cors_origins),
    }
    if s.auth.tokens_secret_ref is not None:
        security["tokens"] = [{"file": f"{TOKENS_DIR}/{s.auth.tokens_secret_ref.key}"}]
    return {
        "name": name,
        "server": {"host": "0.0.0.0", "port": s.sidecar.port, "transport": "http", "path": MCP_PATH},
        "backend": _backend_config(name, namespace, s),
        "sessions": {
            "max_sessions": s.sessions.max_sessions,
            "idle_timeout": _seconds(s.sessions.idle_timeout),
            "request_timeout": _seconds(s.sessions.request_timeout),
        },
        "security": security,
        "logging": {"level": s.sidecar.log_level, "json": True},
        "drain_timeout": DRAIN_TIMEOUT,
    }


def build_configmap(name: str, namespace: str, spec: SpecLike) -> dict[str, Any]:
    document = sidecar_config(name, spec, namespace=namespace)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(name, namespace),
        "data": {CONFIG_KEY: yaml.safe_dump(document, sort_keys=False, default_flow_style=False)},
    }


def config_checksum(configmap: Mapping[str, Any]) -> str:
    """sha256 of the ConfigMap's data: put on the pod template, so a config change rolls the pods."""
    payload = json.dumps(configmap.get("data", {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _restricted_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(resources: ResourceRequirements | None, default: Mapping[str, Any]) -> dict[str, Any]:
    if resources is None:
        return copy.deepcopy(dict(default))  # builders never share mutable state
    return resources.model_dump(exclude_none=True)


def _env(items: list[EnvVar], *, secrets_only: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if item.value_from is not None:
            ref = item.value_from.secret_key_ref
            out.append({"name": item.name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
        elif not secrets_only:
            out.append({"name": item.name, "value": item.value})
    return out


def _sidecar_container(s: MCPProxySpec, sidecar_image: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = []
    for i, header in enumerate(s.backend.headers):
        if header.value_from is not None:
            ref = header.value_from.secret_key_ref
            env.append(
                {
                    "name": _header_env_name(i),
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                }
            )
    if s.backend.stdio is not None:
        env.extend(_env(s.backend.stdio.env, secrets_only=True))
    if s.backend.webhook is not None and not s.backend.webhook.public_base_url:
        env.append({"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
        env.append({"name": WEBHOOK_BASE_URL_ENV, "value": f"http://$({POD_IP_ENV}):{s.sidecar.port}"})
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if s.auth.tokens_secret_ref is not None:
        mounts.append({"name": "auth-tokens", "mountPath": TOKENS_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": SIDECAR_CONTAINER,
        "image": s.sidecar.image or sidecar_image,
        "command": ["mcplane-sidecar"],
        "args": ["--config", CONFIG_PATH],
        "ports": [{"name": PORT_NAME, "containerPort": s.sidecar.port, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": PORT_NAME},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "resources": _resources(s.sidecar.resources, DEFAULT_SIDECAR_RESOURCES),
        "securityContext": _restricted_security_context(),
        "volumeMounts": mounts,
    }
    if env:
        container["env"] = env
    if s.sidecar.image_pull_policy:
        container["imagePullPolicy"] = s.sidecar.image_pull_policy
    return container


def _server_container(s: MCPProxySpec) -> dict[str, Any] | None:
    server = s.server
    if server is None:
        return None
    container: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": server.image,
        "ports": [{"name": "mcp", "containerPort": server.port, "protocol": "TCP"}],
        "securityContext": _restricted_security_context(),
        "volumeMounts": [{"name": "server-tmp", "mountPath": "/tmp"}],
    }
    if server.image_pull_policy:
        container["imagePullPolicy"] = server.image_pull_policy
    if server.command:
        container["command"] = list(server.command)
    if server.args:
        container["args"] = list(server.args)
    if server.env:
        container["env"] = _env(server.env)
    if server.resources is not None:
        container["resources"] = server.resources.model_dump(exclude_none=True)
    return container


def build_deployment(
    name: str, namespace: str, spec: SpecLike, *, config_checksum: str, sidecar_image: str
) -> dict[str, Any]:
    s = _spec(spec)
    containers = [_sidecar_container(s, sidecar_image)]
    server = _server_container(s)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": name}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if server is not None:
        containers.append(server)
        volumes.append({"name": "server-tmp", "emptyDir": {}})
    if s.auth.tokens_secret_ref is not None:
        ref = s.auth.tokens_secret_ref
        volumes.append(
            {
                "name": "auth-tokens",
                "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": ref.key}]},
            }
        )
    pod_spec: dict[str, Any] = {
        # The sidecar never calls the Kubernetes API; IRSA injects its own projected token volume.
        "automountServiceAccountToken": False,
        # Service links would add `<SERVICE>_PORT`-style variables, and one named `mcplane-…` would look like
        # a sidecar config override (MCPLANE_*); a stdio server would inherit the rest.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": volumes,
    }
    if s.service_account_name:
        pod_spec["serviceAccountName"] = s.service_account_name
    if s.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": ref.name} for ref in s.image_pull_secrets]
    if s.node_selector:
        pod_spec["nodeSelector"] = dict(s.node_selector)
    if s.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in s.tolerations]
    if s.affinity:
        pod_spec["affinity"] = copy.deepcopy(s.affinity)
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        # Surge first: a replica leaves only once its successor is ready, and then drains.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": labels(name),
                "annotations": {
                    CHECKSUM_ANNOTATION: config_checksum,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(s.sidecar.port),
                    "prometheus.io/path": METRICS_PATH,
                },
            },
            "spec": pod_spec,
        },
    }
    if s.replicas is not None:
        # Omitted replicas: the field stays absent, so an HPA (or a person) owns the count.
        deployment_spec = {"replicas": s.replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace),
        "spec": deployment_spec,
    }


def build_service(name: str, namespace: str, spec: SpecLike) -> dict[str, Any]:
    s = _spec(spec)
    metadata = _metadata(name, namespace)
    if s.service.annotations:
        metadata["annotations"] = dict(s.service.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": s.service.type,
            "selector": selector_labels(name),
            # Sessions live in one replica's memory: keep a client on the replica that holds its session.
            "sessionAffinity": s.service.session_affinity,
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": s.service.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def build_service_monitor(name: str, namespace: str, spec: SpecLike) -> dict[str, Any]:
    """A monitoring.coreos.com/v1 ServiceMonitor scraping /metrics on the Service's `http` port."""
    s = _spec(spec)
    monitor = s.metrics.service_monitor
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(name, namespace, monitor.labels),
        "spec": {
            "selector": {"matchLabels": selector_labels(name)},
            # Every sidecar's series under one job, as the chart's ServiceMonitor and alerts expect.
            "jobLabel": LABEL_NAME,
            "endpoints": [{"port": PORT_NAME, "path": METRICS_PATH, "interval": monitor.interval}],
        },
    }


def build_pdb(name: str, namespace: str, spec: SpecLike) -> dict[str, Any] | None:
    """A policy/v1 PodDisruptionBudget when the spec asks for one (default maxUnavailable 1), else None."""
    s = _spec(spec)
    pdb = s.pod_disruption_budget
    if pdb is None:
        return None
    budget: dict[str, Any]
    if pdb.min_available is not None:
        budget = {"minAvailable": pdb.min_available}
    else:
        budget = {"maxUnavailable": pdb.max_unavailable if pdb.max_unavailable is not None else 1}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(name, namespace),
        "spec": {"selector": {"matchLabels": selector_labels(name)}, **budget},
    }


def build_children(
    name: str, namespace: str, spec: SpecLike, *, sidecar_image: str, service_monitor_available: bool
) -> list[dict[str, Any]]:
    """Every child in apply order: ConfigMap, Service, Deployment, then the optional PDB, ServiceMonitor."""
    s = _spec(spec)
    configmap = build_configmap(name, namespace, s)
    children = [
        configmap,
        build_service(name, namespace, s),
        build_deployment(
            name, namespace, s, config_checksum=config_checksum(configmap), sidecar_image=sidecar_image
        ),
    ]
    pdb = build_pdb(name, namespace, s)
    if pdb is not None:
        children.append(pdb)
    if s.metrics.service_monitor.enabled and service_monitor_available:
        children.append(build_service_monitor(name, namespace, s))
    return children
