"""`mcplane-operator render FILE`: the children an MCPProxy becomes, as multi-document YAML, offline."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from mcplane_operator.builders import DEFAULT_SIDECAR_IMAGE, build_children
from mcplane_operator.model import API_VERSION, KIND, SpecError, check_name, parse_spec

DEFAULT_NAMESPACE = "default"
# The image the operator puts in every pod unless a spec names its own (spec.sidecar.image).
SIDECAR_IMAGE_ENV = "MCPLANE_SIDECAR_IMAGE"


class RenderError(ValueError):
    """The input is not an MCPProxy that can be rendered; the message says why."""


def render(
    resource: Mapping[str, Any],
    *,
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE,
    service_monitor_available: bool = True,
) -> list[dict[str, Any]]:
    """The children of one MCPProxy resource, in apply order (ServiceMonitor included when asked for)."""
    if resource.get("apiVersion") != API_VERSION or resource.get("kind") != KIND:
        raise RenderError(
            f"expected apiVersion {API_VERSION} kind {KIND}, "
            f"got {resource.get('apiVersion')} {resource.get('kind')}"
        )
    metadata = resource.get("metadata") or {}
    name = metadata.get("name")
    if not name:
        raise RenderError("metadata.name is required")
    check_name(name)
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    spec = parse_spec(resource.get("spec") or {})
    return build_children(
        name,
        namespace,
        spec,
        sidecar_image=sidecar_image,
        service_monitor_available=service_monitor_available,
    )


def load_resources(stream: TextIO | str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file's text."""
    docs = [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            raise RenderError("every YAML document must be a mapping")
    return docs


def dump(objects: Iterable[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all([dict(o) for o in objects], sort_keys=False, default_flow_style=False)


def render_file(
    file: str,
    *,
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE,
    service_monitor_available: bool = True,
    out: TextIO | None = None,
) -> int:
    """Render every MCPProxy in FILE (`-` for stdin) to `out`; 0 on success, 1 with a message on stderr."""
    out = out or sys.stdout
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        children: list[dict[str, Any]] = []
        for resource in load_resources(text):
            children.extend(
                render(
                    resource, sidecar_image=sidecar_image, service_monitor_available=service_monitor_available
                )
            )
    except OSError as exc:
        print(f"mcplane-operator render: cannot read {file}: {exc.strerror}", file=sys.stderr)
        return 1
    except (yaml.YAMLError, RenderError, SpecError) as exc:
        print(f"mcplane-operator render: {file}: {exc}", file=sys.stderr)
        return 1
    out.write(dump(children))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a YAML file of MCPProxy resources, or - for stdin")
    parser.add_argument(
        "--sidecar-image",
        default=None,
        help=f"sidecar image (default ${SIDECAR_IMAGE_ENV}, else {DEFAULT_SIDECAR_IMAGE})",
    )
    parser.add_argument(
        "--no-service-monitor",
        action="store_true",
        help="render as for a cluster without the ServiceMonitor CRD",
    )


def run_from_args(args: argparse.Namespace) -> int:
    image = args.sidecar_image or os.environ.get(SIDECAR_IMAGE_ENV) or DEFAULT_SIDECAR_IMAGE
    return render_file(args.file, sidecar_image=image, service_monitor_available=not args.no_service_monitor)


def main(argv: Sequence[str] | None = None) -> int:
    """`mcplane-operator render FILE [--sidecar-image IMAGE] [--no-service-monitor]`."""
    parser = argparse.ArgumentParser(
        prog="mcplane-operator render", description="Print the objects an MCPProxy file becomes, as YAML."
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
