"""The MCPProxy CRD: its shape, every example against its openAPIV3Schema (jsonschema) and CEL rules (celpy).

No API server enforces the schema in these tests, so this file does what kube-apiserver would: apply the
schema's
defaults, reject unknown fields (kubectl's default strict field validation), check the structural schema with
jsonschema, then evaluate every `x-kubernetes-validations` rule where it sits. The operator's own model
(`parse_spec`) must agree with the CRD on every example.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from mcplane_operator.model import SpecError, parse_spec
from mcplane_operator.render import RenderError, render

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "manifests" / "crds" / "mcpproxies.mcplane.dev.yaml"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "manifests" / "examples" / "invalid").glob("*.yaml"))
BACKEND_KINDS = ["http", "sse", "stdio", "sqs", "sns-sqs", "webhook"]


def load_crd() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(CRD_PATH.read_text()) if d]
    assert len(docs) == 1
    crd: dict[str, Any] = docs[0]
    return crd


CRD = load_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def expected_message(path: Path) -> str:
    match = re.search(r"^# expect: (.+)$", path.read_text(), re.MULTILINE)
    assert match, f"{path.name} lacks an `# expect:` line"
    return match.group(1).strip()


# --- an API server's validation, in miniature -------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], data: Any) -> Any:
    """Structural-schema defaulting: a missing property with a `default` gets it, recursively."""
    data = copy.deepcopy(data)
    _default_into(schema, data)
    return data


def _default_into(schema: dict[str, Any], data: Any) -> None:
    if isinstance(data, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in data and "default" in sub:
                data[key] = copy.deepcopy(sub["default"])
            if key in data:
                _default_into(sub, data[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for value in data.values():
                _default_into(extra, value)
    elif isinstance(data, list) and "items" in schema:
        for item in data:
            _default_into(schema["items"], item)


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields rejected, as strict field validation does (kubectl's default)."""
    schema = copy.deepcopy(schema)

    def close(node: dict[str, Any]) -> None:
        preserve = node.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in node and "additionalProperties" not in node and not preserve:
            node["additionalProperties"] = False
        for sub in node.get("properties", {}).values():
            close(sub)
        if isinstance(node.get("additionalProperties"), dict):
            close(node["additionalProperties"])
        if "items" in node:
            close(node["items"])

    close(schema)
    return schema


VALIDATOR = jsonschema.Draft7Validator(closed(SCHEMA), format_checker=jsonschema.FormatChecker())
CEL_ENV = celpy.Environment()


def schema_errors(resource: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in VALIDATOR.iter_errors(resource)
    ]


