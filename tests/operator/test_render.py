"""`mcplane-operator render FILE`: an MCPProxy file in, the objects it becomes out, as multi-document YAML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcplane_operator.builders import DEFAULT_SIDECAR_IMAGE
from mcplane_operator.render import RenderError, render
from mcplane_sidecar.config import SidecarConfig

ROOT = Path(__file__).resolve().parents[2]
HTTP_EXAMPLE = ROOT / "manifests" / "examples" / "http.yaml"
CONSOLE_SCRIPT = Path(sys.executable).parent / "mcplane-operator"


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=ROOT,
        env=env,
        check=False,
        timeout=60,
    )


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def test_render_prints_the_children_of_the_http_example() -> None:
    result = run("render", "manifests/examples/http.yaml")
    assert result.returncode == 0, result.stderr
    objs = docs(result.stdout)
    assert [o["kind"] for o in objs] == [
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ]
    assert {o["metadata"]["name"] for o in objs} == {"tools-http"}
    assert {o["metadata"]["namespace"] for o in objs} == {"default"}
    SidecarConfig.model_validate(yaml.safe_load(objs[0]["data"]["sidecar.yaml"]))
    deployment = objs[2]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULT_SIDECAR_IMAGE
    assert deployment["spec"]["replicas"] == 2


def test_render_options_and_stdin() -> None:
    text = HTTP_EXAMPLE.read_text()
    result = run("render", "-", "--sidecar-image", "me/sidecar:1", "--no-service-monitor", stdin=text)
    assert result.returncode == 0, result.stderr
    objs = docs(result.stdout)
    assert "ServiceMonitor" not in [o["kind"] for o in objs]
    assert objs[2]["spec"]["template"]["spec"]["containers"][0]["image"] == "me/sidecar:1"


def test_render_takes_the_image_from_the_environment() -> None:
    env = {**os.environ, "MCPLANE_SIDECAR_IMAGE": "from/env:3"}
    result = run("render", str(HTTP_EXAMPLE), env=env)
    assert result.returncode == 0, result.stderr
    assert docs(result.stdout)[2]["spec"]["template"]["spec"]["containers"][0]["image"] == "from/env:3"


def test_render_every_resource_of_a_multi_document_file(tmp_path: Path) -> None:
    examples = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
    bundle = tmp_path / "all.yaml"
    bundle.write_text("\n---\n".join(p.read_text() for p in examples))
    result = run("render", str(bundle))
    assert result.returncode == 0, result.stderr
    deployments = [o for o in docs(result.stdout) if o["kind"] == "Deployment"]
    assert len(deployments) == len(examples)


def test_render_refuses_an_invalid_resource_with_a_clear_message() -> None:
    result = run("render", "manifests/examples/invalid/sqs-without-request-queue.yaml")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "backend kind sqs needs backend.sqs.requestQueueUrl" in result.stderr


def test_render_reports_a_missing_file() -> None:
    result = run("render", "no/such/file.yaml")
    assert result.returncode == 1
    assert "cannot read no/such/file.yaml" in result.stderr


def test_python_dash_m_works_too() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcplane_operator", "render", str(HTTP_EXAMPLE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert docs(result.stdout)[0]["kind"] == "ConfigMap"


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, "expected apiVersion"),
        (
            {"apiVersion": "mcplane.dev/v1alpha1", "kind": "MCPProxy", "metadata": {}, "spec": {}},
            "metadata.name",
        ),
    ],
)
def test_render_function_refuses_other_objects(resource: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(resource)


def test_render_function_uses_the_resource_namespace() -> None:
    resource = yaml.safe_load(HTTP_EXAMPLE.read_text())
    resource["metadata"]["namespace"] = "tools"
    objs = render(resource, sidecar_image="x/y:1", service_monitor_available=False)
    assert {o["metadata"]["namespace"] for o in objs} == {"tools"}
    assert [o["kind"] for o in objs] == ["ConfigMap", "Service", "Deployment", "PodDisruptionBudget"]
