"""Monitoring in the chart: ServiceMonitors and a PrometheusRule behind a double gate (value and CRD), the
prometheus.io annotation fallback, alert rules checked and unit-tested by promtool, and a Grafana dashboard
whose every query names metrics and labels the sidecar and the operator really export.

The exported names come from the metric classes themselves (a fresh registry each), never from a list here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from mcplane_operator import builders
from mcplane_operator.metrics import OperatorMetrics
from mcplane_sidecar.metrics import Metrics
from tests.chart import test_chart
from tests.chart.test_chart import (
    CHART,
    CI_VALUES,
    K8S_VERSIONS,
    NAMESPACE,
    ci,
    container,
    find,
    helm,
    render,
)
from tests.support.processes import REPO_ROOT

helm_env = test_chart.helm_env  # the session fixture, shared with test_chart.py

MONITORING = ci("monitoring")
SERVICE_MONITOR_API = ("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
PROMETHEUS_RULE_API = ("--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
BOTH_APIS = (*SERVICE_MONITOR_API, *PROMETHEUS_RULE_API)
ALERTS_TEST = Path(__file__).with_name("alerts-test.yaml")
DASHBOARD_FILE = CHART / "files" / "dashboard.json"
EXAMPLES = sorted((REPO_ROOT / "manifests" / "examples").glob("*.yaml"))
ALERTS = {
    "MCPlaneSidecarDown",
    "MCPlaneBackendNotReady",
    "MCPlaneSessionsNearLimit",
    "MCPlaneBackendErrors",
    "MCPlaneOperatorDown",
    "MCPlaneReconcileErrors",
}
# Labels Prometheus (through a ServiceMonitor) puts on every scraped series, besides the metric's own.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "service", "pod", "endpoint", "container"})
# Series each metric type exposes, and the labels a suffix adds (prometheus_client's text format).
SERIES_SUFFIXES: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "counter": (("_total", frozenset()), ("_created", frozenset())),
    "gauge": (("", frozenset()),),
    "histogram": (
        ("_bucket", frozenset({"le"})),
        ("_sum", frozenset()),
        ("_count", frozenset()),
        ("_created", frozenset()),
    ),
}


def monitoring_objects(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["apiVersion"].startswith("monitoring.coreos.com/")]


def pod_annotations(objs: list[dict[str, Any]]) -> dict[str, str]:
    (deployment,) = find(objs, "Deployment")
    annotations: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations


def prometheus_rule(env: dict[str, str], *extra: str) -> dict[str, Any]:
    (rule,) = find(render(env, MONITORING, *PROMETHEUS_RULE_API, *extra), "PrometheusRule")
    return rule


def all_rules(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def expect_render_failure(env: dict[str, str], tmp_path: Path, values: str, *extra: str) -> str:
    file = tmp_path / "values.yaml"
    file.write_text(values)
    run = helm(env, "template", "rel", str(CHART), "-n", NAMESPACE, "-f", str(file), *extra)
    assert run.returncode != 0, run.stdout
    return run.stderr


# -- what renders, and when ----------------------------------------------------------------------------------


def test_monitoring_values_are_in_the_ci_loop() -> None:
    """So test_chart.py lints it and runs kubernetes-validate over its render too."""
    assert MONITORING in CI_VALUES


def test_defaults_render_no_monitoring_even_where_the_crds_exist(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, ci("defaults"), *BOTH_APIS)
    assert monitoring_objects(objs) == []
    assert not [o for o in find(objs, "ConfigMap") if "dashboard" in o["metadata"]["name"]]
    assert not any(key.startswith("prometheus.io/") for key in pod_annotations(objs))


def test_without_the_prometheus_operator_the_operator_pod_is_annotated(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, MONITORING)
    assert monitoring_objects(objs) == []  # installing on a cluster without the CRDs must not fail
    ports = {p["name"]: p["containerPort"] for p in container(objs)["ports"]}
    annotations = pod_annotations(objs)
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"
    assert find(objs, "ConfigMap", "rel-mcplane-dashboard")  # the dashboard needs no CRD


def test_user_pod_annotations_win_over_the_fallback(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, MONITORING, "--set-string", "podAnnotations.prometheus\\.io/port=9999")
    annotations = pod_annotations(objs)
    assert annotations["prometheus.io/port"] == "9999"
    assert annotations["prometheus.io/scrape"] == "true"
    # Replaced, not repeated: a duplicate key is invalid YAML to strict parsers (kubectl, the API server).
    run = helm(
        helm_env,
        "template",
        "rel",
        str(CHART),
        "-f",
        str(MONITORING),
        "--show-only",
        "templates/deployment.yaml",
        "--set-string",
        "podAnnotations.prometheus\\.io/port=9999",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("prometheus.io/port") == 1


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_with_the_prometheus_operator_everything_renders_and_validates(
    helm_env: dict[str, str], version: str
) -> None:
    objs = render(helm_env, MONITORING, *BOTH_APIS)
    assert {(o["kind"], o["metadata"]["name"]) for o in monitoring_objects(objs)} == {
        ("ServiceMonitor", "rel-mcplane-operator"),
        ("ServiceMonitor", "rel-mcplane-sidecars"),
        ("PrometheusRule", "rel-mcplane-alerts"),
    }
    for obj in monitoring_objects(objs):
        assert obj["metadata"]["namespace"] == NAMESPACE
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not any(key.startswith("prometheus.io/") for key in pod_annotations(objs))
    for obj in objs:
        if obj["apiVersion"].split("/")[0] in {"monitoring.coreos.com", "kopf.dev", "mcplane.dev"}:
            continue  # kubernetes-validate has no schema for custom resources (test_chart.py covers ours)
        kubernetes_validate.validate(obj, version, strict=True)


def test_prometheus_rule_waits_for_its_own_crd(helm_env: dict[str, str]) -> None:
    only_monitors = render(helm_env, MONITORING, *SERVICE_MONITOR_API)
    assert len(find(only_monitors, "ServiceMonitor")) == 2
    assert not find(only_monitors, "PrometheusRule")
    only_rules = render(helm_env, MONITORING, *PROMETHEUS_RULE_API)
    assert not find(only_rules, "ServiceMonitor")
    assert find(only_rules, "PrometheusRule")
    assert pod_annotations(only_rules)["prometheus.io/scrape"] == "true"


def test_operator_service_monitor_selects_the_metrics_service(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, MONITORING, *SERVICE_MONITOR_API)
    (monitor,) = find(objs, "ServiceMonitor", "rel-mcplane-operator")
    (service,) = find(objs, "Service")
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert "jobLabel" not in spec  # job = the Service's name, what the alerts' operator selector expects
    (endpoint,) = spec["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def _example_services() -> Iterator[dict[str, Any]]:
    """The Service the operator builds for each example MCPProxy, from the real builders."""
    for path in EXAMPLES:
        proxy = yaml.safe_load(path.read_text())
        children = builders.build_children(
            proxy["metadata"]["name"],
            "team-a",
            proxy["spec"],
            sidecar_image="mcplane/sidecar:test",
            service_monitor_available=False,
        )
        yield from (c for c in children if c["kind"] == "Service")


def test_sidecar_service_monitor_selects_every_proxy_service(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, MONITORING, *SERVICE_MONITOR_API)
    (monitor,) = find(objs, "ServiceMonitor", "rel-mcplane-sidecars")
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["endpoints"]
    assert endpoint["path"] == builders.METRICS_PATH
    services = list(_example_services())
    assert len(services) == len(EXAMPLES) >= 5
    for service in services:
        labels = service["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        # The job every sidecar series gets, which the alerts' default sidecar selector names.
        assert labels[spec["jobLabel"]] == "mcplane-sidecar"
    (operator_service,) = find(objs, "Service")
    assert not spec["selector"]["matchLabels"].items() <= operator_service["metadata"]["labels"].items()


def test_sidecar_service_monitor_follows_the_watched_namespaces(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, MONITORING, *SERVICE_MONITOR_API, "--set", "watchNamespaces={team-a,team-b}")
    (monitor,) = find(objs, "ServiceMonitor", "rel-mcplane-sidecars")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_sidecar_service_monitor_can_be_left_to_the_proxies(helm_env: dict[str, str]) -> None:
    objs = render(
        helm_env, MONITORING, *SERVICE_MONITOR_API, "--set", "monitoring.serviceMonitor.sidecars=false"
    )
    assert [o["metadata"]["name"] for o in find(objs, "ServiceMonitor")] == ["rel-mcplane-operator"]


def test_operator_service_monitor_without_the_metrics_service_fails_clearly(
    helm_env: dict[str, str], tmp_path: Path
) -> None:
    values = MONITORING.read_text() + "metrics:\n  service:\n    enabled: false\n"
    stderr = expect_render_failure(helm_env, tmp_path, values, *SERVICE_MONITOR_API)
    assert "set metrics.service.enabled=true" in stderr
    # Without the CRD the annotation fallback needs no Service: that renders.
    (tmp_path / "ok.yaml").write_text(values)
    assert pod_annotations(render(helm_env, tmp_path / "ok.yaml"))["prometheus.io/scrape"] == "true"


def test_long_names_stay_dns_labels(helm_env: dict[str, str]) -> None:
    objs = render(helm_env, MONITORING, *BOTH_APIS, "--set", "fullnameOverride=" + "f" * 63)
    names = [o["metadata"]["name"] for o in [*monitoring_objects(objs), *find(objs, "ConfigMap")]]
    assert len(names) == 4
    for name in names:
        assert len(name) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name


# -- alert rules ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    if shutil.which("promtool") is None:
        subprocess.run(
            [str(REPO_ROOT / "scripts" / "install-prometheus.sh")], check=True, capture_output=True
        )
    path = shutil.which("promtool")
    assert path, "promtool is missing: scripts/install-prometheus.sh installs it"
    return path


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def write_rules_for_unit_tests(rule: dict[str, Any], directory: Path) -> None:
    """spec.groups as rules.yaml beside alerts-test.yaml, minus the long descriptions (see that file)."""
    groups = json.loads(json.dumps(rule["spec"]["groups"]))
    for group in groups:
        for r in group["rules"]:
            del r["annotations"]["description"]
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(ALERTS_TEST, directory / ALERTS_TEST.name)


def test_rule_groups_are_a_valid_prometheus_rules_file(
    helm_env: dict[str, str], promtool: str, tmp_path: Path
) -> None:
    """spec.groups, untouched, is what a plain Prometheus loads (the end-to-end test does exactly that)."""
    rule = prometheus_rule(helm_env)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    run = run_promtool(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in run.stdout


def test_every_alert_is_complete(helm_env: dict[str, str]) -> None:
    rules = all_rules(prometheus_rule(helm_env))
    assert {r["alert"] for r in rules} == ALERTS
    for r in rules:
        assert re.fullmatch(r"\d+m", r["for"]), r["alert"]
        assert r["labels"]["severity"] in {"critical", "warning"}
        assert r["annotations"]["summary"]
        assert len(r["annotations"]["description"]) > 100, r["alert"]  # says what to check, not just what


def test_alerts_fire_when_they_should_and_not_otherwise(
    helm_env: dict[str, str], promtool: str, tmp_path: Path
) -> None:
    write_rules_for_unit_tests(prometheus_rule(helm_env), tmp_path)
    run = run_promtool(promtool, "test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_alert_unit_tests_cover_every_alert_both_ways() -> None:
    cases = [
        case
        for group in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in group["alert_rule_test"]
    ]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert fires == ALERTS
    assert silent == ALERTS


@pytest.mark.parametrize(
    ("values", "failing_alert"),
    [
        ("{sessionsRatio: 0.95}", "MCPlaneSessionsNearLimit"),  # 92% no longer fires
        ("{backendErrorRatio: 0.004}", "MCPlaneBackendErrors"),  # now 0.5% fires too
        ("{sidecarSelector: 'job=\"kubernetes-pods\"'}", "MCPlaneSidecarDown"),  # the series no longer match
    ],
)
def test_alert_unit_tests_follow_the_values(
    helm_env: dict[str, str], promtool: str, tmp_path: Path, values: str, failing_alert: str
) -> None:
    """The unit tests can fail: with other thresholds or selectors, the same cases no longer hold."""
    extra = tmp_path / "extra-values.yaml"
    extra.write_text(f"monitoring:\n  prometheusRule: {values}\n")
    write_rules_for_unit_tests(prometheus_rule(helm_env, "-f", str(extra)), tmp_path)
    run = run_promtool(promtool, "test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert run.returncode != 0
    assert f"alertname: {failing_alert}" in run.stdout + run.stderr


def test_operator_selector_can_be_overridden(helm_env: dict[str, str], tmp_path: Path) -> None:
    extra = tmp_path / "extra-values.yaml"
    extra.write_text("monitoring:\n  prometheusRule:\n    operatorSelector: 'job=\"mcplane-operator\"'\n")
    rules = {r["alert"]: r["expr"] for r in all_rules(prometheus_rule(helm_env, "-f", str(extra)))}
    assert 'up{job="mcplane-operator"} == 0' in rules["MCPlaneOperatorDown"]
    assert "rel-mcplane-metrics" not in rules["MCPlaneReconcileErrors"]


# -- exported metrics and the query check --------------------------------------------------------------------


@cache
def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the sidecar and the operator expose, with its labels: from their metric classes."""
    series: dict[str, frozenset[str]] = {}
    for owner in (Metrics(CollectorRegistry()), OperatorMetrics(CollectorRegistry())):
        # Label names are only on the collectors (a family without children collects no samples).
        label_names = {
            family.name: frozenset(collector._labelnames)
            for collector in vars(owner).values()
            if isinstance(collector, MetricWrapperBase)
            for family in collector.describe()
        }
        for family in owner.registry.collect():
            for suffix, extra in SERIES_SUFFIXES[family.type]:
                series[family.name + suffix] = label_names[family.name] | extra
    return series


