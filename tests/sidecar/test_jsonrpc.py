"""Envelope parsing: what the proxy accepts, what it refuses, and that it never alters a message."""

from __future__ import annotations

import json

import pytest
from mcp_types.jsonrpc import INVALID_REQUEST, PARSE_ERROR

from mcplane_sidecar.jsonrpc import (
    MalformedMessage,
    dumps,
    is_notification,
    is_request,
    is_response,
    is_stateless,
    parse_message,
    progress_token,
)


def test_a_message_passes_through_unchanged() -> None:
    original = {
        "jsonrpc": "2.0",
        "id": "req-☃",
        "method": "tools/call",
        "params": {
            "name": "x",
            "arguments": {"blob": "AAEC", "$defs": {"a": {"type": "string"}}},
            "_meta": {"progressToken": 7, "vendor/extra": [1, 2]},
        },
        "x-unknown-top-level": True,
    }
    parsed = parse_message(dumps(original).encode())
    assert parsed == original
    assert json.loads(dumps(parsed)) == original


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", PARSE_ERROR),
        (b"\xff\xfe", PARSE_ERROR),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', INVALID_REQUEST),
        (b'"a string"', INVALID_REQUEST),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":{},"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":5}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1}', INVALID_REQUEST),
    ],
)
def test_malformed_bodies_are_refused_with_their_code(body: bytes, code: int) -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse_message(body)
    assert caught.value.code == code


def test_kinds() -> None:
    request = {"jsonrpc": "2.0", "id": 0, "method": "ping"}
    notification = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    response = {"jsonrpc": "2.0", "id": 0, "result": {}}
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": "m"}}
    assert is_request(request)
    assert not is_notification(request)
    assert not is_response(request)
    assert is_notification(notification)
    assert not is_request(notification)
    assert is_response(response)
    assert is_response(error)
    assert parse_message(json.dumps(error).encode()) == error


def test_progress_tokens_of_requests_and_notifications() -> None:
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"_meta": {"progressToken": "t"}}}
    progress = {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": "t", "progress": 1},
    }
    assert progress_token(request) == "t"
    assert progress_token(progress) == "t"
    assert progress_token({"jsonrpc": "2.0", "id": 1, "method": "ping"}) is None


def test_stateless_envelope_is_recognised() -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    assert is_stateless({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}})
    assert not is_stateless({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
