"""Raw JSON-RPC messages as the proxy carries them.

The proxy never re-models MCP traffic: a message is the decoded JSON object, passed on as it came
(unknown fields, `_meta`, `$defs` and binary content included). These helpers only read the envelope.
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeGuard

from mcp_types.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR

Message = dict[str, Any]
RequestId = int | str

JSONRPC_VERSION: Final = "2.0"
PROTOCOL_VERSION_META_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META_KEY: Final = "io.modelcontextprotocol/clientCapabilities"


class MalformedMessage(ValueError):
    """A body that is not one JSON-RPC 2.0 message; carries the JSON-RPC code to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def is_request(message: Message) -> bool:
    return "method" in message and "id" in message


def is_notification(message: Message) -> bool:
    return "method" in message and "id" not in message


def is_response(message: Message) -> bool:
    """A result or an error: something that settles a request."""
    return "method" not in message and ("result" in message or "error" in message)


def valid_id(value: object) -> TypeGuard[RequestId]:
    # JSON-RPC allows numbers and strings; bool is an int subclass in Python and is not an id.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def request_id(message: Message) -> RequestId | None:
    value = message.get("id")
    return value if valid_id(value) else None


def method_of(message: Message) -> str | None:
    method = message.get("method")
    return method if isinstance(method, str) else None


def params_of(message: Message) -> dict[str, Any]:
    params = message.get("params")
    return params if isinstance(params, dict) else {}


def meta_of(message: Message) -> dict[str, Any]:
    meta = params_of(message).get("_meta")
    return meta if isinstance(meta, dict) else {}


def progress_token(message: Message) -> RequestId | None:
    """The progress token a request asked for, or the one a progress notification reports on."""
    if method_of(message) == "notifications/progress":
        token = params_of(message).get("progressToken")
    else:
        token = meta_of(message).get("progressToken")
    return token if valid_id(token) else None


def is_stateless(message: Message) -> bool:
    """True for a 2026-07-28 message: it carries the per-request protocol envelope in `_meta`."""
    return PROTOCOL_VERSION_META_KEY in meta_of(message)


def parse_message(body: bytes) -> Message:
    """Decode one JSON-RPC message; batches and non-objects are refused (no era since 2025-06-18 has them)."""
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(PARSE_ERROR, f"Parse error: {exc}") from None
    if isinstance(decoded, list):
        raise MalformedMessage(INVALID_REQUEST, "Batch requests are not supported: send one message per POST")
    if not isinstance(decoded, dict):
        raise MalformedMessage(INVALID_REQUEST, "A JSON-RPC message must be a JSON object")
    if decoded.get("jsonrpc") != JSONRPC_VERSION:
        raise MalformedMessage(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    has_method = "method" in decoded
    if has_method and not isinstance(decoded["method"], str):
        raise MalformedMessage(INVALID_REQUEST, 'Invalid Request: "method" must be a string')
    if "id" in decoded and not valid_id(decoded["id"]) and not (decoded["id"] is None and not has_method):
        raise MalformedMessage(INVALID_REQUEST, 'Invalid Request: "id" must be a string or an integer')
    if not has_method and "result" not in decoded and "error" not in decoded:
        raise MalformedMessage(
            INVALID_REQUEST, "Invalid Request: neither a request, a notification nor a response"
        )
    return decoded


def error_response(id_: RequestId | None, code: int, message: str, data: Any = None) -> Message:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": JSONRPC_VERSION, "id": id_, "error": error}


def internal_error(id_: RequestId | None, message: str = "Internal error") -> Message:
    return error_response(id_, INTERNAL_ERROR, message)


def dumps(message: Message) -> str:
    # Compact and non-ASCII preserved: the same bytes a well-behaved peer would send.
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
