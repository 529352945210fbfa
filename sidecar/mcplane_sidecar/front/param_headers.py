"""`Mcp-Param-*` header checks on behalf of backends that never see HTTP headers (stdio).

A 2026-07-28 server must reject a `tools/call` whose `Mcp-Param-*` headers disagree with its arguments.
An HTTP backend checks that itself; a stdio backend cannot, so the proxy does: it reads the tool's input
schema from the backend's own `tools/list` (as the caller would be advertised it) and applies the SDK's
validator. Like the SDK, the check fails open: a listing that fails never breaks a working call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import anyio
from mcp.shared.inbound import MCP_PARAM_HEADER_PREFIX, InboundLadderRejection, validate_mcp_param_headers

from mcplane_sidecar.core.stateless_pool import StatelessPool
from mcplane_sidecar.jsonrpc import Message, method_of, params_of

logger = logging.getLogger(__name__)

LISTING_TIMEOUT: Final = 10.0
MAX_PAGES: Final = 32
ENVELOPE_KEYS: Final = (
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
)


async def param_header_rejection(
    pool: StatelessPool, message: Message, headers: Mapping[str, str]
) -> InboundLadderRejection | None:
    if method_of(message) != "tools/call":
        return None
    params = params_of(message)
    name = params.get("name")
    arguments = params.get("arguments") or {}
    if not isinstance(name, str) or not isinstance(arguments, dict):
        return None
    prefix = MCP_PARAM_HEADER_PREFIX.lower()
    if not arguments and not any(key.startswith(prefix) for key in headers):
        return None  # nothing that a declaration could contradict
    schema = await _input_schema(pool, message, name)
    if schema is None:
        return None
    return validate_mcp_param_headers(schema, arguments, headers)


async def _input_schema(pool: StatelessPool, message: Message, name: str) -> Any | None:
    meta = params_of(message).get("_meta")
    envelope = {k: v for k, v in (meta or {}).items() if k in ENVELOPE_KEYS} if isinstance(meta, dict) else {}
    cursor: str | None = None
    for page in range(MAX_PAGES):
        params: dict[str, Any] = {"_meta": envelope}
        if cursor is not None:
            params["cursor"] = cursor
        listing = {"jsonrpc": "2.0", "id": f"mcplane-tools-{page}", "method": "tools/list", "params": params}
        result: Any = None
        with anyio.move_on_after(LISTING_TIMEOUT):
            async for reply in (await pool.submit(listing)).messages():
                result = reply.get("result")
        if not isinstance(result, dict):
            logger.warning("Mcp-Param header check skipped: the backend's tools/list failed")
            return None
        for tool in result.get("tools", []):
            if isinstance(tool, dict) and tool.get("name") == name:
                return tool.get("inputSchema")
        next_cursor = result.get("nextCursor")
        if not isinstance(next_cursor, str):
            return None
        cursor = next_cursor
    return None
