"""Idempotent create-or-patch of an MCPProxy's children through the Kubernetes API.

Each child is read first. Absent: created (a 409 from a concurrent create falls back to patching). Present:
compared with what the builders want, and patched only if it differs, with a JSON merge patch that also
removes what the previous apply set and this one no longer wants (the last applied state is kept in an
annotation, as `kubectl apply` does). Nothing is ever created blindly, so a retried reconcile never 409s.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mcplane_operator.model import API_VERSION, KIND, PLURAL

JsonObject = dict[str, Any]
Action = Literal["created", "patched", "unchanged"]

LAST_APPLIED_ANNOTATION = "mcplane.dev/last-applied"
MERGE_PATCH = "application/merge-patch+json"
# Connect and read timeouts of one API call: a reconcile must not hang on a half-open connection.
REQUEST_TIMEOUT = (5.0, 30.0)
SERVICE_MONITOR_GROUP_VERSION = "monitoring.coreos.com/v1"
SERVICE_MONITOR_PLURAL = "servicemonitors"
# The plural of every kind the operator reads or writes (no discovery round trip per call).
PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "ServiceMonitor": SERVICE_MONITOR_PLURAL,
    "Secret": "secrets",
    "Pod": "pods",
    KIND: PLURAL,
}
# Optional children: when the spec stops asking for one, the operator deletes the one it made.
OPTIONAL_CHILDREN = (("policy/v1", "PodDisruptionBudget"), (SERVICE_MONITOR_GROUP_VERSION, "ServiceMonitor"))


def object_path(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection (no name) or of one object."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}" if namespace else base
    path += f"/{PLURALS.get(kind, kind.lower() + 's')}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class KubeClient:
    """A few typed REST verbs over `kubernetes.client.ApiClient`, for objects of any kind as plain dicts."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client

    @classmethod
    def from_environment(cls) -> KubeClient:
        """In-cluster credentials when in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config).

        KUBECONFIG is read now, not when `kubernetes` was imported (its own default is fixed at import).
        """
        from kubernetes import config  # noqa: PLC0415  (the loaders are only needed here)

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Iterable[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> JsonObject:
        """One API call; a non-2xx answer raises `ApiException` (its `.status` is the HTTP status)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, body, _ = self.api_client.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method, url, header_params=headers, body=body, _request_timeout=REQUEST_TIMEOUT
        )
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        text = data.decode("utf-8") if data else ""
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=response.reason, body=text)
        parsed = json.loads(text) if text else {}
        return parsed if isinstance(parsed, dict) else {"items": parsed}

    def get(self, path: str) -> JsonObject | None:
        """The object, or None if it does not exist."""
        try:
            return self.request("GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, *, label_selector: str | None = None) -> list[JsonObject]:
        query = [("labelSelector", label_selector)] if label_selector else []
        items = self.request("GET", path, query=query).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    def create(self, path: str, obj: Mapping[str, Any]) -> JsonObject:
        return self.request("POST", path, body=dict(obj))

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> JsonObject:
        return self.request("PATCH", path, body=dict(patch), content_type=MERGE_PATCH)

    def delete(self, path: str) -> None:
        try:
            self.request("DELETE", path, body={"propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def serves(self, group_version: str, plural: str) -> bool:
        """Whether the API serves a resource (discovery), e.g. ServiceMonitors once their CRD is installed."""
        try:
            listing = self.request("GET", f"/apis/{group_version}")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return any(entry.get("name") == plural for entry in listing.get("resources") or ())


def service_monitor_available(kube: KubeClient) -> bool:
    """Whether the Prometheus Operator's ServiceMonitor CRD is installed in the cluster."""
    return kube.serves(SERVICE_MONITOR_GROUP_VERSION, SERVICE_MONITOR_PLURAL)


def _path_of(obj: Mapping[str, Any], *, named: bool = True) -> str:
    meta = obj.get("metadata") or {}
    return object_path(
        obj["apiVersion"], obj["kind"], meta.get("namespace"), meta.get("name") if named else None
    )


def is_subset(wanted: Any, actual: Any) -> bool:
    """Whether `actual` already holds everything `wanted` says.

    Lists must match item by item (same length), but an item may hold more than wanted: the API server fills
    in defaults (a port's protocol, a probe's timeout).
    """
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and is_subset(value, actual[key]) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(wanted) == len(actual)
            and all(is_subset(w, a) for w, a in zip(wanted, actual, strict=True))
        )
    return bool(wanted == actual)


