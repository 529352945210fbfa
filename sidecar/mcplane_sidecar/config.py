"""Sidecar configuration: one typed model, loaded from YAML, CLI flags and `MCPLANE_*` environment overrides.

The operator renders exactly this schema into a ConfigMap. Bad settings fail here, at start-up, with a
clear message; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENV_PREFIX = "MCPLANE_"
# `MCPLANE_SESSIONS__MAX_SESSIONS=50` sets sessions.max_sessions: the double underscore walks one level down.
ENV_NESTING = "__"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretValue(_Strict):
    """A value given literally, or read from an environment variable or a file (a mounted Secret)."""

    value: str | None = None
    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretValue:
        given = [x for x in (self.value, self.env, self.file) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of value, env or file")
        return self

    def resolve(self) -> str:
        if self.value is not None:
            return self.value
        if self.env is not None:
            if self.env not in os.environ:
                raise ValueError(f"environment variable {self.env} is not set")
            return os.environ[self.env]
        assert self.file is not None
        return self.file.read_text(encoding="utf-8").strip()


class ServerConfig(_Strict):
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 inside a pod).")
    port: int = Field(8080, ge=0, le=65535, description="Port for MCP traffic, health and metrics.")
    transport: Literal["http", "sse", "stdio"] = Field(
        "http",
        description="Front transport. `http` serves Streamable HTTP (both eras) at `path` and legacy SSE "
        "at `sse_path`; `sse` is the same server (kept for the original CLI); `stdio` reads stdin.",
    )
    path: str = Field("/mcp", pattern=r"^/", description="Streamable HTTP endpoint.")
    sse_path: str = Field("/sse", pattern=r"^/", description="Legacy HTTP+SSE stream endpoint.")
    message_path: str = Field("/messages/", pattern=r"^/", description="Legacy HTTP+SSE POST endpoint.")


class StdioBackendConfig(_Strict):
    command: str = Field(description="Executable of the MCP server to run.")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the server.")
    cwd: Path | None = None
    restart_initial_delay: float = Field(0.5, gt=0, description="First restart delay after a crash (s).")
    restart_max_delay: float = Field(30.0, gt=0, description="Cap of the exponential restart backoff (s).")
    stderr: Literal["inherit", "log", "discard"] = Field("log", description="Where the server's stderr goes.")
    warm_spares: int = Field(
        1,
        ge=0,
        le=16,
        description="Server processes kept started ahead of need, so a new handshake-era session does not "
        "wait for one to start (0: start each on demand).",
    )
    max_concurrent_starts: int | None = Field(
        None,
        ge=1,
        description="Server processes starting at once (spawned and not yet answering or idle); more wait "
        "their turn, so a burst of new sessions is served in order rather than timing out together. "
        "Default: the CPUs the sidecar may use (its affinity and cgroup quota).",
    )
    stateless_pool_size: int = Field(
        4,
        ge=1,
        description="Processes serving 2026-07-28 requests, one request each at a time (stdio has no "
        "per-request streams). Sessions of the handshake era get a process each.",
    )


class AwsConfig(_Strict):
    """Where AWS is. Credentials come from the standard provider chain (env, web identity / IRSA,
    instance profile), never from this file."""

    region: str = Field("us-east-1", description="AWS region of the queues and topics.")
    endpoint_url: str | None = Field(
        None, description="Override endpoint (LocalStack, moto) for SQS and SNS."
    )


class QueueTuning(_Strict):
    wait_time_seconds: int = Field(20, ge=0, le=20, description="Long-poll wait of each receive (s).")
    visibility_timeout: int = Field(30, ge=0, le=43200, description="Seconds a received reply stays hidden.")
    max_messages: int = Field(10, ge=1, le=10, description="Replies taken per receive.")


class SqsBackendConfig(QueueTuning):
    request_queue_url: str | None = Field(None, description="The server's request queue (kind sqs).")
    reply_queue_url: str | None = Field(
        None, description="This sidecar's reply queue. Unset: created at start, deleted at shutdown."
    )
    reply_queue_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,80}$", description="Name of the created reply queue."
    )


class SnsBackendConfig(_Strict):
    request_topic_arn: str = Field(description="The topic the server's request queue is subscribed to.")
    reply_topic_arn: str = Field(
        description="The topic the server publishes replies to; the reply queue is subscribed to it."
    )
    subscribe_reply_queue: bool = Field(
        True, description="Subscribe the reply queue to the reply topic at start (idempotent)."
    )
    raw_delivery: bool = Field(False, description="Subscribe with RawMessageDelivery (else SNS envelopes).")


class WebhookBackendConfig(_Strict):
    server_url: str | None = Field(
        None,
        description="The server's webhook request endpoint, e.g. http://svc:8000/mcp/request (kind webhook; "
        "kind streamable-http-webhook talks to backend.url).",
    )
    public_base_url: str = Field(
        description="Base URL at which the server reaches this sidecar (in Kubernetes, the Service address)."
    )
    callback_path: str = Field(
        "/webhooks", pattern=r"^/[A-Za-z0-9/_-]*$", description="Path of the callbacks."
    )


class BackendConfig(_Strict):
    kind: Literal["auto", "http", "sse", "stdio", "sqs", "sns-sqs", "webhook", "streamable-http-webhook"] = (
        Field(
            "auto",
            description="`auto` tries Streamable HTTP first and falls back to legacy SSE. "
            "`streamable-http-webhook` is asyncmcp's hybrid: Streamable HTTP whose answers to some tools "
            "arrive on a webhook callback.",
        )
    )
    url: str | None = Field(None, description="URL of a remote MCP server (http, sse, auto).")
    stdio: StdioBackendConfig | None = None
    aws: AwsConfig = Field(default_factory=AwsConfig)
    sqs: SqsBackendConfig | None = None
    sns: SnsBackendConfig | None = None
    webhook: WebhookBackendConfig | None = None
    client_id: str | None = Field(
        None, description="ClientId / X-Client-ID sent to async servers (default: the sidecar's name)."
    )
    message_attributes: dict[str, str] = Field(
        default_factory=dict, description="Extra SQS/SNS message attributes on every message."
    )
    headers: dict[str, SecretValue] = Field(
        default_factory=dict, description="Headers added to every backend HTTP request."
    )
    forward_authorization: bool = Field(
        False,
        description="Forward the client's Authorization header upstream. Off by default: token passthrough "
        "is forbidden unless the backend is the same resource.",
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to connect to the backend.")

    @model_validator(mode="after")
    def _needs_target(self) -> BackendConfig:
        if self.kind == "stdio" and self.stdio is None:
            raise ValueError("backend.kind stdio needs backend.stdio.command")
        if self.kind in ("auto", "http", "sse", "streamable-http-webhook") and not self.url:
            raise ValueError(f"backend.kind {self.kind} needs backend.url")
        if self.kind == "sqs" and (self.sqs is None or not self.sqs.request_queue_url):
            raise ValueError("backend.kind sqs needs backend.sqs.request_queue_url")
        if self.kind == "sns-sqs" and self.sns is None:
            raise ValueError("backend.kind sns-sqs needs backend.sns (request_topic_arn, reply_topic_arn)")
        if self.kind == "webhook" and (self.webhook is None or not self.webhook.server_url):
            raise ValueError("backend.kind webhook needs backend.webhook (server_url, public_base_url)")
        if self.kind == "streamable-http-webhook" and self.webhook is None:
            raise ValueError(
                "backend.kind streamable-http-webhook needs backend.url and backend.webhook.public_base_url"
            )
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError("backend.url must be an http:// or https:// URL")
        return self


class SessionConfig(_Strict):
    max_sessions: int = Field(1000, ge=1, description="Open sessions allowed; beyond it 503 + Retry-After.")
    idle_timeout: float = Field(
        900.0, gt=0, description="Seconds without traffic before a session is closed."
    )
    request_timeout: float = Field(300.0, gt=0, description="Seconds a request may wait for its response.")
    max_inflight: int = Field(1024, ge=1, description="Requests in flight across all sessions.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest POST body accepted (413).")
    stateless: bool = Field(
        False,
        description="Keep no per-client sessions: handshake-era clients get no Mcp-Session-Id and share "
        "one backend session per principal (as asyncmcp's proxy `stateless`). 2026-07-28 clients are "
        "stateless either way.",
    )
    replay_buffer: int = Field(
        256, ge=0, description="Events kept per SSE stream for Last-Event-ID resumption."
    )


class SecurityConfig(_Strict):
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins accepted besides loopback ones; a present Origin not listed gets 403. "
        "`*` accepts any origin.",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins answered with CORS headers.")
    tokens: list[SecretValue] = Field(
        default_factory=list,
        description="Bearer tokens accepted from clients; each value may hold several, one per line.",
    )


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_format: bool = Field(True, alias="json", description="One JSON object per line.")


class SidecarConfig(_Strict):
    name: str = Field("mcplane", description="Name shown in logs and metrics.")
    server: ServerConfig = Field(default_factory=ServerConfig)
    backend: BackendConfig
    sessions: SessionConfig = Field(default_factory=SessionConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    drain_timeout: float = Field(25.0, ge=0, description="Seconds in-flight requests get after SIGTERM.")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


def _overlay(base: dict[str, Any], path: list[str], value: Any) -> None:
    node = base
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{ENV_PREFIX}{ENV_NESTING.join(path).upper()}: {key} is not a section")
        node = child
    node[path[-1]] = value


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`MCPLANE_A__B=v` becomes {"a": {"b": v}}; values are parsed as YAML scalars (numbers, booleans)."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == f"{ENV_PREFIX}CONFIG":
            continue
        path = [part.lower() for part in key[len(ENV_PREFIX) :].split(ENV_NESTING)]
        _overlay(tree, path, yaml.safe_load(raw) if raw else raw)
    return tree


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(*layers: Mapping[str, Any]) -> SidecarConfig:
    """Merge layers (later wins) and validate; every problem is reported at once, by setting name."""
    data: dict[str, Any] = {}
    for layer in layers:
        data = merge(data, layer)
    try:
        return SidecarConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded
