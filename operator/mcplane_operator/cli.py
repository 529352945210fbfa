"""`mcplane-operator`: `run` the operator, or `render` an MCPProxy file to the objects it becomes."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mcplane_operator import render


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcplane-operator", description="The mcplane Kubernetes operator.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="reconcile MCPProxy resources (kopf)")
    run.add_argument(
        "--namespace", action="append", help="watch this namespace (repeatable; env MCPLANE_WATCH_NAMESPACES)"
    )
    run.add_argument("--all-namespaces", action="store_true", help="watch every namespace (cluster-wide)")
    run.add_argument(
        "--standalone", action="store_true", help="act without peering (only when exactly one replica runs)"
    )
    run.add_argument(
        "--liveness", default=None, help="liveness endpoint URL (default http://0.0.0.0:8080/healthz)"
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    render.add_arguments(
        commands.add_parser("render", help="print the objects an MCPProxy file becomes, as YAML (no cluster)")
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "render":
        sys.exit(render.run_from_args(args))
    # Imported lazily: `render` must work without kopf or a cluster.
    operator = importlib.import_module("mcplane_operator.operator")
    settings = {"liveness_endpoint": args.liveness} if args.liveness else {}
    operator.run(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        standalone=args.standalone,
        verbose=args.verbose,
        **settings,
    )
