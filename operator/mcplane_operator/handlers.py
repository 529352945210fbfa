"""kopf handlers: thin entry points into one `reconcile()`.

`reconcile()` parses the spec, checks the Secrets the pods need, builds the children (pure builders), adopts
them (ownerReferences) and applies them idempotently, then judges the status from the Deployment and the
sidecars' own `/status`. It is reached from on.resume, on.create, on.update(field="spec") (status writes do
not retrigger it), a timer (drift backstop: a deleted or edited child comes back, activeSessions is refreshed)
and events of the Deployments it owns (readiness shows up at once, a deleted Deployment comes back at once).
Deletion is the garbage collector's job: every child carries an ownerReference to its MCPProxy.

Run with `mcplane-operator run` (see `mcplane_operator.operator`) or `kopf run -m mcplane_operator.handlers`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import random
from collections.abc import Mapping
from typing import Any, cast
from wsgiref.simple_server import WSGIServer

import httpx
import kopf
from kubernetes.client.exceptions import ApiException

from mcplane_operator import apply, metrics, status
from mcplane_operator.builders import (
    DEFAULT_SIDECAR_IMAGE,
    LABEL_MANAGED_BY,
    MANAGER,
    build_children,
    referenced_secrets,
    selector_labels,
    service_url,
)
from mcplane_operator.model import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    MCPProxySpec,
    SpecError,
    parse_spec,
)

# Drift backstop and activeSessions refresh. Deployment events cover the common case at once.
RESYNC_INTERVAL_S = 30.0
# Only one replica of the operator acts. kopf pauses every operator that sees a live peer of higher priority
# (and all of them on a tie), so each replica draws its own priority: the highest acts, the others stand by
# and take over when it leaves (at once on a clean exit, after the peering lifetime if it dies).
PEERING_NAME = "mcplane-operator"
PEERING_PRIORITIES = (1, 2**30)
FINALIZER = "mcplane.dev/finalizer"  # kopf's own, held while a timer runs for the object
ANNOTATION_PREFIX = "mcplane.dev"  # kopf's progress and last-handled state: annotations, never status
# Probing the pods' /status: a few in parallel, each bounded by the configured timeout.
STATUS_PROBE_WORKERS = 8

ENV_SIDECAR_IMAGE = "MCPLANE_SIDECAR_IMAGE"
ENV_RETRY_DELAY = "MCPLANE_RETRY_DELAY"
ENV_METRICS_ADDRESS = "MCPLANE_METRICS_ADDRESS"
ENV_STATUS_URL = "MCPLANE_STATUS_URL"
ENV_STATUS_TIMEOUT = "MCPLANE_STATUS_TIMEOUT"


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """What an operator deployment decides; invalid values fail here, at startup."""

    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    retry_delay: float = 15.0  # seconds before retrying a spec that could not be realised
    metrics_address: str | None = "0.0.0.0:9090"  # HOST:PORT of /metrics; None or "" disables it
    # Where a sidecar pod answers /status; {pod_ip}, {port}, {name} (the pod's), {namespace} are filled in.
    status_url: str = "http://{pod_ip}:{port}/status"
    status_timeout: float = 2.0

    def __post_init__(self) -> None:
        if not self.sidecar_image:
            raise ValueError("the sidecar image must not be empty")
        if self.retry_delay <= 0 or self.status_timeout <= 0:
            raise ValueError("retry_delay and status_timeout must be positive")
        if self.metrics_address:
            metrics.parse_address(self.metrics_address)
        try:
            self.status_url.format(pod_ip="10.0.0.1", port=8080, name="pod", namespace="default")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"status URL {self.status_url!r}: {exc!r} is not a known field") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        defaults = cls()
        try:
            return cls(
                sidecar_image=env.get(ENV_SIDECAR_IMAGE) or defaults.sidecar_image,
                retry_delay=float(env.get(ENV_RETRY_DELAY) or defaults.retry_delay),
                metrics_address=env.get(ENV_METRICS_ADDRESS, defaults.metrics_address) or None,
                status_url=env.get(ENV_STATUS_URL) or defaults.status_url,
                status_timeout=float(env.get(ENV_STATUS_TIMEOUT) or defaults.status_timeout),
            )
        except ValueError as exc:
            raise ValueError(f"operator configuration from the environment: {exc}") from None


@dataclasses.dataclass
class Runtime:
    """What the handlers share, made once at startup and kept in kopf's memo."""

    config: OperatorConfig
    kube: apply.KubeClient
    metrics: metrics.OperatorMetrics
    metrics_server: WSGIServer | None = None
    # Deployment uid -> the resourceVersion the operator itself last wrote: the watch event that only
    # echoes that write needs no reconcile of its owner (it would find nothing to do).
    own_writes: dict[str, str] = dataclasses.field(default_factory=dict)

    def wrote(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("uid") and meta.get("resourceVersion"):
            self.own_writes[str(meta["uid"])] = str(meta["resourceVersion"])

    def is_echo(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return bool(meta.get("uid")) and self.own_writes.get(str(meta["uid"])) == meta.get("resourceVersion")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The status to write, and what stops the spec from being realised (None: nothing)."""

    status: dict[str, Any]
    problem: str | None = None


class Unrealisable(Exception):
    """The spec cannot become children now; `reason` is the condition's, the message says what to fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# -- the one reconcile ---------------------------------------------------------------------------------------


def reconcile(runtime: Runtime, body: kopf.Body, logger: kopf.Logger) -> Outcome:
    """Bring the children of one MCPProxy in line with its spec; return the status that results."""
    generation = int(body.metadata.get("generation") or 1)
    with runtime.metrics.reconciling():
        try:
            judged, facts = _realise(runtime, body, logger)
        except Unrealisable as exc:
            logger.warning("Cannot realise the spec (%s): %s", exc.reason, exc.message)
            result = metrics.RESULT_DEGRADED
            if exc.reason == status.APPLY_FAILED:
                result = metrics.RESULT_ERROR
                runtime.metrics.reconcile_errors.inc()
            runtime.metrics.reconciles.labels(result).inc()
            judged = status.failure_conditions(exc.reason, exc.message)
            return Outcome(status.build_status(body.status, judged, generation=generation), exc.message)
    ready = judged[0].status
    runtime.metrics.reconciles.labels(metrics.RESULT_READY if ready else metrics.RESULT_PROGRESSING).inc()
    return Outcome(status.build_status(body.status, judged, generation=generation, **facts))


def _realise(
    runtime: Runtime, body: kopf.Body, logger: kopf.Logger
) -> tuple[list[status.Condition], dict[str, Any]]:
    name, namespace, uid = body.metadata.name, body.metadata.namespace, body.metadata.uid
    # A namespaced object that exists has all three.
    assert name
    assert namespace
    assert uid
    kube = runtime.kube
    try:
        spec = parse_spec(body.spec)
    except SpecError as exc:
        raise Unrealisable(status.INVALID_SPEC, str(exc)) from None
    try:
        missing = [
            secret
            for secret in referenced_secrets(spec)
            if kube.get(apply.object_path("v1", "Secret", namespace, secret)) is None
        ]
        if missing:
            names = ", ".join(missing)
            raise Unrealisable(
                status.SECRET_MISSING,
                f"Secret {names} not found in namespace {namespace}: the pods need it; create it and"
                " the proxy rolls out",
            )
        monitors = apply.service_monitor_available(kube)
        children = build_children(
            name,
            namespace,
            spec,
            sidecar_image=runtime.config.sidecar_image,
            service_monitor_available=monitors,
        )
        kopf.adopt(children, owner=body)
        deployment: dict[str, Any] | None = None
        for child in children:
            applied = apply.apply(kube, child)
            if applied.action != "unchanged":
                logger.info("%s %s/%s %s", applied.kind, namespace, child["metadata"]["name"], applied.action)
            if applied.kind == "Deployment":
                deployment = applied.obj
                if applied.action != "unchanged":
                    runtime.wrote(applied.obj)
        for kind in apply.prune(
            kube, name=name, namespace=namespace, owner_uid=uid, keep=children, service_monitors=monitors
        ):
            logger.info("%s %s/%s deleted: the spec no longer asks for it", kind, namespace, name)
    except ApiException as exc:
        raise Unrealisable(
            status.APPLY_FAILED, f"the API server refused a child: {_api_message(exc)}"
        ) from None
    rollout = status.Rollout.of(deployment)
    facts = {
        "ready_replicas": rollout.ready,
        "url": service_url(name, namespace, spec),
        "active_sessions": count_sessions(runtime, namespace, name, spec, logger),
    }
    return status.rollout_conditions(rollout), facts


def _api_message(exc: ApiException) -> str:
    """The `message` of the API server's Status answer, else the HTTP status and reason."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"{exc.status} {exc.reason}")


def count_sessions(
    runtime: Runtime, namespace: str, name: str, spec: MCPProxySpec, logger: kopf.Logger
) -> int:
    """Sum of `activeSessions` the proxy's pods report on /status; pods that do not answer count as zero."""
    selector = ",".join(f"{key}={value}" for key, value in selector_labels(name).items())
    try:
        pods = runtime.kube.list(apply.object_path("v1", "Pod", namespace), label_selector=selector)
    except ApiException as exc:
        logger.debug("Cannot list the pods for activeSessions: %s", _api_message(exc))
        return 0
    urls = [
        runtime.config.status_url.format(
            pod_ip=pod["status"]["podIP"],
            port=spec.sidecar.port,
            name=pod["metadata"]["name"],
            namespace=namespace,
        )
        for pod in pods
        if (pod.get("status") or {}).get("podIP") and not pod["metadata"].get("deletionTimestamp")
    ]
    if not urls:
        return 0
    with (
        httpx.Client(timeout=runtime.config.status_timeout) as http,
        concurrent.futures.ThreadPoolExecutor(min(STATUS_PROBE_WORKERS, len(urls))) as pool,
    ):
        return sum(pool.map(lambda url: _sessions_at(http, url, logger), urls))


def _sessions_at(http: httpx.Client, url: str, logger: kopf.Logger) -> int:
    try:
        response = http.get(url)
        response.raise_for_status()
        sessions = response.json().get("activeSessions")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        logger.debug("No session count from %s: %s", url, exc)
        return 0
    return sessions if isinstance(sessions, int) and sessions >= 0 else 0


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime):
        raise kopf.PermanentError("the operator did not start: no runtime in memo")
    return runtime


def _reconcile_into(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger) -> Outcome:
    outcome = reconcile(_runtime(memo), body, logger)
    patch.status.update(outcome.status)
    return outcome


def _reconcile_and_retry(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger) -> None:
    outcome = _reconcile_into(body, patch, memo, logger)
    if outcome.problem is not None:
        raise kopf.TemporaryError(outcome.problem, delay=_runtime(memo).config.retry_delay)


# -- settings ------------------------------------------------------------------------------------------------


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Every kopf setting, and the runtime the handlers share (config from `run()`, else the environment)."""
    config = memo.get("config")
    if not isinstance(config, OperatorConfig):
        config = OperatorConfig.from_env()
    settings.peering.name = PEERING_NAME
    # Peering is required (a missing peering CRD pauses the operator rather than letting replicas race),
    # except in standalone mode (`--standalone`, or run(standalone=True)), which kopf sets before this runs.
    settings.peering.mandatory = not settings.peering.standalone
    if not settings.peering.priority:  # not chosen by `--priority`
        settings.peering.priority = random.SystemRandom().randint(*PEERING_PRIORITIES)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Kubernetes Events for problems only (Degraded and worse): the handlers' own warnings become Events.
    settings.posting.loggers = True
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = MANAGER
    settings.watching.server_timeout = 300  # re-establish long watches, in case a proxy kills them silently
    settings.watching.client_timeout = 330
    runtime = Runtime(
        config=config, kube=apply.KubeClient.from_environment(), metrics=metrics.OperatorMetrics()
    )
    if config.metrics_address:
        runtime.metrics_server = metrics.serve(runtime.metrics, config.metrics_address)
        logger.info("Serving operator metrics on %s", config.metrics_address)
    memo["runtime"] = runtime


@kopf.on.cleanup()
def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get("runtime")
    if isinstance(runtime, Runtime):
        if runtime.metrics_server is not None:
            runtime.metrics_server.shutdown()
            runtime.metrics_server.server_close()
        runtime.kube.close()


# -- MCPProxy ------------------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
def resume_proxy(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    _reconcile_and_retry(body, patch, memo, logger)


@kopf.on.create(GROUP, VERSION, PLURAL)
def create_proxy(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    _reconcile_and_retry(body, patch, memo, logger)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def update_proxy(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    _reconcile_and_retry(body, patch, memo, logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_INTERVAL_S, initial_delay=RESYNC_INTERVAL_S)
def resync_proxy(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    # No retry from here: the change handlers retry an unrealisable spec; the timer just comes back.
    _reconcile_into(body, patch, memo, logger)


# -- owned Deployments ---------------------------------------------------------------------------------------

_owner_logger = logging.getLogger("mcplane_operator.owners")


def owner_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the MCPProxy that controls this object, if any."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("apiVersion") == API_VERSION and ref.get("kind") == KIND and ref.get("controller"):
            return str(ref["name"]), str(ref["uid"])
    return None


def _owned_by_proxy(body: kopf.Body, **_: Any) -> bool:
    return owner_of(body) is not None


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGER}, when=_owned_by_proxy)
def deployment_event(body: kopf.Body, memo: kopf.Memo, event: kopf.RawEvent, **_: Any) -> None:
    """A Deployment of an MCPProxy changed or went away: reconcile its owner now, not at the next tick."""
    owner = owner_of(body)
    namespace = body.metadata.namespace
    if owner is None or namespace is None:
        return
    name, uid = owner
    runtime = _runtime(memo)
    if event.get("type") == "DELETED":
        runtime.own_writes.pop(str(body.metadata.uid), None)
    elif runtime.is_echo(body):
        return  # the operator's own create or patch coming back: its owner is already reconciled
    proxy = runtime.kube.get(apply.proxy_path(namespace, name))
    meta = (proxy or {}).get("metadata") or {}
    if proxy is None or meta.get("uid") != uid or meta.get("deletionTimestamp"):
        return  # the owner is gone or going: the garbage collector takes the children
    # The owner's problems are logged here, not posted as Events of the Deployment.
    outcome = reconcile(runtime, kopf.Body(cast(kopf.RawBody, proxy)), _owner_logger)
    try:
        runtime.kube.merge_patch(apply.proxy_path(namespace, name, "status"), {"status": outcome.status})
    except ApiException as exc:
        if exc.status != 404:
            raise
