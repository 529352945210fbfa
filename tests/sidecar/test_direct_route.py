"""The hot routes, served ahead of FastAPI, keep what its stack gave them: the error answer, 405s."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from mcplane_sidecar import build_config, create_app
from mcplane_sidecar.app import Sidecar
from mcplane_sidecar.front.direct_route import DirectRoutes

MODERN_CALL = {
    "jsonrpc": "2.0",
    "id": "c-1",
    "method": "tools/call",
    "params": {
        "name": "echo",
        "arguments": {},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"},
    },
}


def _client(app: Any) -> httpx.AsyncClient:
    # raise_app_exceptions=False: Starlette re-raises after answering, as a server would log it.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def test_an_error_escaping_the_mcp_endpoint_is_a_json_rpc_500_without_a_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(build_config({"backend": {"kind": "http", "url": "http://127.0.0.1:9/mcp"}}))
    sidecar: Sidecar = app.state.sidecar

    async def broken_relay(*_: object) -> Response:
        raise RuntimeError("secret detail of a bug")

    monkeypatch.setattr(sidecar.stateless, "handle", broken_relay)
    async with _client(app) as http:
        answer = await http.post(
            "/mcp",
            json=MODERN_CALL,
            headers={"accept": "application/json, text/event-stream", "mcp-protocol-version": "2026-07-28"},
        )
    assert answer.status_code == 500
    assert answer.json()["error"] == {"code": -32603, "message": "Internal error in the proxy"}
    assert "secret detail" not in answer.text


async def test_an_error_escaping_a_route_behind_the_hot_ones_is_the_same_json_rpc_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(build_config({"backend": {"kind": "http", "url": "http://127.0.0.1:9/mcp"}}))
    sidecar: Sidecar = app.state.sidecar

    async def broken_check() -> str | None:
        raise RuntimeError("secret detail of a bug")

    monkeypatch.setattr(sidecar, "check_ready", broken_check)
    async with _client(app) as http:
        answer = await http.get("/readyz")
    assert answer.status_code == 500
    assert answer.json()["error"] == {"code": -32603, "message": "Internal error in the proxy"}
    assert "secret detail" not in answer.text


async def test_other_methods_on_the_mcp_path_get_a_json_rpc_405_with_allow() -> None:
    app = create_app(build_config({"backend": {"kind": "http", "url": "http://127.0.0.1:9/mcp"}}))
    async with _client(app) as http:
        answer = await http.put("/mcp", json={})
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, POST, DELETE"
    assert answer.json()["error"]["code"] == -32600


async def _served_by(routes: DirectRoutes, method: str, path: str, root_path: str = "") -> str:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": [],
        "query_string": b"",
    }
    await routes(scope, receive, send)
    return b"".join(m.get("body", b"") for m in sent).decode()


async def test_full_matches_take_the_shortcut_with_their_path_parameters_and_the_rest_go_to_the_app() -> None:
    async def mcp(_: Request) -> Response:
        return PlainTextResponse("mcp")

    async def callback(request: Request) -> Response:
        return PlainTextResponse(f"callback {request.path_params['token']}")

    async def rest(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("router")(scope, receive, send)

    routes = DirectRoutes(
        rest, routes=[Route("/mcp", mcp), Route("/callbacks/{token}", callback, methods=["POST"])]
    )
    assert await _served_by(routes, "GET", "/mcp") == "mcp"
    assert await _served_by(routes, "POST", "/callbacks/abc") == "callback abc"
    assert await _served_by(routes, "GET", "/callbacks/abc") == "router"  # wrong method: the router's 405
    assert await _served_by(routes, "POST", "/callbacks/abc/more") == "router"
    assert await _served_by(routes, "GET", "/mcp/") == "router"
    assert await _served_by(routes, "GET", "/healthz") == "router"
    # Mounted under a root path, the path is matched below it, as the router matches it.
    assert await _served_by(routes, "GET", "/proxy/mcp", root_path="/proxy") == "mcp"
