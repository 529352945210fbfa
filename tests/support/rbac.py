"""Kubernetes RBAC, offline: what a request to the API server needs, and whether rendered rules grant it.

`attributes()` turns one HTTP request (method, path, query) into the authorizer's view of it, as the API
server's request-info resolver does: the API group, resource (with `/subresource`), namespace, name and
verb (`watch`, `list`, `get`, `create`, `update`, `patch`, `delete`, `deletecollection`). Discovery paths
(`/api`, `/apis`, `/apis/GROUP[/VERSION]`, `/version`, ...) are non-resource requests, which any authenticated
user may make
(the built-in `system:discovery` role), so they need no grant from the chart.

`Authorizer` holds the Roles, ClusterRoles and bindings a chart renders and answers, for one ServiceAccount,
whether a request is allowed: ClusterRoles bound by ClusterRoleBindings apply everywhere, Roles (or
ClusterRoles) bound by RoleBindings only in the binding's namespace, as the RBAC authorizer decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The verbs of a resource request, by HTTP method (GET and DELETE depend on whether a name is given).
VERB_BY_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch"}
WATCH_VALUES = ("true", "1")
# Subresources of the core `namespaces` resource: /api/v1/namespaces/NAME/status is not a namespaced `status`.
NAMESPACE_SUBRESOURCES = ("status", "finalize")
WILDCARD = "*"


@dataclass(frozen=True, order=True)
class Attributes:
    """The authorizer's view of one request: a resource request, or a non-resource one (`path` only)."""

    verb: str
    group: str = ""
    resource: str = ""  # "mcpproxies" or "mcpproxies/status"; empty for non-resource requests
    namespace: str | None = None
    name: str | None = None
    path: str = ""

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)

    def brief(self) -> str:
        """`verb group/resource` (what a rule has to name), for messages."""
        if not self.is_resource:
            return f"{self.verb} {self.path} (non-resource)"
        group = self.group or "core"
        return f"{self.verb} {group}/{self.resource}"


def attributes(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """What the API server's authorizer sees for this request (see the module docstring)."""
    method = method.upper()
    parts = [segment for segment in path.split("/") if segment]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        rest = []
    if not rest:  # /api, /api/v1, /apis, /apis/GROUP, /apis/GROUP/VERSION, /version, /openapi/...
        return Attributes(verb=method.lower(), path=path)
    namespace: str | None = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (group == "" and len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES)
    ):
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if group == "" and resource.startswith("namespaces") and name is not None:
        namespace = name  # a namespace's own requests are authorized in that namespace, as the server does
    if method in ("GET", "HEAD"):
        watch = query.get("watch") in WATCH_VALUES
        verb = "watch" if watch else "get" if name is not None else "list"
    elif method == "DELETE":
        verb = "delete" if name is not None else "deletecollection"
    elif method in VERB_BY_METHOD:
        verb = VERB_BY_METHOD[method]
    else:
        verb = method.lower()
    return Attributes(verb=verb, group=group, resource=resource, namespace=namespace, name=name, path=path)


@dataclass(frozen=True)
class Rule:
    """One PolicyRule of a Role or ClusterRole."""

    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: frozenset[str] = frozenset()
    origin: str = ""  # "ClusterRole/NAME" or "Role/NAMESPACE/NAME", for messages

    @classmethod
    def of(cls, rule: Mapping[str, Any], origin: str) -> Rule:
        return cls(
            api_groups=frozenset(rule.get("apiGroups") or ()),
            resources=frozenset(rule.get("resources") or ()),
            verbs=frozenset(rule.get("verbs") or ()),
            resource_names=frozenset(rule.get("resourceNames") or ()),
            non_resource_urls=frozenset(rule.get("nonResourceURLs") or ()),
            origin=origin,
        )

    def allows(self, request: Attributes) -> bool:
        if not ({request.verb, WILDCARD} & self.verbs):
            return False
        if not request.is_resource:
            return any(
                url == request.path or (url.endswith(WILDCARD) and request.path.startswith(url[:-1]))
                for url in self.non_resource_urls
            )
        if not ({request.group, WILDCARD} & self.api_groups):
            return False
        base = request.resource.split("/", 1)[0]
        wanted = {request.resource, WILDCARD}
        if "/" in request.resource:
            wanted.add(f"{base}/{WILDCARD}")  # "pods/*": every subresource of pods
        else:
            wanted.add(f"{WILDCARD}/{WILDCARD}")
        if not (wanted & self.resources):
            return False
        return not self.resource_names or request.name in self.resource_names

    def grants(self) -> Iterable[tuple[str, str, str]]:
        """Every (group, resource, verb) this rule names, wildcards as written."""
        for group in sorted(self.api_groups):
            for resource in sorted(self.resources):
                for verb in sorted(self.verbs):
                    yield group, resource, verb


