"""The operator's pure parts, without a cluster: conditions, apply planning, metrics, configuration, scope."""

from __future__ import annotations

import urllib.request
from typing import Any, cast

import pytest

from mcplane_operator import apply, metrics, status
from mcplane_operator.handlers import OperatorConfig, Runtime, owner_of
from mcplane_operator.operator import watch_scope
from tests.support.processes import free_port

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


# -- status ------------------------------------------------------------------------------------------------


def test_conditions_keep_their_transition_time_until_their_status_flips() -> None:
    progressing = status.Rollout(wanted=2, ready=1, updated=1, total=2, observed=True)
    first = status.merge_conditions(None, status.rollout_conditions(progressing), generation=1, now=T0)
    assert [(c["type"], c["status"], c["reason"]) for c in first] == [
        ("Ready", "False", "ReplicasNotReady"),
        ("Progressing", "True", "RollingOut"),
        ("Degraded", "False", "Reconciled"),
    ]
    done = status.Rollout(wanted=2, ready=2, updated=2, total=2, observed=True)
    second = status.merge_conditions(first, status.rollout_conditions(done), generation=2, now=T1)
    times = {c["type"]: c["lastTransitionTime"] for c in second}
    assert times == {"Ready": T1, "Progressing": T1, "Degraded": T0}  # Degraded stayed False
    assert {c["observedGeneration"] for c in second} == {2}
    assert second[0]["message"] == "2/2 replicas ready"


def test_a_failure_is_degraded_not_ready_and_blocks_the_rollout() -> None:
    judged = status.failure_conditions(status.SECRET_MISSING, "Secret s not found")
    built = status.build_status({"url": "kept"}, judged, generation=3, now=T0)
    assert built["observedGeneration"] == 3
    assert "url" not in built  # a merge patch: facts not judged now keep their value
    assert [(c["status"], c["reason"]) for c in built["conditions"]] == [
        ("False", "SecretMissing"),
        ("False", "Blocked"),
        ("True", "SecretMissing"),
    ]
    assert status.condition(built, "Degraded") == built["conditions"][2]


def test_rollout_reads_a_deployment() -> None:
    assert status.Rollout.of(None) == status.Rollout(wanted=1, ready=0, updated=0, total=0, observed=False)
    deployment = {
        "metadata": {"generation": 4},
        "spec": {},  # no replicas: the API server's default is 1
        "status": {"observedGeneration": 4, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1},
    }
    rollout = status.Rollout.of(deployment)
    assert (rollout.wanted, rollout.ready, rollout.complete) == (1, 1, True)
    scaled_down = status.rollout_conditions(
        status.Rollout(wanted=0, ready=0, updated=0, total=0, observed=True)
    )
    assert scaled_down[0].reason == "ScaledToZero"


@pytest.mark.parametrize("reason", ["two words", "lowerCase", "Dotted.Reason", ""])
def test_reasons_are_one_camel_case_word(reason: str) -> None:
    with pytest.raises(ValueError, match="reason"):
        status.Condition(status.READY, True, reason, "message")


# -- apply planning ----------------------------------------------------------------------------------------

DESIRED: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "s", "namespace": "ns", "labels": {"a": "1"}},
    "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "s"}},
}


def live_after_apply(desired: dict[str, Any], **server_fields: Any) -> dict[str, Any]:
    """What the server holds after creating `desired`: the annotation, plus defaults it fills in."""
    live = apply.with_last_applied(desired)
    live["metadata"] |= {"uid": "u", "resourceVersion": "7"}
    live["spec"]["ports"][0]["protocol"] = "TCP"  # defaulted inside a list item
    live["spec"] |= server_fields
    return live


def test_nothing_to_patch_when_the_live_object_holds_everything_wanted() -> None:
    assert apply.plan_patch(DESIRED, live_after_apply(DESIRED, clusterIP="10.0.0.1")) is None


def test_a_patch_sets_what_changed_and_removes_what_the_last_apply_set() -> None:
    live = live_after_apply(DESIRED)
    desired = {**DESIRED, "metadata": {"name": "s", "namespace": "ns", "labels": {"b": "2"}}}
    patch = apply.plan_patch(desired, live)
    assert patch is not None
    assert patch["metadata"]["labels"] == {"a": None, "b": "2"}
    assert patch["spec"] == DESIRED["spec"]  # lists go whole
    assert apply.LAST_APPLIED_ANNOTATION in patch["metadata"]["annotations"]


def test_drift_in_a_list_item_is_patched_back() -> None:
    live = live_after_apply(DESIRED)
    live["spec"]["ports"][0]["port"] = 81
    patch = apply.plan_patch(DESIRED, live)
    assert patch is not None
    assert patch["spec"]["ports"] == [{"name": "http", "port": 80}]


