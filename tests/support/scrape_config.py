"""Rendered monitoring objects → Prometheus scrape jobs aimed at processes on loopback.

In a cluster, Prometheus finds mcplane's metrics in one of two ways, and both are rendered by the chart or
the operator: a Prometheus Operator `ServiceMonitor` (endpoint `port` names a Service port, whose `targetPort`
names a container port of the pods the Service selects; `path`, `scheme`, `params`), or the conventional
`prometheus.io/scrape|port|path|scheme` annotations on a pod template or a Service (what the example
`kubernetes-pods` / `kubernetes-service-endpoints` jobs of Prometheus read).

`scrape_targets()` follows those references through the rendered objects down to a (workload, container port)
pair, and `scrape_job()` turns one into a static job whose target is whatever address the test runs that
container at. So if the chart or the operator moves the path or the port, the test's Prometheus follows, and
if a ServiceMonitor points at a port no container has, this fails here, not silently in a cluster.
The `job` label is the one the Prometheus Operator would give (the Service label named by `jobLabel`, else the
Service's name), so alert expressions that select on `job` see the same series as in a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
SCRAPE_ANNOTATION = "prometheus.io/scrape"
PORT_ANNOTATION = "prometheus.io/port"
PATH_ANNOTATION = "prometheus.io/path"
SCHEME_ANNOTATION = "prometheus.io/scheme"
DEFAULT_PATH = "/metrics"  # Prometheus's own default metrics_path, which both mechanisms fall back to
DEFAULT_SCHEME = "http"
# The job names of Prometheus's example Kubernetes config, which read the annotations.
ANNOTATED_POD_JOB = "kubernetes-pods"
ANNOTATED_SERVICE_JOB = "kubernetes-service-endpoints"


@dataclass(frozen=True)
class ScrapeTarget:
    """One way Prometheus would scrape one container port, and where that way was rendered."""

    source: str  # e.g. "ServiceMonitor mcplane-system/rel-mcplane-operator endpoint 0"
    job: str
    workload: str  # "Deployment NAMESPACE/NAME": the pods behind the target
    container: str
    container_port: int
    path: str = DEFAULT_PATH
    scheme: str = DEFAULT_SCHEME
    params: Mapping[str, list[str]] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)  # namespace, service: as Prometheus would attach

    @property
    def job_name(self) -> str:
        """A unique scrape-config name (the `job` label is set apart, as the Prometheus Operator does)."""
        return self.source.replace(" ", "/")


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def _namespace(obj: Mapping[str, Any], default: str) -> str:
    return str(_meta(obj).get("namespace") or default)


def _matches(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """`matchLabels` (and the `In`/`Exists` forms of `matchExpressions`) of a LabelSelector."""
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or ():
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and labels.get(key) in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def _pod_template(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    template: Mapping[str, Any] = workload["spec"]["template"]
    return template


def _container_port(workload: Mapping[str, Any], port: int | str) -> tuple[str, int] | None:
    """(container name, port number) of the workload's container port `port` (a name or a number)."""
    for container in _pod_template(workload)["spec"].get("containers") or ():
        for declared in container.get("ports") or ():
            if port in (declared.get("name"), declared["containerPort"], str(declared["containerPort"])):
                return str(container["name"]), int(declared["containerPort"])
    if isinstance(port, int) or str(port).isdigit():  # a number need not be declared to be reachable
        containers = _pod_template(workload)["spec"].get("containers") or ()
        return (str(containers[0]["name"]), int(port)) if containers else None
    return None


def _workloads_behind(
    service: Mapping[str, Any], objs: list[JsonObject], default_ns: str
) -> list[JsonObject]:
    selector = (service.get("spec") or {}).get("selector") or {}
    namespace = _namespace(service, default_ns)
    return [
        obj
        for obj in objs
        if obj.get("kind") in WORKLOAD_KINDS
        and _namespace(obj, default_ns) == namespace
        and selector
        and _matches({"matchLabels": selector}, _meta(_pod_template(obj)).get("labels") or {})
    ]


def _describe(obj: Mapping[str, Any], default_ns: str) -> str:
    return f"{obj['kind']} {_namespace(obj, default_ns)}/{_meta(obj)['name']}"