METRIC_RE = re.compile(r"\bmcplane_\w+")
GROUPING_RE = re.compile(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)")
MATCHERS_RE = re.compile(r"\{([^{}]*)\}")
MATCHER_LABEL_RE = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")
LABEL_VALUES_RE = re.compile(r"label_values\([^,]+,\s*(\w+)\s*\)")
LEGEND_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def query_problems(expr: str, legend: str = "") -> list[str]:
    """What is wrong with a PromQL query over mcplane's metrics: unknown series, labels no series has, legend
    labels the query aggregates away. Empty when the query is sound."""
    exported = exported_series()
    names = set(METRIC_RE.findall(expr))
    if not names:
        return [f"{expr!r} queries no mcplane metric"]
    problems = [f"{name} is not exported" for name in sorted(names - exported.keys())]
    allowed = TARGET_LABELS.union(*(exported.get(name, frozenset()) for name in names))
    used = {label for _, group in GROUPING_RE.findall(expr) for label in re.findall(r"\w+", group)}
    used |= {label for body in MATCHERS_RE.findall(expr) for label in MATCHER_LABEL_RE.findall(body)}
    used |= set(LABEL_VALUES_RE.findall(expr))
    problems += [f"label {label!r} is on none of {sorted(names)}" for label in sorted(used - allowed)]
    kept = {
        label
        for kind, group in GROUPING_RE.findall(expr)
        if kind == "by"
        for label in re.findall(r"\w+", group)
    }
    problems += [
        f"legend label {label!r} is not kept by the query"
        for label in LEGEND_RE.findall(legend)
        if label not in kept
    ]
    return problems