@dataclass
class Authorizer:
    """The RBAC decision for one subject, over the Roles, ClusterRoles and bindings given."""

    subject_namespace: str
    subject_name: str
    cluster_rules: list[Rule] = field(default_factory=list)
    namespace_rules: dict[str, list[Rule]] = field(default_factory=dict)

    @classmethod
    def from_objects(cls, objs: Iterable[Mapping[str, Any]], service_account: tuple[str, str]) -> Authorizer:
        """Bind what the objects bind to this ServiceAccount (namespace, name)."""
        objs = list(objs)
        namespace, name = service_account
        authorizer = cls(subject_namespace=namespace, subject_name=name)
        cluster_roles = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "ClusterRole"}
        roles = {
            (o["metadata"].get("namespace"), o["metadata"]["name"]): o
            for o in objs
            if o.get("kind") == "Role"
        }
        for binding in objs:
            kind = binding.get("kind")
            if kind not in ("ClusterRoleBinding", "RoleBinding") or not authorizer._binds_me(binding):
                continue
            ref = binding["roleRef"]
            where = binding["metadata"].get("namespace") if kind == "RoleBinding" else None
            if ref["kind"] == "ClusterRole":
                role = cluster_roles.get(ref["name"])
                origin = f"ClusterRole/{ref['name']}"
            else:
                role = roles.get((where, ref["name"]))
                origin = f"Role/{where}/{ref['name']}"
            if role is None:
                raise AssertionError(f"{kind} {binding['metadata']['name']} refers to a missing {origin}")
            rules = [Rule.of(rule, origin) for rule in role.get("rules") or ()]
            if where is None:
                authorizer.cluster_rules += rules
            else:
                authorizer.namespace_rules.setdefault(where, []).extend(rules)
        return authorizer

    def _binds_me(self, binding: Mapping[str, Any]) -> bool:
        for subject in binding.get("subjects") or ():
            if (
                subject.get("kind") == "ServiceAccount"
                and subject.get("name") == self.subject_name
                and subject.get("namespace", binding["metadata"].get("namespace")) == self.subject_namespace
            ):
                return True
        return False

    def rules(self) -> list[Rule]:
        return [*self.cluster_rules, *(r for rules in self.namespace_rules.values() for r in rules)]

    def allowing(self, request: Attributes) -> Rule | None:
        """The first rule that allows the request, or None (denied)."""
        candidates = list(self.cluster_rules)
        if request.namespace is not None:
            candidates += self.namespace_rules.get(request.namespace, [])
        return next((rule for rule in candidates if rule.allows(request)), None)


def unused_grants(rules: Sequence[Rule], used: Iterable[Attributes]) -> list[tuple[str, str, str]]:
    """Granted (group, resource, verb) triples that no request used (information: room to tighten)."""
    seen = {(a.group, a.resource, a.verb) for a in used if a.is_resource}
    return sorted({grant for rule in rules for grant in rule.grants() if grant not in seen})


def wildcards(rules: Sequence[Rule]) -> list[str]:
    """Rules that grant with `*` (any group, resource or verb): a least-privilege chart has none."""
    found = []
    for rule in rules:
        if WILDCARD in rule.api_groups | rule.verbs or any(WILDCARD in r for r in rule.resources):
            found.append(
                f"{rule.origin}: apiGroups={sorted(rule.api_groups)} resources={sorted(rule.resources)} "
                f"verbs={sorted(rule.verbs)}"
            )
    return found