def rules_with_data(schema: dict[str, Any], data: Any, path: str = "") -> Iterator[tuple[str, str, str, Any]]:
    """(path, rule, message, self) for every CEL rule whose node is present in `data`."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule["rule"], rule.get("message", rule["rule"]), data
    if isinstance(data, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in data:
                yield from rules_with_data(sub, data[key], f"{path}.{key}" if path else key)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in data.items():
                yield from rules_with_data(extra, value, f"{path}.{key}")
    elif isinstance(data, list) and "items" in schema:
        for index, item in enumerate(data):
            yield from rules_with_data(schema["items"], item, f"{path}[{index}]")


def evaluate(rule: str, value: Any) -> bool:
    """A CEL rule with `self` bound to a JSON value; an evaluation error is a failure, as in Kubernetes."""
    program = CEL_ENV.program(CEL_ENV.compile(rule))
    try:
        result = program.evaluate({"self": json_to_cel(value)})
    except CELEvalError:
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def cel_errors(resource: dict[str, Any]) -> list[str]:
    defaulted = apply_defaults(SCHEMA, resource)
    return [
        f"{path or '(root)'}: {message}"
        for path, rule, message, value in rules_with_data(SCHEMA, defaulted)
        if not evaluate(rule, value)
    ]


def all_errors(resource: dict[str, Any]) -> list[str]:
    return schema_errors(resource) + cel_errors(resource)


# --- the CRD's shape --------------------------------------------------------------------------------------


def test_crd_identity() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == "mcpproxies.mcplane.dev"
    spec = CRD["spec"]
    assert spec["group"] == "mcplane.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "MCPProxy",
        "listKind": "MCPProxyList",
        "plural": "mcpproxies",
        "singular": "mcpproxy",
        "shortNames": ["mcpp"],
        "categories": ["mcplane"],
    }
    assert [v["name"] for v in spec["versions"]] == ["v1alpha1"]
    assert VERSION["served"]
    assert VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}


def test_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(CRD, "1.31.0", strict=True)


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Backend", "Sessions", "URL", "Age", "Message"]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Backend"]["jsonPath"] == ".spec.backend.kind"
    assert columns["Sessions"] == {
        **columns["Sessions"],
        "type": "integer",
        "jsonPath": ".status.activeSessions",
    }
    assert columns["URL"]["jsonPath"] == ".status.url"
    assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    assert columns["Message"]["priority"] == 1
    assert columns["Message"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].message'
    assert all(c.get("priority", 0) == 0 for name, c in columns.items() if name != "Message")


def test_status_schema_is_conditions_not_phase() -> None:
    status = SCHEMA["properties"]["status"]["properties"]
    assert set(status) == {"observedGeneration", "conditions", "readyReplicas", "url", "activeSessions"}
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert item["properties"]["type"]["enum"] == ["Ready", "Progressing", "Degraded"]
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert set(item["required"]) == {"type", "status", "reason", "message", "lastTransitionTime"}


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


def test_every_field_has_a_description() -> None:
    missing = [
        path for path, node in walk(SCHEMA) if not path.endswith((".*", "[]")) and not node.get("description")
    ]
    assert missing == []


def test_schema_is_structural() -> None:
    """Every node has a type (or is int-or-string / preserve-unknown); properties only on objects."""
    for path, node in walk(SCHEMA):
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), path
        if "properties" in node:
            assert node["type"] == "object", path
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: lists need maxItems (CEL cost budget)"
        if (
            node.get("type") == "string"
            and "enum" not in node
            and not path.startswith((".apiVersion", ".kind"))
        ):
            assert "maxLength" in node or "format" in node, (
                f"{path}: strings need maxLength (CEL cost budget)"
            )


def test_spec_fields() -> None:
    spec = SCHEMA["properties"]["spec"]
    assert spec["required"] == ["backend"]
    assert set(spec["properties"]) == {
        "backend",
        "server",
        "sessions",
        "auth",
        "replicas",
        "sidecar",
        "serviceAccountName",
        "imagePullSecrets",
        "nodeSelector",
        "tolerations",
        "affinity",
        "service",
        "metrics",
        "podDisruptionBudget",
    }
    assert spec["properties"]["backend"]["properties"]["kind"]["enum"] == BACKEND_KINDS
    assert "default" not in spec["properties"]["replicas"]  # omitted = left to an HPA


def test_every_cel_rule_compiles() -> None:
    rules = [r["rule"] for _, node in walk(SCHEMA) for r in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 15
    for rule in rules:
        CEL_ENV.compile(rule)


# --- examples ---------------------------------------------------------------------------------------------


def test_one_example_per_backend_kind_and_one_with_a_server_container() -> None:
    kinds = {load(p)["spec"]["backend"]["kind"] for p in EXAMPLES}
    assert kinds == set(BACKEND_KINDS)
    assert any("server" in load(p)["spec"] for p in EXAMPLES)
    assert len(INVALID) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid(path: Path) -> None:
    resource = load(path)
    assert resource["apiVersion"] == "mcplane.dev/v1alpha1"
    assert resource["kind"] == "MCPProxy"
    assert all_errors(resource) == []
    parse_spec(resource["spec"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_model_defaults_match_crd_defaults(path: Path) -> None:
    """What the API server stores (defaults filled in) parses to the same spec as what the user wrote."""
    spec = load(path)["spec"]
    defaulted = apply_defaults(SCHEMA["properties"]["spec"], spec)
    assert defaulted != spec  # the CRD does default something
    assert parse_spec(defaulted) == parse_spec(spec)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_fails_with_its_message(path: Path) -> None:
    expected = expected_message(path)
    errors = all_errors(load(path))
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_is_refused_by_the_operator_too(path: Path) -> None:
    with pytest.raises((SpecError, RenderError)):
        render(load(path))


# --- every CEL rule, triggered one at a time, with the operator's model agreeing --------------------------

HTTP_BACKEND: dict[str, Any] = {"kind": "http", "url": "http://tools:8000/mcp"}
BASE: dict[str, Any] = {"backend": HTTP_BACKEND}
SQS: dict[str, Any] = {
    "kind": "sqs",
    "aws": {"region": "us-east-1"},
    "sqs": {"requestQueueUrl": "https://sqs.local/q"},
}
SERVER: dict[str, Any] = {"image": "example/server:1", "port": 9000}

CEL_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("http-no-target", {"backend": {"kind": "http"}}, "need backend.url or a server container"),
    ("sse-no-target", {"backend": {"kind": "sse"}}, "need backend.url or a server container"),
    ("url-and-server", {**BASE, "server": SERVER}, "give backend.url or a server container, not both"),
    ("stdio-no-command", {"backend": {"kind": "stdio"}}, "backend kind stdio needs backend.stdio.command"),
    (
        "stdio-with-server",
        {"backend": {"kind": "stdio", "stdio": {"command": "srv"}}, "server": SERVER},
        "spec.server is not allowed with it",
    ),
    (
        "sqs-no-queue",
        {"backend": {"kind": "sqs", "aws": {"region": "us-east-1"}}},
        "backend kind sqs needs backend.sqs.requestQueueUrl",
    ),
    (
        "sqs-no-aws",
        {"backend": {"kind": "sqs", "sqs": {"requestQueueUrl": "https://sqs.local/q"}}},
        "backend kinds sqs and sns-sqs need backend.aws.region",
    ),
    (
        "sns-no-topics",
        {"backend": {"kind": "sns-sqs", "aws": {"region": "us-east-1"}}},
        "backend kind sns-sqs needs backend.sns",
    ),
    ("webhook-no-server-url", {"backend": {"kind": "webhook"}}, "backend.webhook.serverUrl"),
    (
        "url-on-sqs",
        {"backend": {**SQS, "url": "http://x/mcp"}},
        "backend.url is only for kinds http and sse",
    ),
    (
        "stdio-on-http",
        {"backend": {**HTTP_BACKEND, "stdio": {"command": "x"}}},
        "backend.stdio is only for kind stdio",
    ),
    (
        "aws-on-http",
        {"backend": {**HTTP_BACKEND, "aws": {"region": "us-east-1"}}},
        "backend.aws is only for",
    ),
    (
        "sqs-on-http",
        {"backend": {**HTTP_BACKEND, "sqs": {}}},
        "backend.sqs is only for kinds sqs and sns-sqs",
    ),
    (
        "sns-on-sqs",
        {
            "backend": {
                **SQS,
                "sns": {"requestTopicArn": "arn:aws:sns:r:1:a", "replyTopicArn": "arn:aws:sns:r:1:b"},
            }
        },
        "backend.sns is only for kind sns-sqs",
    ),
    (
        "webhook-on-http",
        {"backend": {**HTTP_BACKEND, "webhook": {"serverUrl": "http://s/mcp"}}},
        "backend.webhook is only for kind webhook",
    ),
    (
        "reply-queue-without-replicas",
        {"backend": {**SQS, "sqs": {**SQS["sqs"], "replyQueueName": "fixed"}}},
        "a fixed reply queue",
    ),
    (
        "reply-queue-with-two-replicas",
        {"backend": {**SQS, "sqs": {**SQS["sqs"], "replyQueueUrl": "https://sqs.local/r"}}, "replicas": 2},
        "a fixed reply queue",
    ),
    (
        "server-port-is-sidecar-port",
        {"backend": {"kind": "http"}, "server": {**SERVER, "port": 8080}},
        "server.port must differ from sidecar.port",
    ),
    (
        "server-port-is-custom-sidecar-port",
        {"backend": {"kind": "http"}, "server": SERVER, "sidecar": {"port": 9000}},
        "server.port must differ from sidecar.port",
    ),
    (
        "pdb-both",
        {**BASE, "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "podDisruptionBudget takes minAvailable or maxUnavailable, not both",
    ),
    (
        "env-value-and-secret",
        {
            "backend": {"kind": "http"},
            "server": {
                **SERVER,
                "env": [
                    {"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                ],
            },
        },
        "give exactly one of value or valueFrom",
    ),
    (
        "header-neither",
        {"backend": {**HTTP_BACKEND, "headers": [{"name": "X-A"}]}},
        "give exactly one of value or valueFrom",
    ),
    (
        "stdio-env-mcplane",
        {
            "backend": {
                "kind": "stdio",
                "stdio": {"command": "x", "env": [{"name": "MCPLANE_X", "value": "1"}]},
            }
        },
        "MCPLANE_* variables are sidecar settings",
    ),
    ("zero-connect-timeout", {"backend": {**HTTP_BACKEND, "connectTimeout": "0s"}}, "longer than 0s"),
    ("zero-interval", {**BASE, "metrics": {"serviceMonitor": {"interval": "0ms"}}}, "longer than 0s"),
]


def resource(spec: dict[str, Any], name: str = "proxy") -> dict[str, Any]:
    return {
        "apiVersion": "mcplane.dev/v1alpha1",
        "kind": "MCPProxy",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.mark.parametrize(("spec", "message"), [c[1:] for c in CEL_CASES], ids=[c[0] for c in CEL_CASES])
def test_cel_rule_and_model_agree_on_bad_spec(spec: dict[str, Any], message: str) -> None:
    assert schema_errors(resource(spec)) == []  # only the CEL rule is broken
    errors = cel_errors(resource(spec))
    assert any(message in e for e in errors), errors
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(spec)


GOOD_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("http-url", BASE),
    ("http-server", {"backend": {"kind": "http"}, "server": SERVER}),
    ("sse-server-custom-path", {"backend": {"kind": "sse"}, "server": {**SERVER, "path": "/sse"}}),
    (
        "server-on-8080-sidecar-moved",
        {"backend": {"kind": "http"}, "server": {**SERVER, "port": 8080}, "sidecar": {"port": 8081}},
    ),
    ("sqs", {"backend": SQS}),
    (
        "reply-queue-one-replica",
        {"backend": {**SQS, "sqs": {**SQS["sqs"], "replyQueueName": "r"}}, "replicas": 1},
    ),
    (
        "reply-queue-zero-replicas",
        {"backend": {**SQS, "sqs": {**SQS["sqs"], "replyQueueName": "r"}}, "replicas": 0},
    ),
    (
        "webhook-with-server",
        {
            "backend": {"kind": "webhook", "webhook": {"serverUrl": "http://127.0.0.1:9000/r"}},
            "server": SERVER,
        },
    ),
    ("pdb-percent", {**BASE, "podDisruptionBudget": {"maxUnavailable": "25%"}}),
    ("pdb-empty", {**BASE, "podDisruptionBudget": {}}),
]


@pytest.mark.parametrize("spec", [c[1] for c in GOOD_SPECS], ids=[c[0] for c in GOOD_SPECS])
def test_cel_rules_and_model_accept_good_spec(spec: dict[str, Any]) -> None:
    assert all_errors(resource(spec)) == []
    parse_spec(spec)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("tools-http", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("1abc", False),
        ("Abc", False),
        ("abc-", False),
    ],
)
def test_name_rule(name: str, ok: bool) -> None:
    assert (cel_errors(resource(BASE, name=name)) == []) is ok


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("backend", "url"), "ftp://x", "does not match"),
        (("backend", "aws"), {"region": "Mars"}, "does not match"),
        (("sessions",), {"maxSessions": 0}, "less than the minimum of 1"),
        (("sidecar",), {"port": 80}, "less than the minimum of 1024"),
        (("service",), {"type": "ExternalName"}, "is not one of"),
        (("sidecar",), {"resources": {"requests": {"memory": "lots"}}}, "does not match"),
        (("podDisruptionBudget",), {"minAvailable": "half"}, "does not match"),
        (("tolerations",), [{"operator": "Maybe"}], "is not one of"),
    ],
)
def test_schema_rejects(path: tuple[str, ...], value: Any, fragment: str) -> None:
    spec = copy.deepcopy(BASE)
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = schema_errors(resource(spec))
    assert any(fragment in e for e in errors), errors


def test_status_as_the_handler_writes_it_is_valid() -> None:
    obj = resource(BASE)
    obj["status"] = {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "2 of 2 replicas ready",
                "lastTransitionTime": "2026-08-01T10:00:00Z",
                "observedGeneration": 3,
            }
        ],
        "readyReplicas": 2,
        "url": "http://proxy.default.svc:8080/mcp",
        "activeSessions": 7,
    }
    assert all_errors(obj) == []
    obj["status"]["phase"] = "Running"
    assert any("phase" in e for e in all_errors(obj))