def test_exported_series_come_from_the_metric_classes() -> None:
    series = exported_series()
    assert series["mcplane_requests_total"] == {"method", "outcome"}
    assert series["mcplane_request_duration_seconds_bucket"] == {"method", "le"}
    assert series["mcplane_sessions_limit"] == frozenset()
    assert series["mcplane_operator_reconciles_total"] == {"result"}
    assert "mcplane_operator_reconcile_duration_seconds_count" in series
    assert "mcplane_requests" not in series  # a counter's family name is not a series


def test_exported_metric_names_follow_prometheus_conventions() -> None:
    for owner in (Metrics(CollectorRegistry()), OperatorMetrics(CollectorRegistry())):
        for family in owner.registry.collect():
            assert re.fullmatch(r"mcplane_[a-z][a-z0-9_]*", family.name), family.name
            assert not re.search(r"_(ms|milliseconds|minutes|kilobytes|megabytes)\b", family.name), (
                family.name
            )
            if family.type == "histogram":  # durations and sizes, in base units
                assert family.name.endswith(("_seconds", "_bytes")), family.name
            if family.type != "counter":  # the _total suffix is for counters alone
                assert not family.name.endswith("_total"), family.name


@pytest.mark.parametrize(
    ("expr", "legend", "problem"),
    [
        ("rate(mcplane_request_total[5m])", "", "mcplane_request_total is not exported"),
        ("mcplane_request_duration_seconds", "", "mcplane_request_duration_seconds is not exported"),
        ("sum by (methdo) (rate(mcplane_requests_total[5m]))", "", "label 'methdo'"),
        ('mcplane_sessions_limit{era="x"}', "", "label 'era'"),
        ("sum by (le) (rate(mcplane_requests_total[5m]))", "", "label 'le'"),
        ("sum by (method) (rate(mcplane_requests_total[5m]))", "{{outcome}}", "legend label 'outcome'"),
        ("rate(http_requests_total[5m])", "", "queries no mcplane metric"),
    ],
)
def test_query_check_catches_mistakes(expr: str, legend: str, problem: str) -> None:
    assert any(problem in p for p in query_problems(expr, legend)), query_problems(expr, legend)


