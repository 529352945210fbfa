"""The sidecar in front of a real Streamable HTTP MCP server: both eras, fidelity, limits, bad input.

Everything runs on real loopback sockets: the backend is the mcp SDK's own server, the clients are the
official Python client or raw HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from tests.e2e.proxy_harness import (
    ACCEPT_BOTH,
    MODERN_VERSION,
    call,
    final_response,
    initialize_request,
    messages_of,
    open_session,
    proxied_target,
    session_headers,
    sidecar_in_front_of,
)
from tests.fixtures.proxy_target import build_app
from tests.support.asgi import serve_asgi
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e
DEADLINE = 30


def text_of(result: Any) -> str:
    return str(result.content[0].text)


async def test_both_protocol_eras_work_through_the_proxy() -> None:
    async with proxied_target() as proxied:
        with anyio.fail_after(DEADLINE):
            async with Client(proxied.url, mode="legacy") as legacy:
                assert text_of(await legacy.call_tool("echo", {"text": "héllo ☃"})) == "héllo ☃"
            async with Client(proxied.url) as modern:
                assert text_of(await modern.call_tool("echo", {"text": "stateless"})) == "stateless"
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"{proxied.base}/metrics")).text
        assert 'mcplane_requests_total{method="initialize",outcome="ok"} 1.0' in metrics
        assert 'mcplane_requests_total{method="server/discover",outcome="ok"}' in metrics


async def test_made_up_method_names_share_one_metrics_series() -> None:
    """A client picks the method; a series per name would let it grow the sidecar's memory at will."""
    made_up = [f"vendor/probe-{n}" for n in range(3)]
    async with proxied_target() as proxied, httpx.AsyncClient(timeout=DEADLINE) as http:
        session_id = await open_session(http, proxied.url)
        for n, method in enumerate(made_up):
            request = {"jsonrpc": "2.0", "id": n, "method": method, "params": {}}
            answered = await http.post(proxied.url, json=request, headers=session_headers(session_id))
            assert final_response(answered, n)["error"]["code"] == -32601  # the backend's own verdict
        modern, modern_headers = stateless_call("m", "echo", {})
        modern["method"] = modern_headers["mcp-method"] = made_up[0]
        answered = await http.post(proxied.url, json=modern, headers=modern_headers)
        assert final_response(answered, "m")["error"]["code"] == -32601
        metrics = (await http.get(f"{proxied.base}/metrics")).text
    assert 'mcplane_requests_total{method="other",outcome="error"} 3.0' in metrics
    assert 'mcplane_requests_total{method="other",outcome="http_404"} 1.0' in metrics
    assert 'mcplane_requests_total{method="initialize",outcome="ok"} 1.0' in metrics
    assert "vendor/probe" not in metrics


async def test_tool_schemas_reach_the_client_byte_for_byte() -> None:
    async with proxied_target() as proxied, httpx.AsyncClient(timeout=DEADLINE) as http:
        listings = []
        for url in (f"{proxied.backend_base}/mcp", proxied.url):
            session_id = await open_session(http, url)
            response = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                headers=session_headers(session_id),
            )
            listings.append(final_response(response, 2))
        direct, through_proxy = listings
        assert through_proxy == direct
        measure = next(tool for tool in direct["result"]["tools"] if tool["name"] == "measure")
        assert "$defs" in measure["inputSchema"]


async def test_progress_and_large_unicode_payloads_cross() -> None:
    async with proxied_target() as proxied, httpx.AsyncClient(timeout=DEADLINE) as http:
        session_id = await open_session(http, proxied.url)
        blob = "é☃" * 50_000
        response = await http.post(
            proxied.url, json=call(3, "size", {"blob": blob}), headers=session_headers(session_id)
        )
        assert final_response(response, 3)["result"]["structuredContent"]["result"] == len(blob)
        response = await http.post(
            proxied.url,
            json=call(4, "ticks", {"count": 3, "interval": 0.01}, progressToken="tok-1"),
            headers=session_headers(session_id),
        )
        messages = messages_of(response)
        progress = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
        assert progress == [1, 2, 3]
        assert all(m["params"]["progressToken"] == "tok-1" for m in messages if "method" in m)
        assert final_response(response, 4)["result"]["content"][0]["text"] == "3 ticks"


