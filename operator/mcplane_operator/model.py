"""The `MCPProxy` spec as typed models, parsed once per reconcile.

The CRD (manifests/crds/mcpproxies.mcplane.dev.yaml) is the contract a cluster enforces; these models repeat
its defaults and cross-field rules so that an API server that does not enforce the schema (the test emulator)
still gets the same answer, and so the builders work on typed values, never on raw dicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GROUP = "mcplane.dev"
VERSION = "v1alpha1"
KIND = "MCPProxy"
PLURAL = "mcpproxies"
API_VERSION = f"{GROUP}/{VERSION}"

# The sidecar's one port: MCP, health, readiness, /status and /metrics.
DEFAULT_SIDECAR_PORT = 8080
# Go-style durations, as `kubectl` users write them: "90s", "15m", "1h30m", "500ms".
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

BackendKind = Literal["http", "sse", "stdio", "sqs", "sns-sqs", "webhook"]


class SpecError(ValueError):
    """The MCPProxy spec cannot be used; the message names the field and the reason."""


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration ("1h30m" -> 5400.0)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 30s, 15m or 1h30m")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class SecretKeySelector(_Model):
    name: str = Field(min_length=1, description="Name of a Secret in the MCPProxy's namespace.")
    key: str = Field(min_length=1, description="Key within the Secret.")


class TokensSecretRef(_Model):
    name: str = Field(min_length=1, description="Name of a Secret in the MCPProxy's namespace.")
    key: str = Field("tokens", min_length=1, description="Key holding the tokens, one per line.")


class EnvVarSource(_Model):
    secret_key_ref: SecretKeySelector


class EnvVar(_Model):
    """An environment variable: a literal value or a key of a Secret."""

    name: str = Field(min_length=1)
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"env {self.name}: give exactly one of value or valueFrom")
        return self


class Header(_Model):
    """A header sent on every backend request: a literal, or the key of a Secret (never copied)."""

    name: str = Field(min_length=1)
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Header:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"header {self.name}: give exactly one of value or valueFrom")
        return self


class StdioSpec(_Model):
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    working_dir: str | None = None


class AwsSpec(_Model):
    region: str
    endpoint_url: str | None = None


class SqsSpec(_Model):
    request_queue_url: str | None = None
    reply_queue_url: str | None = None
    reply_queue_name: str | None = None
    wait_time_seconds: int = Field(20, ge=0, le=20)
    visibility_timeout: int = Field(30, ge=0, le=43200)
    max_messages: int = Field(10, ge=1, le=10)


class SnsSpec(_Model):
    request_topic_arn: str
    reply_topic_arn: str
    subscribe_reply_queue: bool = True
    raw_delivery: bool = False


class WebhookSpec(_Model):
    server_url: str
    public_base_url: str | None = None
    callback_path: str = "/webhooks"


class BackendSpec(_Model):
    kind: BackendKind
    url: str | None = None
    headers: list[Header] = Field(default_factory=list)
    forward_authorization: bool = False
    connect_timeout: str = "10s"
    stdio: StdioSpec | None = None
    aws: AwsSpec | None = None
    sqs: SqsSpec | None = None
    sns: SnsSpec | None = None
    webhook: WebhookSpec | None = None
    client_id: str | None = None
    message_attributes: dict[str, str] = Field(default_factory=dict)


class ResourceRequirements(_Model):
    requests: dict[str, str | int] | None = None
    limits: dict[str, str | int] | None = None


class ServerContainerSpec(_Model):
    """An MCP server container in the same pod; the sidecar reaches it on 127.0.0.1."""

    image: str = Field(min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    port: int = Field(ge=1, le=65535)
    path: str = "/mcp"
    resources: ResourceRequirements | None = None


class SessionsSpec(_Model):
    max_sessions: int = Field(1000, ge=1)
    idle_timeout: str = "15m"
    request_timeout: str = "5m"


class AuthSpec(_Model):
    tokens_secret_ref: TokensSecretRef | None = None
    allowed_origins: list[str] = Field(default_factory=list)
    cors_origins: list[str] = Field(default_factory=list)


class SidecarSpec(_Model):
    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    port: int = Field(DEFAULT_SIDECAR_PORT, ge=1024, le=65535)
    resources: ResourceRequirements | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class ServiceSpec(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(DEFAULT_SIDECAR_PORT, ge=1, le=65535)
    session_affinity: Literal["None", "ClientIP"] = "ClientIP"
    annotations: dict[str, str] = Field(default_factory=dict)


class ServiceMonitorSpec(_Model):
    enabled: bool = False
    interval: str = "30s"
    labels: dict[str, str] = Field(default_factory=dict)


class MetricsSpec(_Model):
    service_monitor: ServiceMonitorSpec = Field(default_factory=ServiceMonitorSpec)


class PodDisruptionBudgetSpec(_Model):
    min_available: int | str | None = None
    max_unavailable: int | str | None = None


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class LocalObjectReference(_Model):
    name: str = Field(min_length=1)


class MCPProxySpec(_Model):
    """What one MCPProxy asks for. Field names are the CRD's (camelCase) or their snake_case twins."""

    backend: BackendSpec
    server: ServerContainerSpec | None = None
    sessions: SessionsSpec = Field(default_factory=SessionsSpec)
    auth: AuthSpec = Field(default_factory=AuthSpec)
    replicas: int | None = Field(None, ge=0)
    sidecar: SidecarSpec = Field(default_factory=SidecarSpec)
    service_account_name: str | None = None
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    pod_disruption_budget: PodDisruptionBudgetSpec | None = None

    @model_validator(mode="after")
    def _cross_field(self) -> MCPProxySpec:
        # The same rules as the CRD's x-kubernetes-validations, with the same messages.
        for problem in cross_field_problems(self):
            raise ValueError(problem)
        return self

    def backend_url(self) -> str | None:
        """The URL the sidecar proxies for http/sse: the given one, or the in-pod server on loopback."""
        if self.backend.url:
            return self.backend.url
        if self.server is not None and self.backend.kind in ("http", "sse"):
            return f"http://127.0.0.1:{self.server.port}{self.server.path}"
        return None