def test_alert_expressions_use_exported_metrics(helm_env: dict[str, str]) -> None:
    problems = {
        r["alert"]: query_problems(r["expr"])
        for r in all_rules(prometheus_rule(helm_env))
        if "mcplane_" in r["expr"]
    }
    assert len(problems) == 4  # the two `up` alerts query no mcplane metric
    assert all(p == [] for p in problems.values()), problems


# -- the Grafana dashboard -----------------------------------------------------------------------------------


def rendered_dashboard(env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    (configmap,) = find(render(env, MONITORING), "ConfigMap", "rel-mcplane-dashboard")
    dashboard: dict[str, Any] = json.loads(configmap["data"]["mcplane.json"])
    return configmap, dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, expr, legend) of every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target.get("legendFormat", "")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"${variable['name']}", query["query"] if isinstance(query, dict) else query, ""


def test_dashboard_configmap_is_labelled_for_grafana(helm_env: dict[str, str], tmp_path: Path) -> None:
    configmap, dashboard = rendered_dashboard(helm_env)
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "mcplane"}
    assert dashboard == json.loads(DASHBOARD_FILE.read_text())  # byte for byte, legends not templated by Helm
    relabel = tmp_path / "labels.yaml"
    relabel.write_text("monitoring:\n  dashboard:\n    labels: {grafana_dashboard: null, team: x}\n")
    (configmap,) = find(
        render(helm_env, MONITORING, "-f", str(relabel)), "ConfigMap", "rel-mcplane-dashboard"
    )
    assert configmap["metadata"]["labels"]["team"] == "x"
    assert "grafana_dashboard" not in configmap["metadata"]["labels"]