async def test_bad_input_gets_clear_errors_and_the_proxy_keeps_serving() -> None:
    async with (
        proxied_target({"sessions": {"max_body_bytes": 2048}}) as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        session_id = await open_session(http, proxied.url)
        headers = session_headers(session_id)

        malformed = await http.post(
            proxied.url, content=b"{nope", headers={**headers, "content-type": "application/json"}
        )
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == -32700

        wrong_type = await http.post(
            proxied.url, content=b"{}", headers={**headers, "content-type": "text/plain"}
        )
        assert wrong_type.status_code == 415

        batch = await http.post(proxied.url, json=[call(5, "echo", {"text": "x"})], headers=headers)
        assert batch.status_code == 400
        assert batch.json()["error"]["code"] == -32600

        oversized = await http.post(proxied.url, json=call(6, "size", {"blob": "x" * 4096}), headers=headers)
        assert oversized.status_code == 413

        unknown = await http.post(
            proxied.url, json=call(7, "echo", {"text": "x"}), headers=session_headers("no-such-session")
        )
        assert unknown.status_code == 404
        assert unknown.json()["id"] == 7

        no_session = await http.post(
            proxied.url, json=call(8, "echo", {"text": "x"}), headers={"accept": ACCEPT_BOTH}
        )
        assert no_session.status_code == 400
        assert no_session.json()["id"] == 8

        bad_version = await http.post(
            proxied.url,
            json=call(9, "echo", {"text": "x"}),
            headers={**headers, "mcp-protocol-version": "1999-01-01"},
        )
        assert bad_version.status_code == 400

        unknown_tool = await http.post(proxied.url, json=call(10, "no_such_tool", {}), headers=headers)
        assert final_response(unknown_tool, 10)["result"]["isError"] is True

        fine = await http.post(proxied.url, json=call(11, "echo", {"text": "still here"}), headers=headers)
        assert final_response(fine, 11)["result"]["content"][0]["text"] == "still here"


async def test_origin_allow_list() -> None:
    async with (
        proxied_target({"security": {"allowed_origins": ["https://app.example"]}}) as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        evil = await http.post(
            proxied.url,
            json=initialize_request(),
            headers={"accept": ACCEPT_BOTH, "origin": "http://evil.example"},
        )
        assert evil.status_code == 403
        for origin in ("https://app.example", "http://localhost:5173"):
            await open_session(http, proxied.url, {"origin": origin})
        assert len(proxied.sidecar.registry.sessions) == 2


async def test_bearer_tokens_and_sessions_bound_to_them() -> None:
    tokens = {"security": {"tokens": [{"value": "alpha-token\nbeta-token"}]}}
    async with proxied_target(tokens) as proxied, httpx.AsyncClient(timeout=DEADLINE) as http:
        missing = await http.post(proxied.url, json=initialize_request(), headers={"accept": ACCEPT_BOTH})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await http.post(
            proxied.url,
            json=initialize_request(),
            headers={"accept": ACCEPT_BOTH, "authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401
        alpha = {"authorization": "Bearer alpha-token"}
        session_id = await open_session(http, proxied.url, alpha)
        hijack = await http.post(
            proxied.url,
            json=call(2, "echo", {"text": "x"}),
            headers=session_headers(session_id, {"authorization": "Bearer beta-token"}),
        )
        assert hijack.status_code == 404
        own = await http.post(
            proxied.url, json=call(3, "echo", {"text": "mine"}), headers=session_headers(session_id, alpha)
        )
        assert final_response(own, 3)["result"]["content"][0]["text"] == "mine"


async def test_session_limit_answers_503_with_retry_after() -> None:
    async with (
        proxied_target({"sessions": {"max_sessions": 2}}) as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        first = await open_session(http, proxied.url)
        await open_session(http, proxied.url)
        refused = await http.post(
            proxied.url, json=initialize_request("init-3"), headers={"accept": ACCEPT_BOTH}
        )
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        assert refused.json()["id"] == "init-3"
        assert refused.json()["error"]["message"].startswith("session limit reached")
        closed = await http.delete(proxied.url, headers=session_headers(first))
        assert closed.status_code == 200
        await open_session(http, proxied.url)  # the freed slot is usable again
        metrics = (await http.get(f"{proxied.base}/metrics")).text
        assert 'mcplane_session_rejections_total{reason="limit"} 1.0' in metrics


async def test_request_timeout_answers_504_with_the_request_id() -> None:
    async with (
        proxied_target({"sessions": {"request_timeout": 1}}) as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        session_id = await open_session(http, proxied.url)
        timed_out = await http.post(
            proxied.url, json=call("slow-1", "slow", {"seconds": 10}), headers=session_headers(session_id)
        )
        assert timed_out.status_code == 504
        assert timed_out.json()["id"] == "slow-1"
        assert timed_out.json()["error"]["code"] == -32004
        fine = await http.post(
            proxied.url, json=call(2, "echo", {"text": "ok"}), headers=session_headers(session_id)
        )
        assert final_response(fine, 2)["result"]["content"][0]["text"] == "ok"


async def test_inflight_limit() -> None:
    async with (
        proxied_target({"sessions": {"max_inflight": 1}}) as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        session_id = await open_session(http, proxied.url)
        results: dict[str, httpx.Response] = {}

        async def slow_call() -> None:
            results["slow"] = await http.post(
                proxied.url, json=call(2, "slow", {"seconds": 1}), headers=session_headers(session_id)
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow_call)
            await eventually(lambda: proxied.sidecar.registry.inflight > 0, what="the slow call in flight")
            busy = await http.post(
                proxied.url, json=call(3, "echo", {"text": "x"}), headers=session_headers(session_id)
            )
            assert busy.status_code == 503
            assert busy.json()["id"] == 3
        assert final_response(results["slow"], 2)["result"]["content"][0]["text"] == "slept 1.0"


async def test_idle_sessions_are_closed() -> None:
    async with (
        proxied_target({"sessions": {"idle_timeout": 0.5}}) as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        session_id = await open_session(http, proxied.url)
        await eventually(lambda: not proxied.sidecar.registry.sessions, what="the idle session to close")
        gone = await http.post(
            proxied.url, json=call(2, "echo", {"text": "x"}), headers=session_headers(session_id)
        )
        assert gone.status_code == 404


async def test_backend_restart_is_invisible_to_the_client() -> None:
    async with serve_asgi(build_app()) as probe:
        port = int(probe.rsplit(":", 1)[1])  # a port known free; the backend comes and goes on it
    async with (
        sidecar_in_front_of(f"http://127.0.0.1:{port}/mcp") as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        async with serve_asgi(build_app(), port=port):
            session_id = await open_session(http, proxied.url)
            headers = session_headers(session_id)
            first = await http.post(proxied.url, json=call(2, "echo", {"text": "before"}), headers=headers)
            assert final_response(first, 2)["result"]["content"][0]["text"] == "before"
        down = await http.post(proxied.url, json=call(3, "echo", {"text": "down"}), headers=headers)
        assert down.status_code == 503
        assert down.headers["retry-after"] == "1"
        assert final_response(down, 3)["error"]["code"] == -32003  # a clear error with the request's id
        async with serve_asgi(build_app(), port=port):  # a new process knows nothing of the old session
            after = await http.post(proxied.url, json=call(4, "echo", {"text": "after"}), headers=headers)
            assert final_response(after, 4)["result"]["content"][0]["text"] == "after"
        metrics = (await http.get(f"{proxied.base}/metrics")).text
        assert 'mcplane_backend_restarts_total{reason="session_lost"} 1.0' in metrics


async def test_resume_a_request_stream_with_last_event_id() -> None:
    async with proxied_target() as proxied, httpx.AsyncClient(timeout=DEADLINE) as http:
        session_id = await open_session(http, proxied.url)
        headers = session_headers(session_id)
        request = call(5, "ticks", {"count": 4, "interval": 0.2}, progressToken="t")
        seen: list[dict[str, Any]] = []
        last_event_id = None
        async with http.stream("POST", proxied.url, json=request, headers=headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    last_event_id = line[3:].strip()
                if line.startswith("data:") and line[5:].strip():
                    seen.append(json.loads(line[5:]))
                    break  # drop the connection after the first message
        assert last_event_id is not None
        resumed = await http.get(
            proxied.url, headers={**headers, "accept": "text/event-stream", "last-event-id": last_event_id}
        )
        rest = messages_of(resumed)
        progress = [
            m["params"]["progress"] for m in seen + rest if m.get("method") == "notifications/progress"
        ]
        assert progress == [1, 2, 3, 4]
        assert final_response(resumed, 5)["result"]["content"][0]["text"] == "4 ticks"


async def test_stateless_requests_are_checked_against_their_headers() -> None:
    async with proxied_target() as proxied, httpx.AsyncClient(timeout=DEADLINE) as http:
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        request = {
            "jsonrpc": "2.0",
            "id": "m-1",
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}, "_meta": meta},
        }
        base_headers = {
            "accept": ACCEPT_BOTH,
            "mcp-protocol-version": MODERN_VERSION,
            "mcp-method": "tools/call",
        }
        mismatch = await http.post(proxied.url, json=request, headers={**base_headers, "mcp-name": "other"})
        assert mismatch.status_code == 400
        assert mismatch.json() == {**mismatch.json(), "id": "m-1"}
        assert mismatch.json()["error"]["code"] == -32020
        good = await http.post(proxied.url, json=request, headers={**base_headers, "mcp-name": "echo"})
        assert good.status_code == 200
        assert "mcp-session-id" not in good.headers
        assert final_response(good, "m-1")["result"]["content"][0]["text"] == "x"
        assert (
            await http.get(
                proxied.url, headers={"accept": "text/event-stream", "mcp-protocol-version": MODERN_VERSION}
            )
        ).status_code == 405


async def test_health_readiness_and_metrics() -> None:
    async with serve_asgi(build_app()) as backend:
        port = int(backend.rsplit(":", 1)[1])
    async with (
        sidecar_in_front_of(f"http://127.0.0.1:{port}/mcp") as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        assert (await http.get(f"{proxied.base}/healthz")).status_code == 200
        not_ready = await http.get(f"{proxied.base}/readyz")
        assert not_ready.status_code == 503
        assert "unreachable" in not_ready.json()["reason"]
        async with serve_asgi(build_app(), port=port):
            assert (await http.get(f"{proxied.base}/readyz")).status_code == 200
            await open_session(http, proxied.url)
            status = (await http.get(f"{proxied.base}/status")).json()
            assert status["activeSessions"] == 1
        metrics = (await http.get(f"{proxied.base}/metrics")).text
        for name in (
            "mcplane_sessions_active",
            "mcplane_sessions_total",
            "mcplane_session_rejections_total",
            "mcplane_requests_total",
            "mcplane_request_duration_seconds_bucket",
            "mcplane_backend_errors_total",
            "mcplane_inflight_requests",
        ):
            assert name in metrics, name


def stateless_call(
    request_id: str, tool: str, arguments: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments, "_meta": meta},
    }
    headers = {
        "accept": ACCEPT_BOTH,
        "mcp-protocol-version": MODERN_VERSION,
        "mcp-method": "tools/call",
        "mcp-name": tool,
    }
    return body, headers


# The sidecar starts watching for the client's disconnect 0.25 s into a request: leave before and after.
@pytest.mark.parametrize("give_up_after", [0.05, 0.5])
async def test_closing_a_stateless_request_cancels_it_upstream(give_up_after: float) -> None:
    counters: dict[str, int] = {}
    async with serve_asgi(build_app(counters)) as backend, sidecar_in_front_of(f"{backend}/mcp") as proxied:
        body, headers = stateless_call("c-1", "slow", {"seconds": 30})
        async with httpx.AsyncClient(timeout=DEADLINE) as http:
            with anyio.move_on_after(give_up_after):  # give up on the answer: closing the connection cancels
                await http.post(proxied.url, json=body, headers=headers)
        await eventually(lambda: counters.get("cancelled") == 1, within=DEADLINE, what="backend cancellation")
        await eventually(lambda: proxied.sidecar.registry.inflight == 0, what="in-flight count back to 0")
        async with httpx.AsyncClient(timeout=DEADLINE) as http:
            metrics = (await http.get(f"{proxied.base}/metrics")).text
        assert 'mcplane_requests_total{method="tools/call",outcome="cancelled"} 1.0' in metrics


async def test_backend_headers_are_added_and_client_credentials_stay_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_BACKEND_KEY", "k-123")
    config = {"backend": {"headers": {"X-Api-Key": {"env": "TEST_BACKEND_KEY"}, "X-Team": {"value": "blue"}}}}
    async with proxied_target(config) as proxied, httpx.AsyncClient(timeout=DEADLINE) as http:
        client_credentials = {"authorization": "Bearer client-secret"}
        for era in ("2025", "2026"):
            if era == "2025":
                session_id = await open_session(http, proxied.url, client_credentials)
                reply = await http.post(
                    proxied.url,
                    json=call(2, "headers", {}),
                    headers=session_headers(session_id, client_credentials),
                )
                seen = final_response(reply, 2)["result"]["structuredContent"]
            else:
                body, headers = stateless_call("h-1", "headers", {})
                reply = await http.post(proxied.url, json=body, headers={**headers, **client_credentials})
                seen = final_response(reply, "h-1")["result"]["structuredContent"]
            assert seen["x-api-key"] == "k-123", era
            assert seen["x-team"] == "blue", era
            assert "authorization" not in seen, era


async def test_client_authorization_is_forwarded_only_when_configured() -> None:
    async with (
        proxied_target({"backend": {"forward_authorization": True}}) as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        credentials = {"authorization": "Bearer same-resource"}
        session_id = await open_session(http, proxied.url, credentials)
        reply = await http.post(
            proxied.url, json=call(2, "headers", {}), headers=session_headers(session_id, credentials)
        )
        assert (
            final_response(reply, 2)["result"]["structuredContent"]["authorization"] == "Bearer same-resource"
        )


async def test_cors_preflight_for_configured_origins() -> None:
    cors = {"security": {"cors_origins": ["https://app.example"], "allowed_origins": ["https://app.example"]}}
    async with proxied_target(cors) as proxied, httpx.AsyncClient(timeout=DEADLINE) as http:
        preflight = await http.options(
            proxied.url,
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, mcp-session-id",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        session = await http.post(
            proxied.url,
            json=initialize_request(),
            headers={"accept": ACCEPT_BOTH, "origin": "https://app.example"},
        )
        assert "mcp-session-id" in session.headers["access-control-expose-headers"].lower()
        other = await http.options(
            proxied.url, headers={"origin": "https://other.example", "access-control-request-method": "POST"}
        )
        assert "access-control-allow-origin" not in other.headers


async def test_stateless_mode_serves_handshake_clients_without_sessions() -> None:
    async with (
        proxied_target({"sessions": {"stateless": True}}) as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        init = await http.post(proxied.url, json=initialize_request(), headers={"accept": ACCEPT_BOTH})
        assert init.status_code == 200
        assert "mcp-session-id" not in init.headers
        assert init.json()["result"]["serverInfo"]["name"] == "proxy-target"
        headers = {"accept": ACCEPT_BOTH}
        for number in range(2, 5):
            reply = await http.post(
                proxied.url, json=call(number, "echo", {"text": f"n{number}"}), headers=headers
            )
            assert final_response(reply, number)["result"]["content"][0]["text"] == f"n{number}"
        # One shared backend session serves them all.
        assert len(proxied.sidecar.registry.sessions) == 1
        with anyio.fail_after(DEADLINE):
            async with Client(proxied.url, mode="legacy") as client:
                assert text_of(await client.call_tool("echo", {"text": "sdk"})) == "sdk"


class ConnectionCounter:
    """ASGI wrapper recording the client address of every request: one address per TCP connection."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.peers: set[tuple[str, int]] = set()
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.peers.add(tuple(scope["client"]))
            self.requests += 1
        await self.app(scope, receive, send)


async def test_backend_connections_are_reused_across_streamed_answers() -> None:
    # The SDK server answers tools/call on an SSE stream; a link that closed it right after the answer
    # would cost a new TCP connection (and a TIME_WAIT socket) per call.
    counter = ConnectionCounter(build_app())
    async with (
        serve_asgi(counter) as backend,
        sidecar_in_front_of(f"{backend}/mcp") as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        session_id = await open_session(http, proxied.url)
        for n in range(30):
            response = await http.post(
                proxied.url, json=call(10 + n, "echo", {"text": f"n{n}"}), headers=session_headers(session_id)
            )
            assert final_response(response, 10 + n)["result"]["content"][0]["text"] == f"n{n}"
    assert counter.requests >= 32  # initialize, initialized, 30 calls (and the DELETE at the end)
    assert len(counter.peers) <= 3, f"{len(counter.peers)} connections for {counter.requests} requests"


class CookieSetter:
    """ASGI wrapper: every answer that names a session also sets a cookie naming it, as a sticky load
    balancer in front of a backend does."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                session = dict(headers).get(b"mcp-session-id")
                if session:
                    headers.append((b"set-cookie", b"affinity=" + session + b"; Path=/"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def test_a_cookie_the_backend_sets_for_one_session_never_reaches_another() -> None:
    # One connection pool serves every client session, so a pool that kept cookies would hand one
    # client's (an affinity or auth cookie) to the backend on another client's requests.
    async with (
        serve_asgi(CookieSetter(build_app())) as backend,
        sidecar_in_front_of(f"{backend}/mcp") as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        first = await open_session(http, proxied.url)
        second = await open_session(http, proxied.url)
        assert first != second
        for n, session_id in enumerate((first, second)):
            reply = await http.post(
                proxied.url, json=call(20 + n, "headers", {}), headers=session_headers(session_id)
            )
            seen = final_response(reply, 20 + n)["result"]["structuredContent"]
            assert "cookie" not in seen, seen
        body, headers = stateless_call("c-1", "headers", {})
        stateless_reply = await http.post(proxied.url, json=body, headers=headers)
        assert "cookie" not in final_response(stateless_reply, "c-1")["result"]["structuredContent"]