def cross_field_problems(spec: MCPProxySpec) -> list[str]:
    """Every cross-field rule the CRD states in CEL, checked in Python (messages kept identical)."""
    b = spec.backend
    problems: list[str] = []
    if b.kind in ("http", "sse") and not b.url and spec.server is None:
        problems.append("backend kinds http and sse need backend.url or a server container")
    if b.url and spec.server is not None:
        problems.append("give backend.url or a server container, not both")
    if b.kind == "stdio" and b.stdio is None:
        problems.append("backend kind stdio needs backend.stdio.command")
    if b.kind == "stdio" and spec.server is not None:
        problems.append(
            "a stdio backend runs inside the sidecar container (its command must exist in the sidecar "
            "image); spec.server is not allowed with it"
        )
    if b.kind == "sqs" and (b.sqs is None or not b.sqs.request_queue_url):
        problems.append("backend kind sqs needs backend.sqs.requestQueueUrl")
    if b.kind == "sns-sqs" and b.sns is None:
        problems.append("backend kind sns-sqs needs backend.sns (requestTopicArn, replyTopicArn)")
    if b.kind in ("sqs", "sns-sqs") and b.aws is None:
        problems.append("backend kinds sqs and sns-sqs need backend.aws.region")
    if b.kind == "webhook" and b.webhook is None:
        problems.append("backend kind webhook needs backend.webhook.serverUrl")
    for field, present, kinds in (
        ("backend.url", b.url is not None, ("http", "sse")),
        ("backend.stdio", b.stdio is not None, ("stdio",)),
        ("backend.aws", b.aws is not None, ("sqs", "sns-sqs")),
        ("backend.sqs", b.sqs is not None, ("sqs", "sns-sqs")),
        ("backend.sns", b.sns is not None, ("sns-sqs",)),
        ("backend.webhook", b.webhook is not None, ("webhook",)),
    ):
        if present and b.kind not in kinds:
            plural = "kinds" if len(kinds) > 1 else "kind"
            problems.append(f"{field} is only for {plural} {' and '.join(kinds)}")
    if b.stdio is not None and any(e.name.startswith("MCPLANE_") for e in b.stdio.env):
        problems.append("MCPLANE_* variables are sidecar settings; they are not passed to the server")
    if (
        b.sqs is not None
        and (b.sqs.reply_queue_url or b.sqs.reply_queue_name)
        and (spec.replicas is None or spec.replicas > 1)
    ):
        problems.append(
            "a fixed reply queue (replyQueueUrl or replyQueueName) needs replicas set to 0 or 1: "
            "each replica must read its own replies"
        )
    if spec.server is not None and spec.server.port == spec.sidecar.port:
        problems.append("server.port must differ from sidecar.port")
    pdb = spec.pod_disruption_budget
    if pdb is not None and pdb.min_available is not None and pdb.max_unavailable is not None:
        problems.append("podDisruptionBudget takes minAvailable or maxUnavailable, not both")
    for field, text in (
        ("backend.connectTimeout", b.connect_timeout),
        ("sessions.idleTimeout", spec.sessions.idle_timeout),
        ("sessions.requestTimeout", spec.sessions.request_timeout),
        ("metrics.serviceMonitor.interval", spec.metrics.service_monitor.interval),
    ):
        try:
            if parse_duration(text) <= 0:
                problems.append(f"{field} must be longer than 0s")
        except ValueError as exc:
            problems.append(f"{field}: {exc}")
    return problems


def check_name(name: str) -> None:
    """The name names the Service and is a label value: it must be a DNS label (the CRD says so too)."""
    if len(name) > 63 or not re.fullmatch(NAME_PATTERN, name):
        raise SpecError(
            "metadata.name must be a DNS label (at most 63 lowercase letters, digits and '-', starting with "
            "a letter): it names the Service and a label value"
        )


def parse_spec(spec: Mapping[str, Any]) -> MCPProxySpec:
    """Validate a resource's `spec`; every problem is named by its camelCase path in one `SpecError`."""
    try:
        return MCPProxySpec.model_validate(dict(spec))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = ".".join(to_camel(p) if isinstance(p, str) else str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"spec.{path}: {message}" if path else f"spec: {message}")
        raise SpecError("invalid MCPProxy spec: " + "; ".join(problems)) from None
