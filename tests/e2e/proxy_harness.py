"""A sidecar served in-process on a real socket, in front of a real MCP server; raw-HTTP helpers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from mcplane_sidecar import build_config, create_app
from mcplane_sidecar.app import Sidecar
from mcplane_sidecar.config import merge
from tests.fixtures.proxy_target import build_app
from tests.support.asgi import serve_asgi

ACCEPT_BOTH = "application/json, text/event-stream"
HANDSHAKE_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"


def initialize_request(request_id: int | str = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcplane-tests", "version": "1"},
        },
    }


def call(request_id: int | str, tool: str, arguments: dict[str, Any], **meta: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


@dataclass
class Proxied:
    url: str
    base: str
    backend_base: str
    app: FastAPI

    @property
    def sidecar(self) -> Sidecar:
        sidecar: Sidecar = self.app.state.sidecar
        return sidecar


@asynccontextmanager
async def sidecar_in_front_of(
    backend_url: str, overrides: Mapping[str, Any] | None = None
) -> AsyncIterator[Proxied]:
    base_config = {
        "backend": {"kind": "http", "url": backend_url},
        "logging": {"json": True, "level": "info"},
    }
    app = create_app(build_config(merge(base_config, overrides or {})))
    async with serve_asgi(app) as base:
        yield Proxied(url=f"{base}/mcp", base=base, backend_base=backend_url.rsplit("/mcp", 1)[0], app=app)


@asynccontextmanager
async def proxied_target(overrides: Mapping[str, Any] | None = None) -> AsyncIterator[Proxied]:
    async with (
        serve_asgi(build_app()) as backend,
        sidecar_in_front_of(f"{backend}/mcp", overrides) as proxied,
    ):
        yield proxied


async def open_session(http: httpx.AsyncClient, url: str, headers: Mapping[str, str] | None = None) -> str:
    response = await http.post(
        url, json=initialize_request(), headers={"accept": ACCEPT_BOTH, **(headers or {})}
    )
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    note = await http.post(
        url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers=session_headers(session_id, headers),
    )
    assert note.status_code == 202, note.text
    return session_id


def session_headers(session_id: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        "accept": ACCEPT_BOTH,
        "mcp-session-id": session_id,
        "mcp-protocol-version": HANDSHAKE_VERSION,
        **(extra or {}),
    }


def messages_of(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a JSON or SSE response body."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return [response.json()]
    found = []
    for line in response.text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            found.append(json.loads(line[5:].strip()))
    return found


def final_response(response: httpx.Response, request_id: int | str) -> dict[str, Any]:
    for message in messages_of(response):
        if message.get("id") == request_id and "method" not in message:
            return message
    raise AssertionError(f"no response for id {request_id} in {response.text!r}")
