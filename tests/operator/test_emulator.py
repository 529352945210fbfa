"""The emulator shim: each gap of vanilla kmock 0.8 that kopf or kubectl trips over, fixed and pinned here.

Plain HTTP against the emulator on loopback (httpx), no kopf: these run in the fast suite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.operator.conftest import Cluster

NS = "emulated"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
PROXIES = f"/apis/mcplane.dev/v1alpha1/namespaces/{NS}/mcpproxies"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def api(cluster: Cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        client.post("/api/v1/namespaces", json={"metadata": {"name": NS}})  # 409 after the first test: fine
        yield client


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def proxy(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mcplane.dev/v1alpha1",
        "kind": "MCPProxy",
        "metadata": {"name": name},
        "spec": spec,
    }


def created(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(path, json=body)
    assert response.status_code == 201, response.text
    obj: dict[str, Any] = response.json()
    return obj


def test_create_fills_the_server_fields(api: httpx.Client) -> None:
    body = {"metadata": {"name": "filled"}, "data": {"a": "1"}}  # no kind, no apiVersion, no namespace
    obj = created(api, CONFIGMAPS, body)
    meta = obj["metadata"]
    assert (obj["kind"], obj["apiVersion"], meta["namespace"], meta["generation"]) == (
        "ConfigMap",
        "v1",
        NS,
        1,
    )
    assert meta["uid"]
    assert meta["resourceVersion"].isdigit()
    assert meta["creationTimestamp"].endswith("Z")
    assert api.post(CONFIGMAPS, json=body).status_code == 409
    generated = created(api, CONFIGMAPS, {"metadata": {"generateName": "gen-"}})
    assert generated["metadata"]["name"].startswith("gen-")


def test_objects_need_their_namespace(api: httpx.Client) -> None:
    response = api.post("/api/v1/namespaces/nowhere/configmaps", json=configmap("lost"))
    assert response.status_code == 404
    assert response.json()["reason"] == "NotFound"
    assert api.get("/api/v1/namespaces/default").json()["kind"] == "Namespace"
    assert {"default", NS} <= {ns["metadata"]["name"] for ns in api.get("/api/v1/namespaces").json()["items"]}


def test_lists_and_discovery_speak_kubernetes(api: httpx.Client) -> None:
    created(api, CONFIGMAPS, configmap("listed", a="1"))
    listing = api.get(CONFIGMAPS, params={"labelSelector": ""}).json()
    assert (listing["kind"], listing["apiVersion"]) == ("ConfigMapList", "v1")
    assert int(listing["metadata"]["resourceVersion"]) >= 1
    assert all(item["kind"] == "ConfigMap" for item in listing["items"])
    assert api.get("/api/v1").json()["groupVersion"] == "v1"
    crd_resources = api.get("/apis/mcplane.dev/v1alpha1").json()["resources"]
    assert {r["name"] for r in crd_resources} == {"mcpproxies", "mcpproxies/status"}
    assert next(r for r in crd_resources if r["name"] == "mcpproxies")["shortNames"] == ["mcpp"]


def test_writes_bump_the_version_and_spec_changes_the_generation(api: httpx.Client) -> None:
    obj = created(api, PROXIES, proxy("versions", replicas=1))
    version = int(obj["metadata"]["resourceVersion"])
    relabeled = api.patch(
        f"{PROXIES}/versions", json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE
    ).json()
    assert int(relabeled["metadata"]["resourceVersion"]) > version
    assert relabeled["metadata"]["generation"] == 1  # metadata is not the spec
    respecced = api.patch(f"{PROXIES}/versions", json={"spec": {"replicas": 2}}, headers=MERGE).json()
    assert respecced["metadata"]["generation"] == 2
    same = api.patch(f"{PROXIES}/versions", json={"spec": {"replicas": 2}}, headers=MERGE).json()
    assert same["metadata"]["resourceVersion"] == respecced["metadata"]["resourceVersion"]  # a no-op


def test_status_is_a_separate_subresource(api: httpx.Client) -> None:
    created(api, PROXIES, {**proxy("statused", replicas=1), "status": {"dropped": True}})
    through_main = {"spec": {"replicas": 3}, "status": {"ignored": True}}
    main = api.patch(f"{PROXIES}/statused", json=through_main, headers=MERGE).json()
    assert "status" not in main
    assert main["spec"]["replicas"] == 3
    through_status = {"spec": {"replicas": 9}, "status": {"observedGeneration": 2}}
    status = api.patch(f"{PROXIES}/statused/status", json=through_status, headers=MERGE).json()
    assert status["status"] == {"observedGeneration": 2}
    assert status["spec"]["replicas"] == 3
    assert status["metadata"]["generation"] == 2


def test_optimistic_concurrency(api: httpx.Client) -> None:
    obj = created(api, CONFIGMAPS, configmap("contended", a="1"))
    stale = obj["metadata"]["resourceVersion"]
    api.patch(f"{CONFIGMAPS}/contended", json={"data": {"a": "2"}}, headers=MERGE).raise_for_status()
    conflict = api.patch(
        f"{CONFIGMAPS}/contended",
        json={"metadata": {"resourceVersion": stale}, "data": {"a": "3"}},
        headers=MERGE,
    )
    assert (conflict.status_code, conflict.json()["reason"]) == (409, "Conflict")
    test_failed = api.patch(
        f"{CONFIGMAPS}/contended",
        json=[
            {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
            {"op": "remove", "path": "/data"},
        ],
        headers=JSON_PATCH,
    )
    assert test_failed.status_code == 422  # what kopf expects, to re-read and retry at once
    current = api.get(f"{CONFIGMAPS}/contended").json()
    assert current["data"] == {"a": "2"}
    assert api.put(f"{CONFIGMAPS}/contended", json={**current, "data": {"b": "1"}}).json()["data"] == {
        "b": "1"
    }
    assert api.put(f"{CONFIGMAPS}/contended", json={**current, "data": {"c": "1"}}).status_code == 409


def test_finalizers_hold_a_deletion_and_owners_take_their_children(api: httpx.Client) -> None:
    owner = created(api, PROXIES, {**proxy("owner"), "metadata": {"name": "owner", "finalizers": ["x/y"]}})
    reference = {"apiVersion": "mcplane.dev/v1alpha1", "kind": "MCPProxy", "name": "owner"}
    reference["uid"] = owner["metadata"]["uid"]
    child = configmap("child")
    child["metadata"]["ownerReferences"] = [reference]
    created(api, CONFIGMAPS, child)
    orphan = configmap("orphan")
    orphan["metadata"]["ownerReferences"] = [{**reference, "uid": "gone"}]
    created(api, CONFIGMAPS, orphan)
    assert api.get(f"{CONFIGMAPS}/orphan").status_code == 404  # its owner never existed

    deleting = api.delete(f"{PROXIES}/owner").json()
    assert deleting["metadata"]["deletionTimestamp"]
    assert api.get(f"{CONFIGMAPS}/child").status_code == 200  # the owner still exists
    api.patch(f"{PROXIES}/owner", json={"metadata": {"finalizers": None}}, headers=MERGE).raise_for_status()
    assert api.get(f"{PROXIES}/owner").status_code == 404
    assert api.get(f"{CONFIGMAPS}/child").status_code == 404  # garbage-collected


def test_a_watch_resumes_after_its_version_and_honours_selectors(api: httpx.Client) -> None:
    first = created(api, CONFIGMAPS, configmap("watched-1"))
    since = first["metadata"]["resourceVersion"]
    labeled = configmap("watched-2")
    labeled["metadata"]["labels"] = {"app": "x"}
    created(api, CONFIGMAPS, labeled)
    api.delete(f"{CONFIGMAPS}/watched-1").raise_for_status()
    params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "1"}
    with api.stream("GET", CONFIGMAPS, params=params) as stream:
        assert stream.headers["content-type"] == "application/json"
        events = [json.loads(line) for line in stream.iter_lines() if line]
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen == [("ADDED", "watched-2"), ("DELETED", "watched-1")]  # nothing from before `since`
    params |= {"labelSelector": "app in (x,y)"}
    with api.stream("GET", CONFIGMAPS, params=params) as stream:
        events = [json.loads(line) for line in stream.iter_lines() if line]
    assert [e["object"]["metadata"]["name"] for e in events] == ["watched-2"]


def test_applying_a_crd_serves_its_resources(api: httpx.Client) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}],
        },
    }
    assert api.get("/apis/example.com/v1").status_code == 404
    created(api, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert {r["name"] for r in api.get("/apis/example.com/v1").json()["resources"]} == {
        "gadgets",
        "gadgets/status",
    }
    gadget = created(api, f"/apis/example.com/v1/namespaces/{NS}/gadgets", {"metadata": {"name": "g"}})
    assert (gadget["kind"], gadget["apiVersion"]) == ("Gadget", "example.com/v1")
