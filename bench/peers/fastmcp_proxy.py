"""fastmcp's proxy as its documentation shows it, in front of one backend; runs in `.venv-bench-fastmcp`.

    .venv-bench-fastmcp/bin/python bench/peers/fastmcp_proxy.py --port P --url URL
    .venv-bench-fastmcp/bin/python bench/peers/fastmcp_proxy.py --port P -- COMMAND ARGS...

`fastmcp.server.create_proxy(target)` with no further settings (the recommended form: a fresh backend
client per request, whose era mirrors the front's), served over Streamable HTTP on 127.0.0.1:P at `/mcp`.
A command becomes a one-server MCP config, i.e. a stdio backend. Nothing here tunes the peer.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from fastmcp.server import create_proxy

LOOPBACK: Final = "127.0.0.1"
MCP_PATH: Final = "/mcp"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", help="a Streamable HTTP backend")
    parser.add_argument("command", nargs="*", help="a stdio backend (after --)")
    args = parser.parse_args()
    if bool(args.url) == bool(args.command):
        parser.error("give either --url or a command after --")
    target: Any = args.url or {
        "mcpServers": {"backend": {"command": args.command[0], "args": args.command[1:]}}
    }
    proxy = create_proxy(target, name="fastmcp-proxy")
    proxy.run(
        transport="http", host=LOOPBACK, port=args.port, path=MCP_PATH, show_banner=False, log_level="WARNING"
    )


if __name__ == "__main__":
    main()