def test_dashboard_is_well_formed(helm_env: dict[str, str]) -> None:
    _, dashboard = rendered_dashboard(helm_env)
    assert dashboard["uid"]
    assert dashboard["title"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        used = set(re.findall(r"\$(\w+)", json.dumps(panel["targets"])))
        assert used <= set(variables) | {"__rate_interval"}, panel["title"]


def test_dashboard_queries_only_exported_metrics(helm_env: dict[str, str]) -> None:
    _, dashboard = rendered_dashboard(helm_env)
    found = list(queries(dashboard))
    assert len(found) > 20
    problems = {f"{where}: {expr}": query_problems(expr, legend) for where, expr, legend in found}
    assert {k: v for k, v in problems.items() if v} == {}


def test_dashboard_shows_what_the_issue_asks_for(helm_env: dict[str, str]) -> None:
    _, dashboard = rendered_dashboard(helm_env)
    exprs = [expr for _, expr, _ in queries(dashboard)]

    def shown(metric: str, by: str | None = None) -> bool:
        return any(metric in e and (by is None or re.search(rf"\bby \(([^)]*\b)?{by}\b", e)) for e in exprs)

    assert shown("mcplane_sessions_active")
    assert shown("mcplane_sessions_limit")
    assert shown("mcplane_requests_total", by="method")
    assert shown("mcplane_request_duration_seconds_bucket", by="method")
    assert shown("mcplane_backend_errors_total", by="kind")
    assert shown("mcplane_async_reply_latency_seconds_bucket")  # queue latency
    assert shown("mcplane_operator_reconciles_total", by="result")


# -- values schema and NOTES ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            "monitoring:\n  serviceMonitor:\n    intervall: 1m\n",
            "additional properties 'intervall' not allowed",
        ),
        (
            "monitoring:\n  prometheusRule:\n    sessionRatio: 0.8\n",
            "additional properties 'sessionRatio' not allowed",
        ),
        ("monitoring:\n  dashbord:\n    enabled: true\n", "additional properties 'dashbord' not allowed"),
        ("monitoring:\n  enable: true\n", "additional properties 'enable' not allowed"),
        (
            "monitoring:\n  prometheusRule:\n    sessionsRatio: 90\n",
            "/monitoring/prometheusRule/sessionsRatio",
        ),
        ("monitoring:\n  serviceMonitor:\n    interval: 30\n", "/monitoring/serviceMonitor/interval"),
        (
            "monitoring:\n  prometheusRule:\n    sidecarSelector: '{job=\"x\"}'\n",
            "/monitoring/prometheusRule/sidecarSelector",
        ),
        (
            "monitoring:\n  dashboard:\n    labels:\n      grafana_dashboard: 1\n",
            "/monitoring/dashboard/labels/grafana_dashboard",
        ),
    ],
)
def test_schema_rejects_bad_monitoring_values(
    helm_env: dict[str, str], tmp_path: Path, values: str, message: str
) -> None:
    stderr = expect_render_failure(helm_env, tmp_path, values)
    assert "values don't meet the specifications of the schema" in stderr
    assert message in stderr, stderr