def _from_service_monitor(
    monitor: Mapping[str, Any], objs: list[JsonObject], default_ns: str
) -> list[ScrapeTarget]:
    spec = monitor["spec"]
    monitor_ns = _namespace(monitor, default_ns)
    chosen = spec.get("namespaceSelector") or {}
    wanted_ns = None if chosen.get("any") else set(chosen.get("matchNames") or [monitor_ns])
    services = [
        obj
        for obj in objs
        if obj.get("kind") == "Service"
        and (wanted_ns is None or _namespace(obj, default_ns) in wanted_ns)
        and _matches(spec.get("selector") or {}, _meta(obj).get("labels") or {})
    ]
    targets = []
    for index, endpoint in enumerate(spec.get("endpoints") or ()):
        for service in services:
            service_labels = _meta(service).get("labels") or {}
            job = service_labels.get(spec["jobLabel"]) if spec.get("jobLabel") else None
            if "targetPort" in endpoint:
                pod_port: int | str = endpoint["targetPort"]
            else:
                ports = [
                    p for p in service["spec"].get("ports") or () if p.get("name") == endpoint.get("port")
                ]
                if not ports:
                    where = f"{_describe(monitor, default_ns)} endpoint {index}"
                    raise AssertionError(
                        f"{where} names port {endpoint.get('port')!r}, which "
                        f"{_describe(service, default_ns)} does not have"
                    )
                pod_port = ports[0].get("targetPort", ports[0]["port"])
            source = f"{_describe(monitor, default_ns)} endpoint {index}"
            for workload in _workloads_behind(service, objs, default_ns):
                found = _container_port(workload, pod_port)
                if found is None:
                    raise AssertionError(
                        f"{source}: {_describe(workload, default_ns)} has no port {pod_port!r}"
                    )
                targets.append(
                    ScrapeTarget(
                        source=f"{source} {_meta(service)['name']}",
                        job=str(job or _meta(service)["name"]),
                        workload=_describe(workload, default_ns),
                        container=found[0],
                        container_port=found[1],
                        path=endpoint.get("path") or DEFAULT_PATH,
                        scheme=endpoint.get("scheme") or DEFAULT_SCHEME,
                        params=dict(endpoint.get("params") or {}),
                        labels={
                            "namespace": _namespace(service, default_ns),
                            "service": str(_meta(service)["name"]),
                        },
                    )
                )
    return targets


def _from_annotations(obj: Mapping[str, Any], objs: list[JsonObject], default_ns: str) -> list[ScrapeTarget]:
    """Targets of `prometheus.io/*` annotations on a workload's pod template or on a Service."""
    if obj.get("kind") in WORKLOAD_KINDS:
        annotations = _meta(_pod_template(obj)).get("annotations") or {}
        workloads, job = [dict(obj)], ANNOTATED_POD_JOB
    elif obj.get("kind") == "Service":
        annotations = _meta(obj).get("annotations") or {}
        workloads, job = _workloads_behind(obj, objs, default_ns), ANNOTATED_SERVICE_JOB
    else:
        return []
    if annotations.get(SCRAPE_ANNOTATION) != "true":
        return []
    source = f"annotations {_describe(obj, default_ns)}"
    targets = []
    for workload in workloads:
        port: int | str | None = annotations.get(PORT_ANNOTATION)
        if port is None:  # Prometheus then scrapes every declared port; mcplane always names one
            raise AssertionError(f"{source}: {SCRAPE_ANNOTATION} without {PORT_ANNOTATION}")
        found = _container_port(workload, int(port) if str(port).isdigit() else str(port))
        if found is None:
            raise AssertionError(f"{source}: {_describe(workload, default_ns)} has no port {port!r}")
        targets.append(
            ScrapeTarget(
                source=source,
                job=job,
                workload=_describe(workload, default_ns),
                container=found[0],
                container_port=found[1],
                path=annotations.get(PATH_ANNOTATION) or DEFAULT_PATH,
                scheme=annotations.get(SCHEME_ANNOTATION) or DEFAULT_SCHEME,
                labels={"namespace": _namespace(workload, default_ns)},
            )
        )
    return targets


def scrape_targets(
    objs: Iterable[Mapping[str, Any]], default_namespace: str = "default"
) -> list[ScrapeTarget]:
    """Every scrape the rendered objects ask for: ServiceMonitor endpoints first, then annotations."""
    rendered = [dict(obj) for obj in objs]
    targets: list[ScrapeTarget] = []
    for monitor in (obj for obj in rendered if obj.get("kind") == "ServiceMonitor"):
        targets += _from_service_monitor(monitor, rendered, default_namespace)
    for obj in rendered:
        targets += _from_annotations(obj, rendered, default_namespace)
    return targets


def scrape_job(target: ScrapeTarget, address: str, interval: str = "1s") -> JsonObject:
    """A Prometheus `scrape_configs` entry scraping `address` (host:port) as the target would be scraped."""
    job: JsonObject = {
        "job_name": target.job_name,
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "metrics_path": target.path,
        "scheme": target.scheme,
        "static_configs": [{"targets": [address], "labels": {"job": target.job, **target.labels}}],
    }
    if target.params:
        job["params"] = {key: list(values) for key, values in target.params.items()}
    return job