def test_object_paths() -> None:
    assert apply.object_path("v1", "ConfigMap", "ns", "c") == "/api/v1/namespaces/ns/configmaps/c"
    assert apply.object_path("apps/v1", "Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert (
        apply.proxy_path("ns", "p", "status")
        == "/apis/mcplane.dev/v1alpha1/namespaces/ns/mcpproxies/p/status"
    )


def test_the_owner_of_a_child() -> None:
    ref = {
        "apiVersion": "mcplane.dev/v1alpha1",
        "kind": "MCPProxy",
        "name": "p",
        "uid": "u",
        "controller": True,
    }
    assert owner_of({"metadata": {"ownerReferences": [ref]}}) == ("p", "u")
    assert owner_of({"metadata": {"ownerReferences": [{**ref, "kind": "ReplicaSet"}]}}) is None
    assert owner_of({"metadata": {}}) is None


# -- metrics -----------------------------------------------------------------------------------------------


def test_metrics_count_results_errors_and_time() -> None:
    m = metrics.OperatorMetrics()
    with m.reconciling():
        m.reconciles.labels(metrics.RESULT_READY).inc()
    with pytest.raises(RuntimeError), m.reconciling():
        raise RuntimeError("boom")
    sample = m.registry.get_sample_value
    assert sample("mcplane_operator_reconciles_total", {"result": "ready"}) == 1
    assert sample("mcplane_operator_reconciles_total", {"result": "error"}) == 1
    assert sample("mcplane_operator_reconciles_total", {"result": "degraded"}) == 0
    assert sample("mcplane_operator_reconcile_errors_total") == 1
    assert sample("mcplane_operator_reconcile_duration_seconds_count") == 2


def test_metrics_are_served_on_the_configured_address() -> None:
    m = metrics.OperatorMetrics()
    port = free_port()
    server = metrics.serve(m, f"127.0.0.1:{port}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"mcplane_operator_reconciles_total" in response.read()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("address", "parsed"),
    [(":9090", ("0.0.0.0", 9090)), ("127.0.0.1:1", ("127.0.0.1", 1)), ("[::1]:9", ("::1", 9))],
)
def test_metrics_addresses(address: str, parsed: tuple[str, int]) -> None:
    assert metrics.parse_address(address) == parsed


@pytest.mark.parametrize("address", ["9090", "host:", "host:port", "h:70000"])
def test_bad_metrics_addresses_fail_early(address: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        metrics.parse_address(address)


# -- configuration and scope -------------------------------------------------------------------------------


def test_config_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {
            "MCPLANE_SIDECAR_IMAGE": "img:1",
            "MCPLANE_RETRY_DELAY": "2.5",
            "MCPLANE_METRICS_ADDRESS": "",
            "MCPLANE_STATUS_URL": "http://{pod_ip}:{port}/status",
        }
    )
    assert (config.sidecar_image, config.retry_delay, config.metrics_address) == ("img:1", 2.5, None)
    assert OperatorConfig.from_env({}).metrics_address == "0.0.0.0:9090"


@pytest.mark.parametrize(
    "environ",
    [
        {"MCPLANE_RETRY_DELAY": "soon"},
        {"MCPLANE_RETRY_DELAY": "-1"},
        {"MCPLANE_METRICS_ADDRESS": "nowhere"},
        {"MCPLANE_STATUS_URL": "http://{pod}/status"},
    ],
)
def test_bad_config_fails_at_startup(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="operator configuration"):
        OperatorConfig.from_env(environ)


def test_watch_scope() -> None:
    env = {"MCPLANE_WATCH_NAMESPACES": "a, b"}
    assert watch_scope(["x"], False, env) == (False, ["x"])  # a flag beats the environment
    assert watch_scope(None, True, env) == (True, [])
    assert watch_scope(None, False, env) == (False, ["a", "b"])
    assert watch_scope(None, False, {}) == (True, [])
    assert watch_scope(None, False, {"MCPLANE_WATCH_NAMESPACES": "*"}) == (True, [])
    with pytest.raises(ValueError, match="not both"):
        watch_scope(["x"], True, {})


def test_only_the_operators_own_write_of_a_deployment_counts_as_its_echo() -> None:
    runtime = Runtime(
        config=OperatorConfig(), kube=cast(apply.KubeClient, None), metrics=metrics.OperatorMetrics()
    )
    written = {"metadata": {"uid": "u1", "resourceVersion": "7"}}
    runtime.wrote(written)
    assert runtime.is_echo(written)
    # The controller updating its status (a new resourceVersion) or another object is news.
    assert not runtime.is_echo({"metadata": {"uid": "u1", "resourceVersion": "8"}})
    assert not runtime.is_echo({"metadata": {"uid": "u2", "resourceVersion": "7"}})
    assert not runtime.is_echo({"metadata": {}})
