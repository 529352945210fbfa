"""`mcplane-sidecar`: the original design's command line, plus a stdio backend and a config file.

    mcplane-sidecar URL [--name N] [--host H] [--port P] [--transport stdio|http|sse]
                        [--transport-type http|sse]
    mcplane-sidecar [options] -- COMMAND [ARGS...]
    mcplane-sidecar --config FILE
    mcplane-sidecar --demo

Settings merge in this order, later winning: config file, `MCPLANE_*` environment, flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mcplane_sidecar.config import ConfigError, SidecarConfig, build_config, env_overrides, load_config_file
from mcplane_sidecar.logs import configure_logging
from mcplane_sidecar.server import run_http, run_stdio

logger = logging.getLogger("mcplane_sidecar")

DEMO_PORT = 8080


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcplane-sidecar",
        description="A message-level MCP proxy: any MCP server, over the transport you need.",
        epilog="Use `-- COMMAND ARGS...` to run a local stdio MCP server as the backend.",
    )
    parser.add_argument("mcp_url", nargs="?", help="URL of the remote MCP server to proxy")
    parser.add_argument("--name", help="name of this proxy (logs, metrics)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080)")
    parser.add_argument(
        "--transport",
        choices=["stdio", "http", "sse"],
        help="front transport: stdio (default without --config), or http / sse (one server serving both)",
    )
    parser.add_argument(
        "--transport-type", choices=["http", "sse"], help="force the backend transport (default: auto-detect)"
    )
    parser.add_argument(
        "--config", type=Path, default=os.environ.get("MCPLANE_CONFIG"), help="YAML config file"
    )
    parser.add_argument("--demo", action="store_true", help="serve the bundled demo server on 127.0.0.1:8080")
    return parser


def _flags_layer(args: argparse.Namespace, command: Sequence[str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    server: dict[str, Any] = {}
    backend: dict[str, Any] = {}
    if args.name:
        layer["name"] = args.name
    for key in ("host", "port", "transport"):
        if getattr(args, key) is not None:
            server[key] = getattr(args, key)
    if args.mcp_url:
        backend["url"] = args.mcp_url
        backend["kind"] = args.transport_type or "auto"
    elif args.transport_type:
        backend["kind"] = args.transport_type
    if command:
        backend["kind"] = "stdio"
        backend["stdio"] = {"command": command[0], "args": list(command[1:])}
    if server:
        layer["server"] = server
    if backend:
        layer["backend"] = backend
    return layer


def resolve_config(argv: Sequence[str], environ: Mapping[str, str]) -> SidecarConfig:
    argv = list(argv)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = _parser().parse_args(argv)
    if args.mcp_url and command:
        raise ConfigError("give either a URL or `-- COMMAND`, not both")
    base: dict[str, Any] = {}
    if args.demo:
        base = {
            "name": "mcplane-demo",
            "server": {"transport": "http", "port": DEMO_PORT},
            "backend": {
                "kind": "stdio",
                "stdio": {"command": sys.executable, "args": ["-m", "mcplane_sidecar.demo_server"]},
            },
            "logging": {"json": False},
        }
    elif args.config is not None:
        base = load_config_file(Path(args.config))
    else:
        # The original design's default front transport is stdio.
        base = {"server": {"transport": "stdio"}}
    if (
        not args.demo
        and args.config is None
        and not args.mcp_url
        and not command
        and "MCPLANE_BACKEND__URL" not in environ
    ):
        raise ConfigError("nothing to proxy: give an MCP server URL, `-- COMMAND`, --config FILE or --demo")
    return build_config(base, env_overrides(environ), _flags_layer(args, command))


def describe_backend(config: SidecarConfig) -> str:
    backend = config.backend
    if backend.stdio is not None and backend.kind == "stdio":
        return " ".join([backend.stdio.command, *backend.stdio.args])
    if backend.kind == "sqs" and backend.sqs is not None:
        return f"SQS queue {backend.sqs.request_queue_url}"
    if backend.kind == "sns-sqs" and backend.sns is not None:
        return f"SNS topic {backend.sns.request_topic_arn}"
    if backend.kind == "webhook" and backend.webhook is not None:
        return f"webhook server {backend.webhook.server_url}"
    return backend.url or ""


def banner(config: SidecarConfig, *, demo: bool) -> str:
    """What the operator of a fresh sidecar needs to know: where it listens and how to connect."""
    target = describe_backend(config)
    base = f"http://{config.server.host}:{config.server.port}"
    lines = [
        f"mcplane-sidecar: proxying {target}",
        f"  Streamable HTTP (both eras): {base}{config.server.path}",
        f"  legacy HTTP+SSE:             {base}{config.server.sse_path}",
        f"  health, readiness, metrics:  {base}/healthz  {base}/readyz  {base}/metrics",
    ]
    if demo:
        lines += [
            "Try it from another terminal with the official Python client:",
            f"  .venv/bin/python -m mcplane_sidecar.demo_client {base}{config.server.path}",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = resolve_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"mcplane-sidecar: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(config.logging.level, json_format=config.logging.json_format)
    try:
        if config.server.transport == "stdio":
            run_stdio(config)
            return
        print(banner(config, demo="--demo" in (sys.argv[1:] if argv is None else argv)), file=sys.stderr)
        run_http(config)
    except ConfigError as exc:
        print(f"mcplane-sidecar: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