def _removals(last: Any, wanted: Any, actual: Any) -> Any:
    """A merge patch of `null`s for what the last apply set, this one does not, and is still there."""
    if not isinstance(last, Mapping) or not isinstance(actual, Mapping):
        return None
    wanted = wanted if isinstance(wanted, Mapping) else {}
    patch: JsonObject = {}
    for key, value in last.items():
        if key not in actual:
            continue
        if key not in wanted:
            patch[key] = None
        elif isinstance(value, Mapping):
            nested = _removals(value, wanted[key], actual[key])
            if nested:
                patch[key] = nested
    return patch


def _merge(base: JsonObject, extra: Mapping[str, Any]) -> JsonObject:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def with_last_applied(desired: Mapping[str, Any]) -> JsonObject:
    """The desired object, carrying its own JSON in the last-applied annotation."""
    obj = copy.deepcopy(dict(desired))
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
    annotations.pop(LAST_APPLIED_ANNOTATION, None)
    recorded = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    annotations[LAST_APPLIED_ANNOTATION] = recorded
    return obj


def plan_patch(desired: Mapping[str, Any], live: Mapping[str, Any]) -> JsonObject | None:
    """The merge patch that turns `live` into `desired` (None: nothing to do)."""
    wanted = with_last_applied(desired)
    raw_last = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED_ANNOTATION)
    try:
        last = json.loads(raw_last) if raw_last else {}
    except ValueError:
        last = {}  # someone edited the annotation: only the removals it would have told us are lost
    removals = _removals(last, wanted, live) or {}
    if not removals and is_subset(wanted, live):
        return None
    return _merge(removals, wanted)


@dataclasses.dataclass(frozen=True)
class Applied:
    action: Action
    obj: JsonObject

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))


def apply(kube: KubeClient, desired: Mapping[str, Any]) -> Applied:
    """Create the object, or patch it to match `desired`, or leave it as it is."""
    live = kube.get(_path_of(desired))
    if live is None:
        try:
            return Applied("created", kube.create(_path_of(desired, named=False), with_last_applied(desired)))
        except ApiException as exc:
            if exc.status != 409:
                raise
            live = kube.get(_path_of(desired))  # created meanwhile (another reconcile): patch it instead
            if live is None:
                raise
    patch = plan_patch(desired, live)
    if patch is None:
        return Applied("unchanged", live)
    return Applied("patched", kube.merge_patch(_path_of(desired), patch))


def owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(isinstance(ref, Mapping) and ref.get("uid") == owner_uid for ref in refs)


def prune(
    kube: KubeClient,
    *,
    name: str,
    namespace: str,
    owner_uid: str,
    keep: Iterable[Mapping[str, Any]],
    service_monitors: bool,
) -> list[str]:
    """Delete the optional children this owner made and no longer wants; returns their kinds."""
    kept = {(obj["apiVersion"], obj["kind"]) for obj in keep}
    pruned: list[str] = []
    for api_version, kind in OPTIONAL_CHILDREN:
        if (api_version, kind) in kept or (kind == "ServiceMonitor" and not service_monitors):
            continue
        path = object_path(api_version, kind, namespace, name)
        live = kube.get(path)
        if live is not None and owned_by(live, owner_uid):
            kube.delete(path)
            pruned.append(kind)
    return pruned


def proxy_path(namespace: str, name: str, subresource: str | None = None) -> str:
    return object_path(API_VERSION, KIND, namespace, name, subresource)