def test_notes_without_the_prometheus_operator(helm_env: dict[str, str]) -> None:
    run = helm(
        helm_env, "install", "rel", str(CHART), "-n", NAMESPACE, "--dry-run=client", "-f", str(MONITORING)
    )
    assert run.returncode == 0, run.stderr
    notes = run.stdout.split("NOTES:", 1)[1]
    for needle in (
        "prometheus.io/scrape",
        "no alerts were installed",
        "--api-versions monitoring.coreos.com/v1/PrometheusRule",
        "ConfigMap monitoring/rel-mcplane-dashboard",
        "grafana_dashboard=1",
        "kubectl -n monitoring get configmap rel-mcplane-dashboard",
    ):
        assert needle in notes


def notes_with_capabilities(env: dict[str, str], tmp_path: Path, *extra: str) -> str:
    """NOTES.txt rendered with --api-versions (which `helm install --dry-run` lacks): a copy of the chart
    turns it into a named template and a ConfigMap that prints it."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "probe.notes" -}}\n' + notes + "\n{{- end }}\n"
    )
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-probe\n"
        'data:\n  notes: {{ include "probe.notes" . | toJson }}\n'
    )
    run = helm(env, "template", "rel", str(chart), "-n", NAMESPACE, "-f", str(MONITORING), *extra)
    assert run.returncode == 0, run.stderr
    (probe,) = find([d for d in yaml.safe_load_all(run.stdout) if d], "ConfigMap", "notes-probe")
    text: str = probe["data"]["notes"]
    return text


def test_notes_with_the_prometheus_operator(helm_env: dict[str, str], tmp_path: Path) -> None:
    notes = notes_with_capabilities(helm_env, tmp_path, *BOTH_APIS)
    for needle in (
        "rel-mcplane-operator",
        "rel-mcplane-sidecars",
        'up{job="mcplane-sidecar"}',
        'up{job="rel-mcplane-metrics"}',
        "release=kube-prometheus-stack",
        "PrometheusRule mcplane-system/rel-mcplane-alerts",
        "MCPlaneSidecarDown",
        "rel-mcplane-dashboard",
    ):
        assert needle in notes
    assert "prometheus.io/scrape" not in notes
    assert "no alerts were installed" not in notes
