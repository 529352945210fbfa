"""kmock's KubernetesEmulator, completed where kopf and kubectl need the behaviour of a real API server.

kmock 0.8 stores objects and serves discovery, but as a plain JSON store. `ClusterEmulator` keeps its
request parsing, discovery, error rendering and object store, and serves every object request itself:

- create fills `metadata.namespace/uid/resourceVersion/generation/creationTimestamp` (and `generateName`),
  and the object's `kind`/`apiVersion`; lists carry `kind`/`apiVersion` and a real `resourceVersion`;
- core discovery answers `groupVersion: "v1"` (vanilla says "/v1", which kubectl rejects);
- every write bumps one cluster-wide `resourceVersion`; `generation` moves only when something outside
  `metadata` and `status` changes (the spec), so `status.observedGeneration` means something;
- a watch honours `?resourceVersion=` (replays only what happened after it, as the real server does;
  vanilla replays every object, so kopf acts twice on a stale copy), `labelSelector`, `fieldSelector` and
  `timeoutSeconds`, and streams with `Content-Type: application/json`;
- a JSON patch whose `test` fails answers 422 (vanilla: 500, which kopf retries nine times), a stale
  `metadata.resourceVersion` in a patch or PUT answers 409, PUT replaces the object (vanilla: unrouted);
- `status` is a separate subresource: writes to the object ignore `status`, writes to `/status` change
  nothing else, and create drops `status` (as the real server does for such resources);
- a no-op write changes nothing (no new resourceVersion, no watch event), as on a real server;
- finalizers hold a deletion (deletionTimestamp) until they are removed;
- garbage collection: an object whose every owner (by `ownerReferences[].uid`) is gone is deleted, as the
  cluster's garbage collector does in background propagation (`propagationPolicy=Orphan` orphans instead);
- creating (or applying) a CustomResourceDefinition registers its resources, and `load_crd_file()` does so
  from the project's CRD file, so that file stays the single source of the schema's names;
- namespaces are objects (`/api/v1/namespaces[/NAME]`, which kmock's path parser cannot read), `default`,
  `kube-system` and `kube-public` exist, a namespaced object needs its namespace (404 otherwise, which is
  also what kubectl checks after a 404), and deleting a namespace deletes what is in it.

Not emulated: schema/CEL validation and defaulting (the operator's model repeats both), strategic merge
patch semantics (treated as a JSON merge patch, `$`-directives dropped), server-side apply, protobuf,
pagination, server-side printing (`kubectl get` shows NAME and AGE, not the CRD's printer columns),
bookmarks, 410 Gone (the event history is kept whole), RBAC and admission.
Every mutation is synchronous code on the emulator's event loop, so no lock is needed around the store.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import json
import re
import secrets
import string
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp.web
import jsonpatch
import jsonpointer
import kmock
import yaml

JsonObject = dict[str, Any]
T = TypeVar("T")
ObjectKey = tuple[kmock.resource, str | None, str]

CRD_RESOURCE = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES = kmock.resource("", "v1", "namespaces")
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public")
# kmock's path parser reads "namespaces" as the namespace marker, so it cannot parse these paths itself.
_NAMESPACE_PATH = re.compile(
    r"^/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<subresource>status|finalize))?)?/?$"
)
ALL_VERBS = frozenset({"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})
# How often an idle watch checks whether its client went away (aiohttp does not cancel the handler).
WATCH_LIVENESS_S = 0.5
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_LABEL_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)
_FIELD_REQUIREMENT = re.compile(r"^\s*(?P<field>[A-Za-z.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*$")


def api_error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """A Kubernetes `Status` failure, with the reason names client-go and kubectl understand."""
    return kmock.KubernetesError(
        status=status, reason=reason, message=message, details=details or {"causes": []}
    )


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)


def _without_directives(patch: Any) -> Any:
    """Strategic-merge directives (`$patch`, `$setElementOrder/...`) have no merge-patch meaning."""
    if isinstance(patch, Mapping):
        return {k: _without_directives(v) for k, v in patch.items() if not str(k).startswith("$")}
    return patch


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, `null` deletes, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclasses.dataclass(frozen=True)
class _Requirement:
    """One selector requirement: `key` must (`wanted`) or must not have one of `values` (None: any value)."""

    key: str
    values: frozenset[str] | None
    wanted: bool

    def holds(self, found: Mapping[str, Any]) -> bool:
        present = self.key in found if self.values is None else found.get(self.key) in self.values
        return present == self.wanted


@dataclasses.dataclass(frozen=True)
class Selector:
    requirements: tuple[_Requirement, ...] = ()

    def __call__(self, found: Mapping[str, Any]) -> bool:
        return all(requirement.holds(found) for requirement in self.requirements)


def label_selector(text: str) -> Selector:
    """Parse `a=b,c!=d,e,!f,g in (h,i),j notin (k)` into a predicate over an object's labels."""
    requirements: list[_Requirement] = []
    for part in re.split(r",(?![^(]*\))", text):
        if not part.strip():
            continue
        match = _LABEL_REQUIREMENT.match(part)
        if match is None or (match["neg"] and (match["op"] or match["setop"])):
            raise api_error(400, "BadRequest", f"unable to parse requirement: {part!r}")
        key = match["key"]
        if match["op"]:
            requirements.append(_Requirement(key, frozenset({match["value"]}), match["op"] != "!="))
        elif match["setop"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(_Requirement(key, values, match["setop"] == "in"))
        else:
            requirements.append(_Requirement(key, None, not match["neg"]))
    return Selector(tuple(requirements))


def field_selector(text: str) -> Selector:
    """The two fields every resource supports, `metadata.name` and `metadata.namespace`, over `metadata`."""
    requirements: list[_Requirement] = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _FIELD_REQUIREMENT.match(part)
        if match is None or match["field"] not in ("metadata.name", "metadata.namespace"):
            raise api_error(400, "BadRequest", f"field label not supported: {part!r}")
        field = match["field"].split(".")[1]
        requirements.append(_Requirement(field, frozenset({match["value"]}), match["op"] != "!="))
    return Selector(tuple(requirements))


@dataclasses.dataclass(eq=False)
class _Watch:
    """One open watch stream: what it selects and where its events go."""

    resource: kmock.resource
    namespace: str | None
    name: str | None
    labels: Selector
    fields: Selector
    queue: asyncio.Queue[JsonObject] = dataclasses.field(default_factory=asyncio.Queue)

    def wants(self, resource: kmock.resource, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        return bool(
            resource == self.resource
            and (self.namespace is None or meta.get("namespace") == self.namespace)
            and (self.name is None or meta.get("name") == self.name)
            and self.labels(meta.get("labels") or {})
            and self.fields(meta)
        )


class ClusterEmulator(kmock.KubernetesEmulator):
    """An in-memory API server good enough for kopf and the real kubectl (see the module docstring)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()
        self._revision = 0
        self._history: list[tuple[int, kmock.resource, JsonObject]] = []
        self._watches: set[_Watch] = set()
        for namespace in INITIAL_NAMESPACES:
            self.create_object(NAMESPACES, {"metadata": {"name": namespace}})

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        match = _NAMESPACE_PATH.match(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        request = kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            body=body,
            text=body.decode("utf-8", "replace"),
            data=data,
            resource=NAMESPACES,
            name=match["name"],
            subresource=match["subresource"],
        )
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as exc:  # rendered as a Status, as kmock does for every other path
            return await self._render_error(exc)

    # -- routing ------------------------------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or resource.plural is None or resource.version is None:
            return await super()._handle(request)  # discovery and non-Kubernetes paths
        if resource not in self.resources:
            raise api_error(404, "NotFound", f"the server could not find the requested resource ({resource})")
        info = self.resources[resource]
        if request.subresource is not None and (
            request.subresource != "status" or "status" not in info.subresources
        ):
            raise api_error(404, "NotFound", f"subresource {request.subresource!r} is not served here")
        method, name = request.method.upper(), request.name
        if method == "GET" and request.params.get("watch") in ("true", "1"):
            return await self._watch(request, resource)
        status = 200
        if method == "GET" and name is None:
            payload = self._list(request, resource, info)
        elif method == "GET" and name is not None:
            payload = self._require((resource, request.namespace, name))
        elif method == "POST" and name is None:
            payload, status = self._create(request, resource, info), 201
        elif method == "PATCH" and name is not None:
            payload = self._patch(request, (resource, request.namespace, name), info)
        elif method == "PUT" and name is not None:
            payload = self._replace(request, (resource, request.namespace, name), info)
        elif method == "DELETE" and name is not None:
            payload = self._delete_request(request, (resource, request.namespace, name))
        else:
            raise api_error(405, "MethodNotAllowed", f"{method} is not supported on {request.url.path}")
        return aiohttp.web.json_response(payload, status=status)

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        payload = await super()._serve_version(request)
        if isinstance(payload, dict):
            payload["groupVersion"] = str(payload["groupVersion"]).lstrip("/")  # core: "v1", not "/v1"
            for entry in payload.get("resources", []):
                if "/" in entry["name"]:  # subresources have neither short names nor categories
                    entry.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return payload

    # -- reading ------------------------------------------------------------------------------------------

    def live(self, key: ObjectKey) -> JsonObject | None:
        """A copy of the object as it is now, or None if it does not exist."""
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def _require(self, key: ObjectKey) -> JsonObject:
        obj = self.live(key)
        if obj is None:
            resource, _, name = key
            raise api_error(
                404, "NotFound", f'{resource.plural} "{name}" not found', name=name, kind=resource.plural
            )
        return obj

    def _live_items(self) -> Iterator[tuple[ObjectKey, JsonObject]]:
        for key, obj in list(self.objects.items()):
            if not obj.deleted:
                yield key, obj.raw

    def _list(self, request: kmock.Request, resource: kmock.resource, info: kmock.ResourceInfo) -> JsonObject:
        selects = self._selection(request, resource)
        items = [copy.deepcopy(obj) for (res, _, _), obj in self._live_items() if selects.wants(res, obj)]
        return {
            "apiVersion": _api_version(resource),
            "kind": f"{info.kind or resource.plural}List",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": items,
        }

    def _selection(self, request: kmock.Request, resource: kmock.resource) -> _Watch:
        return _Watch(
            resource=resource,
            namespace=request.namespace,
            name=request.name,
            labels=label_selector(request.params.get("labelSelector", "")),
            fields=field_selector(request.params.get("fieldSelector", "")),
        )

    async def _watch(self, request: kmock.Request, resource: kmock.resource) -> aiohttp.web.StreamResponse:
        watch = self._selection(request, resource)
        since = request.params.get("resourceVersion", "")
        if since in ("", "0"):  # "any" / "most recent": the current state as synthetic ADDED events
            backlog = [
                {"type": "ADDED", "object": copy.deepcopy(obj)}
                for (res, _, _), obj in self._live_items()
                if watch.wants(res, obj)
            ]
        else:  # exactly what happened after that version, as the real server's watch cache does
            if not since.isdigit():
                raise api_error(400, "BadRequest", f"invalid resourceVersion {since!r}")
            backlog = [
                copy.deepcopy(event)
                for revision, res, event in self._history
                if revision > int(since) and watch.wants(res, event["object"])
            ]
        for event in backlog:
            watch.queue.put_nowait(event)
        self._watches.add(watch)  # no await since the backlog was taken: no event can fall in between
        raw = request._raw_request
        assert raw is not None  # always set for requests that came over HTTP
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(raw)
            timeout = float(request.params["timeoutSeconds"]) if "timeoutSeconds" in request.params else None
            async with asyncio.timeout(timeout):
                while raw.transport is not None and not raw.transport.is_closing():
                    try:
                        event = await asyncio.wait_for(watch.queue.get(), WATCH_LIVENESS_S)
                    except TimeoutError:
                        continue
                    await response.write(json.dumps(event).encode() + b"\n")
        except (TimeoutError, ConnectionError):
            pass  # the server-side timeout ended the stream, or the client went away
        finally:
            self._watches.discard(watch)
        if raw.transport is not None and not raw.transport.is_closing():
            await response.write_eof()
        return response

    # -- writing ------------------------------------------------------------------------------------------

    def _emit(self, resource: kmock.resource, kind: str, obj: JsonObject) -> None:
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self._history.append((int(obj["metadata"]["resourceVersion"]), resource, event))
        for watch in list(self._watches):
            if watch.wants(resource, obj):
                watch.queue.put_nowait(copy.deepcopy(event))

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _store(self, key: ObjectKey, obj: JsonObject) -> None:
        if key in self.objects:
            self.objects[key].history.append(copy.deepcopy(obj))
        else:
            self.objects[key] = copy.deepcopy(obj)

    def create_object(self, resource: kmock.resource, obj: Mapping[str, Any]) -> JsonObject:
        """Create as `POST` does; for seeding from Python on the emulator's own loop."""
        info = self.resources[resource]
        namespace = obj.get("metadata", {}).get("namespace") if info.namespaced else None
        return self._insert(resource, info, namespace, copy.deepcopy(dict(obj)), dry_run=False)

    def _create(
        self, request: kmock.Request, resource: kmock.resource, info: kmock.ResourceInfo
    ) -> JsonObject:
        body = request.data
        if not isinstance(body, dict):
            raise api_error(415, "UnsupportedMediaType", "the body must be a JSON object")
        meta = body.setdefault("metadata", {})
        namespace: str | None = None
        if info.namespaced:
            namespace = request.namespace or meta.get("namespace")
            if not namespace:
                raise api_error(400, "BadRequest", "a namespaced object needs a namespace")
            if meta.get("namespace") not in (None, namespace):
                raise api_error(400, "BadRequest", "the namespace of the object does not match the URL's")
        return self._insert(resource, info, namespace, body, dry_run=bool(request.params.get("dryRun")))

    def _insert(
        self,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
        obj: JsonObject,
        *,
        dry_run: bool,
    ) -> JsonObject:
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name and meta.get("generateName"):
            suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
            name = f"{meta['generateName']}{suffix}"
        if not name:
            raise api_error(422, "Invalid", "metadata.name or metadata.generateName is required")
        key: ObjectKey = (resource, namespace, name)
        if namespace is not None and self.live((NAMESPACES, None, namespace)) is None:
            raise api_error(
                404, "NotFound", f'namespaces "{namespace}" not found', name=namespace, kind="namespaces"
            )
        if self.live(key) is not None:
            raise api_error(409, "AlreadyExists", f'{resource.plural} "{name}" already exists', name=name)
        obj["apiVersion"] = _api_version(resource)
        obj["kind"] = info.kind or obj.get("kind")
        if "status" in info.subresources:
            obj.pop("status", None)
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta.update(name=name, uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now())
        if namespace is not None:
            meta["namespace"] = namespace
        if dry_run:
            meta["resourceVersion"] = str(self._revision)
            return obj
        meta["resourceVersion"] = self._next_revision()
        self._store(key, obj)
        self._emit(resource, "ADDED", obj)
        if resource == CRD_RESOURCE:
            self.register_crd(obj)
        self._collect_garbage()  # an object created for an owner that is already gone goes too
        return obj

    def _patch(self, request: kmock.Request, key: ObjectKey, info: kmock.ResourceInfo) -> JsonObject:
        old = self._require(key)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        patch = request.data
        if content_type == JSON_PATCH and isinstance(patch, list):
            try:
                new = jsonpatch.apply_patch(old, patch, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise api_error(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from None
        elif content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH) and isinstance(patch, dict):
            new = merge_patch(old, _without_directives(patch))
        else:
            raise api_error(415, "UnsupportedMediaType", f"unsupported patch: {content_type or 'no type'}")
        return self._update(key, info, old, new, request)

    def _replace(self, request: kmock.Request, key: ObjectKey, info: kmock.ResourceInfo) -> JsonObject:
        old = self._require(key)
        new = request.data
        if not isinstance(new, dict):
            raise api_error(415, "UnsupportedMediaType", "the body must be a JSON object")
        if new.get("metadata", {}).get("name") not in (None, key[2]):
            raise api_error(400, "BadRequest", "the name of the object does not match the URL's")
        return self._update(key, info, old, new, request)

    def _update(
        self,
        key: ObjectKey,
        info: kmock.ResourceInfo,
        old: JsonObject,
        new: JsonObject,
        request: kmock.Request,
    ) -> JsonObject:
        resource = key[0]
        sent_version = new.get("metadata", {}).get("resourceVersion")
        if sent_version not in (None, old["metadata"]["resourceVersion"]):
            raise api_error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource.plural} "{key[2]}": the object has been'
                " modified; please apply your changes to the latest version and try again",
                name=key[2],
            )
        if request.subresource == "status":  # the status subresource changes the status and nothing else
            candidate = copy.deepcopy(old)
            candidate["status"] = new.get("status")
        else:
            candidate = copy.deepcopy(new)
            candidate["metadata"] = dict(candidate.get("metadata") or {})
            if "status" in info.subresources:
                candidate["status"] = old.get("status")
        if candidate.get("status") is None:
            candidate.pop("status", None)
        meta, old_meta = candidate["metadata"], old["metadata"]
        for field in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation"):
            if field in old_meta:
                meta[field] = old_meta[field]
        if old_meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = old_meta["deletionTimestamp"]
        candidate["apiVersion"], candidate["kind"] = old["apiVersion"], old["kind"]
        if candidate == old or request.params.get("dryRun"):
            return candidate  # a no-op write: no new version, no event
        if _spec_of(candidate) != _spec_of(old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_revision()
        self._store(key, candidate)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(key, candidate)  # the last finalizer is gone: so is the object
            self._collect_garbage()
            return candidate
        self._emit(resource, "MODIFIED", candidate)
        if resource == CRD_RESOURCE:
            self.register_crd(candidate)
        return candidate

    def _delete_request(self, request: kmock.Request, key: ObjectKey) -> JsonObject:
        obj = self._require(key)
        if request.params.get("dryRun"):
            return obj
        body = request.data if isinstance(request.data, dict) else {}
        policy = request.params.get("propagationPolicy") or body.get("propagationPolicy")
        if policy == "Orphan":
            self._orphan_dependents(obj["metadata"]["uid"])
        if key[0] == NAMESPACES:  # the namespace controller, in one step: everything in it goes first
            for inner, _ in list(self._live_items()):
                if inner[1] == key[2]:
                    self._delete(inner)
        deleted = self._delete(key)
        self._collect_garbage()
        return deleted

    def _delete(self, key: ObjectKey) -> JsonObject:
        obj = self._require(key)
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta.update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
                meta["resourceVersion"] = self._next_revision()
                self._store(key, obj)
                self._emit(key[0], "MODIFIED", obj)
            return obj
        meta["resourceVersion"] = self._next_revision()
        self._remove(key, obj)
        return obj

    def _remove(self, key: ObjectKey, obj: JsonObject) -> None:
        self.objects[key].delete()
        self._emit(key[0], "DELETED", obj)

    def _orphan_dependents(self, uid: str) -> None:
        for key, obj in list(self._live_items()):
            refs = obj.get("metadata", {}).get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in refs):
                kept = [ref for ref in refs if ref.get("uid") != uid]
                patched = merge_patch(obj, {"metadata": {"ownerReferences": kept or None}})
                self._write_internal(key, patched)

    def _collect_garbage(self) -> None:
        """Delete every object whose owners are all gone; drop the references to gone owners of the rest."""
        changed = True
        while changed:
            changed = False
            alive = {obj["metadata"].get("uid") for _, obj in self._live_items()}
            for key, _ in list(self._live_items()):
                obj = self.live(key)
                if obj is None:
                    continue  # deleted earlier in this pass
                meta = obj.get("metadata", {})
                refs = meta.get("ownerReferences") or []
                kept = [ref for ref in refs if ref.get("uid") in alive]
                if not refs or len(kept) == len(refs):
                    continue
                if not kept and not meta.get("deletionTimestamp"):
                    self._delete(key)
                    changed = True
                elif kept:
                    self._write_internal(key, merge_patch(obj, {"metadata": {"ownerReferences": kept}}))
                    changed = True

    def _write_internal(self, key: ObjectKey, new: JsonObject) -> None:
        new = copy.deepcopy(new)
        new["metadata"]["resourceVersion"] = self._next_revision()
        self._store(key, new)
        self._emit(key[0], "MODIFIED", new)

    # -- custom resources ---------------------------------------------------------------------------------

    def register_crd(self, crd: Mapping[str, Any]) -> list[kmock.resource]:
        """Serve the resources a CustomResourceDefinition declares (every served version)."""
        spec = crd["spec"]
        names = spec["names"]
        registered = []
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            resource = kmock.resource(spec["group"], version["name"], names["plural"])
            self.resources[resource] = kmock.ResourceInfo(
                kind=names["kind"],
                singular=names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs=set(ALL_VERBS),
                shortnames=set(names.get("shortNames", [])),
                categories=set(names.get("categories", [])),
                subresources=set(version.get("subresources") or {}),
            )
            registered.append(resource)
        return registered

    def load_crd_file(self, path: Path) -> list[kmock.resource]:
        """Register and store every CRD in a YAML file, as if it had been applied."""
        registered: list[kmock.resource] = []
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                registered += self.register_crd(doc)
                self.create_object(CRD_RESOURCE, doc)
        return registered


def _spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What `generation` tracks: everything but metadata and status."""
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


class EmulatorThread:
    """A `ClusterEmulator` served on 127.0.0.1 from its own thread and event loop.

    Its own loop keeps it answering while the test's loop, kopf's thread or a `kubectl` subprocess block.
    """

    def __init__(self, crd_files: tuple[Path, ...] = ()) -> None:
        self._crd_files = crd_files
        self._thread = threading.Thread(target=self._main, name="cluster-emulator", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.emulator: ClusterEmulator | None = None
        self.url = ""

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("the cluster emulator did not start") from self._error
        if not self.url:
            raise RuntimeError("the cluster emulator did not start within 30 s")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def call(self, fn: Callable[[ClusterEmulator], T]) -> T:
        """Run `fn(emulator)` on the emulator's loop (its store is not thread-safe) and return the result."""
        assert self._loop is not None
        assert self.emulator is not None
        emulator = self.emulator

        async def run() -> T:
            return fn(emulator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with ClusterEmulator() as emulator, kmock.Server(emulator, host="127.0.0.1") as server:
            for path in self._crd_files:
                emulator.load_crd_file(path)
            self.emulator = emulator
            self.url = f"http://127.0.0.1:{server.port}"
            self._ready.set()
            await self._stop.wait()
